"""The responder's read side: one interface, ResponseSource, and its two implementations.

- EmbeddedSource: one local SQLite file. A read costs microseconds, so it is made in place on
  the event loop; a thread hop would cost more than it saves.
- ReplicaSource: PostgreSQL replicas with the primary as the last resort. The replica rules
  (fresh replica -> bounded primary fallback -> degraded hits -> tryLater) are written once,
  in store/replicaset.py; requests that arrive together share one batch (responder/lookup.py),
  whose first step is read from the event loop on the replica's own connection
  (store/pgloop.py), the rest on the lookup thread (store/pglookup.py).

The app (responder/app.py) knows only ResponseSource; open_response_source picks one from a
Config. A StoreError from a lookup means "no authoritative answer now": the app answers
tryLater, uncacheable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from certstatus.config import Config
from certstatus.ocsp.certid import HashAlgorithm
from certstatus.responder.lookup import BatchedLookup, Key
from certstatus.store.base import (
    IssuerRecord,
    NotSignedYet,
    ResponseReads,
    Sha256Requests,
    StoredCrl,
    StoredResponse,
    StoreError,
)

if TYPE_CHECKING:
    from certstatus.responder.metrics import ResponderMetrics
    from certstatus.store.replicaset import ReplicaSet

Lookup = Callable[[int, int, HashAlgorithm], Coroutine[Any, Any, StoredResponse | None]]


class ResponseSource(Protocol):
    """Where a responder reads what it serves."""

    async def response(
        self, issuer_id: int, serial: int, algorithm: HashAlgorithm
    ) -> StoredResponse | None:
        """One request's lookup (a source may batch it with others in flight); None when no
        response is signed; StoreError when no source can answer authoritatively."""
        ...

    async def crl(self, issuer_id: int, crl_partition: int) -> StoredCrl | None:
        """The published CRL of a partition; StoreError when it cannot be read."""
        ...

    def ready(self) -> str | None:
        """None while this node can answer authoritatively, else why it should be drained."""
        ...

    def want_sha256(self, issuer_id: int, serial: int, now: int) -> bool:
        """Ask the signers for a SHA-256 response signed only on request (blocking: called
        off the event loop, responder/sha256asks.py); StoreError if the ask cannot be written."""
        ...

    def describe(self) -> list[dict[str, Any]]:
        """Each database this source reads and its state, for /sources (operators, drills)."""
        ...

    def issuers(self) -> list[IssuerRecord]:
        """The issuers recorded in the database (at startup, to index the configured ones)."""
        ...

    def report_to(self, metrics: ResponderMetrics) -> None:
        """Keep the readiness and source metrics up to date from now on."""
        ...

    def close(self) -> None: ...


class EmbeddedReads(ResponseReads, Protocol):
    def issuers(self) -> list[IssuerRecord]: ...

    def recorded(self, keys: Sequence[Key]) -> list[bool]: ...

    def ping(self) -> None: ...

    def drained_sites(self) -> dict[str, tuple[int, str]]: ...

    def want_sha256(self, issuer_id: int, serial: int, now: int) -> bool: ...

    def close(self) -> None: ...


class EmbeddedSource:
    """One in-process database (SQLite): every read is made in place."""

    def __init__(self, store: EmbeddedReads, site: str | None = None) -> None:
        self.store = store
        self.site = site

    async def response(
        self, issuer_id: int, serial: int, algorithm: HashAlgorithm
    ) -> StoredResponse | None:
        return self._read(issuer_id, serial, algorithm)

    def _read(self, issuer_id: int, serial: int, algorithm: HashAlgorithm) -> StoredResponse | None:
        """A miss is "unauthorized" only for a serial the database has never recorded: one
        recorded but not signed yet (the signer has not run, or is down) is tryLater, as on a
        replica set (F1). The second read is paid by misses alone."""
        stored = self.store.response(issuer_id, serial, algorithm)
        if stored is None and self.store.recorded([(issuer_id, serial, algorithm)])[0]:
            raise NotSignedYet("recorded, not signed yet")
        return stored

    async def crl(self, issuer_id: int, crl_partition: int) -> StoredCrl | None:
        return self.store.current_crl(issuer_id, crl_partition)

    def want_sha256(self, issuer_id: int, serial: int, now: int) -> bool:
        return self.store.want_sha256(issuer_id, serial, now)

    def ready(self) -> str | None:
        try:
            if self.site is None:  # no site to be drained: readiness is the database answering
                self.store.ping()
                return None
            drained = self.store.drained_sites()
        except StoreError as exc:
            return str(exc)
        if self.site is not None and self.site in drained:
            return (
                f"site {self.site} drained by the operator (`certstatus site restore {self.site}`)"
            )
        return None

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": "local", "role": "embedded", "site": None, "fresh": not self.ready()}]

    def issuers(self) -> list[IssuerRecord]:
        return self.store.issuers()

    def report_to(self, metrics: ResponderMetrics) -> None:
        metrics.ready(True)  # one local database: ready while it answers

    def close(self) -> None:
        self.store.close()


class ReplicaSource:
    """A replica set behind a batching lookup: the rules in ReplicaSet, the batching in
    BatchedLookup, the event loop's first step in ReplicaSet.read_on_loop."""

    response: Lookup  # the batching lookup's own method: no extra call per request

    def __init__(
        self,
        replicas: ReplicaSet,
        lookup: BatchedLookup | None = None,
        asks: Sha256Requests | None = None,
    ) -> None:
        """asks: where SHA-256 asks are written (the primary, on a connection of their own,
        so they never take one the primary fallback needs); default the primary's store."""
        self.replicas = replicas
        self.lookup = lookup or BatchedLookup(replicas, on_loop=replicas)
        self.response = self.lookup.response
        self.asks = asks

    async def crl(self, issuer_id: int, crl_partition: int) -> StoredCrl | None:
        """Read off the event loop: a replica that hangs must not stall every other request of
        the worker for the store's timeout. CRL requests are rare (a CDN keeps them until their
        planned successor), so the default executor does."""
        return await asyncio.to_thread(self.replicas.current_crl, issuer_id, crl_partition)

    def ready(self) -> str | None:
        return self.replicas.not_ready()

    def want_sha256(self, issuer_id: int, serial: int, now: int) -> bool:
        """On the primary: the one database signers claim from (a replica takes no write)."""
        return (self.asks or self.replicas.primary.store).want_sha256(issuer_id, serial, now)

    def describe(self) -> list[dict[str, Any]]:
        return self.replicas.sources()

    def issuers(self) -> list[IssuerRecord]:
        return self.replicas.issuers()

    def report_to(self, metrics: ResponderMetrics) -> None:
        self.replicas.observer = metrics

    def close(self) -> None:
        self.lookup.close()
        self.replicas.close()
        if self.asks is not None:
            self.asks.close()


def open_response_source(config: Config) -> ResponseSource:
    """The responder's read side for a deployment: the SQLite file, or PostgreSQL replicas
    (this site's first) with the primary as the last resort, sampled from now on."""
    if not config.is_postgres:
        from certstatus.store import sqlite_path
        from certstatus.store.sqlite import SqliteStore

        store = SqliteStore(sqlite_path(config.database, config.base_dir))
        return EmbeddedSource(store, config.responder.site)
    from certstatus.store.postgres import PostgresStore
    from certstatus.store.replicaset import ReplicaSet, Source

    r = config.responder
    timeout = 1.0  # a hung database must not hold a request for long
    primary = Source(
        "primary",
        "primary",
        None,
        PostgresStore(
            config.database,
            read_only=True,
            timeout=timeout,
            max_connections=r.fallback_concurrency + 1,
            name="primary",
        ),
    )
    ordered = sorted(config.replicas, key=lambda rep: rep.site != r.site)  # this site first
    replicas = [
        Source(
            rep.name,
            "replica",
            rep.site,
            PostgresStore(
                rep.url, read_only=True, timeout=timeout, max_connections=4, name=rep.name
            ),
        )
        for rep in ordered
    ]
    replica_set = ReplicaSet(
        primary, replicas, r.max_staleness, r.primary_fallback, r.fallback_concurrency, site=r.site
    )
    for source in [primary, *replicas]:
        replica_set.sample(source)
    replica_set.start()
    asks = PostgresStore(
        config.database, read_only=True, timeout=timeout, max_connections=1, name="primary"
    )  # connects on the first ask
    return ReplicaSource(replica_set, asks=asks)
