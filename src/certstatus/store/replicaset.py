"""The responder's read side on PostgreSQL: ordered sources, measured staleness, and the primary
as the last resort, so replicas that lag, hang or die can never make a known serial
non-authoritative quietly (F1, the founding incident).

- Every source's staleness is sampled continuously from its replayed heartbeat.
- A replica staler than max_staleness is not used until it recovers.
- A miss on a fresh replica is asked of the primary (bounded concurrency, short timeout)
  before anyone answers "unauthorized": a serial signed on the primary is authoritative from
  that moment, whatever the replicas do.
- With no fresh source and the primary unreachable, hits are still served from the freshest
  replica that answers (a signed response stays valid until its nextUpdate, and nothing newer
  can be written while the primary is down); misses raise NoAuthoritativeSource (tryLater),
  and the node reports not ready so a load balancer drains it.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from certstatus.ocsp.certid import HashAlgorithm
from certstatus.store.base import (
    IssuerRecord,
    NoAuthoritativeSource,
    NotSignedYet,
    StoredCrl,
    StoredResponse,
    StoreError,
)
from certstatus.store.postgres import PostgresStore, ResponseKey

T = TypeVar("T")
K = TypeVar("K")
R = TypeVar("R")
# one source's answers to a batch of keys, in their order (None: not there)
Read = Callable[[PostgresStore, list[K]], list[R | None]]
log = logging.getLogger("certstatus.sources")


@dataclass
class Source:
    name: str
    role: str  # "primary" or "replica"
    site: str | None
    store: PostgresStore
    staleness: float | None = None  # seconds; None while unreachable
    answers: int = 0
    drained: frozenset[str] = frozenset()  # the sites drained, as this source has them

    def describe(self, max_staleness: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "site": self.site,
            "staleness_s": None
            if self.staleness is None or math.isinf(self.staleness)
            else round(self.staleness, 3),
            "fresh": self.fresh(max_staleness),
            "answers": self.answers,
        }

    def fresh(self, max_staleness: float) -> bool:
        return self.staleness is not None and self.staleness <= max_staleness


@dataclass
class ReplicaSet:
    primary: Source
    replicas: list[Source]
    max_staleness: float = 5.0
    fallback: bool = True
    fallback_concurrency: int = 4
    fallback_wait: float = 0.5
    sample_interval: float = 0.1
    _slots: threading.BoundedSemaphore = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event)
    fallbacks: int = 0
    observer: Any = None  # responder/metrics.py's ResponderMetrics, told of samples and fallbacks
    site: str | None = None  # this responder's site: drained when the operator drains it

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.fallback_concurrency)

    # sampling -----------------------------------------------------------------------------

    def start(self) -> None:
        for source in [self.primary, *self.replicas]:
            threading.Thread(
                target=self._sample_forever,
                args=(source,),
                daemon=True,
                name=f"staleness-{source.name}",
            ).start()

    def stop(self) -> None:
        self._stop.set()

    def _sample_forever(self, source: Source) -> None:
        while not self._stop.is_set():
            try:
                self.sample(source)
            except Exception:  # a dead sampler would freeze the last reading, maybe "fresh"
                source.staleness = None
                log.exception("sampling %s failed", source.name)
            if self.observer is not None:
                self.observer.sampled(source, source.fresh(self.max_staleness), self.ready)
            self._stop.wait(self.sample_interval)

    def sample(self, source: Source) -> None:
        """A replica's staleness is its heartbeat's age. The primary is the truth: reachable
        means staleness 0 (its own heartbeat age tells whether the writer lives)."""
        try:
            age, source.drained = source.store.sample_state()
            if source.role == "primary":
                source.staleness = 0.0
            else:  # a replica that never replayed a heartbeat is reachable but not fresh
                source.staleness = math.inf if age is None else age
        except StoreError:
            source.staleness = None

    # reading ------------------------------------------------------------------------------

    def fresh_replicas(self) -> list[Source]:
        return [r for r in self.replicas if r.fresh(self.max_staleness)]

    @property
    def ready(self) -> bool:
        """True while some source can answer authoritatively and the site is not drained."""
        return self.not_ready() is None

    def not_ready(self) -> str | None:
        """Why this node should be drained (no source can answer authoritatively, or the
        operator drained its site), or None."""
        primary_ok = self.fallback and self.primary.staleness is not None
        fresh = self.fresh_replicas()
        if not (primary_ok or fresh):
            return (
                f"no fresh source: every replica is staler than {self.max_staleness}s "
                "and the primary is not usable"
            )
        # the drain as the source answers would be read from has it: fresh, so at most
        # max_staleness behind the primary
        view = fresh[0] if fresh else self.primary
        if self.site is not None and self.site in view.drained:
            return (
                f"site {self.site} drained by the operator (`certstatus site restore {self.site}`)"
            )
        return None

    def _settle(
        self,
        keys: Sequence[K],
        read: Read[K, R],
        recorded: Callable[[PostgresStore, list[K]], list[bool]] | None = None,
    ) -> list[R | NoAuthoritativeSource | None]:
        """The replica rules, written once for every read (a single lookup is a batch of one),
        one round trip per source asked:

        1. the first fresh replica that answers; its misses go on, since
        2. the primary may hold them already (bounded concurrency: a busy fallback refuses
           the rest rather than queueing behind a slow primary);
        3. with no authoritative source, hits from the freshest reachable replica (degraded);
        4. what is still unanswered gets a NoAuthoritativeSource in its place (tryLater).

        A source that fails is marked unreachable until it is sampled again."""
        results: list[R | NoAuthoritativeSource | None] = [None] * len(keys)
        todo = list(range(len(keys)))

        def ask(source: Source) -> bool:
            nonlocal todo
            try:
                found = read(source.store, [keys[i] for i in todo])
            except StoreError:
                source.staleness = None
                return False
            source.answers += len(found) - found.count(None)
            for i, result in zip(todo, found, strict=True):
                results[i] = result
            todo = [i for i in todo if results[i] is None]
            return True

        for source in self.fresh_replicas():
            if ask(source):
                break
        if todo and self.fallback and self.primary.staleness is not None:
            if not self._slots.acquire(timeout=self.fallback_wait):
                busy = NoAuthoritativeSource("primary fallback busy")
                for i in todo:
                    results[i] = busy
                return results
            try:
                self.fallbacks += len(todo)
                if self.observer is not None:
                    for _ in todo:
                        self.observer.fallback()
                if ask(self.primary):
                    if todo and recorded is not None:
                        self._unsigned_yet(keys, todo, results, recorded)
                    return results  # authoritative: what the primary lacks is not signed
            finally:
                self._slots.release()
        if todo:
            reachable = sorted(
                (r for r in self.replicas if r.staleness is not None),
                key=lambda r: r.staleness or 0.0,
            )
            for source in reachable:
                if not todo:
                    break
                ask(source)
            refused = NoAuthoritativeSource("no fresh source, and the primary cannot be asked")
            for i in todo:
                results[i] = refused
        return results

    def _unsigned_yet(
        self,
        keys: Sequence[K],
        todo: list[int],
        results: list[Any],
        recorded: Callable[[PostgresStore, list[K]], list[bool]],
    ) -> None:
        """Misses on the primary whose certificate is recorded there get tryLater, not
        "unauthorized": recorded but not signed yet, above all after a failover, which may lose
        a signed response (signatures are acknowledged asynchronously) but never an
        acknowledged certificate (R26). Only a serial the primary has never heard of is
        unauthorized; if the primary cannot tell, tryLater too."""
        pending: NoAuthoritativeSource = NotSignedYet("recorded, not signed yet")
        try:
            known = recorded(self.primary.store, [keys[i] for i in todo])
        except StoreError:
            known = [True] * len(todo)
            pending = NoAuthoritativeSource("a miss the primary cannot confirm now")
        for i, is_known in zip(todo, known, strict=True):
            if is_known:
                results[i] = pending

    def responses(
        self, keys: Sequence[ResponseKey]
    ) -> list[StoredResponse | NoAuthoritativeSource | None]:
        """Many lookups under the rules; a NoAuthoritativeSource where none could answer."""
        return self._settle(keys, PostgresStore.responses, PostgresStore.recorded)

    def response(
        self, issuer_id: int, serial: int, algorithm: HashAlgorithm = HashAlgorithm.SHA1
    ) -> StoredResponse | None:
        """One lookup: a batch of one. Raises NoAuthoritativeSource (tryLater)."""
        return _one(self.responses([(issuer_id, serial, algorithm)]))

    def current_crl(self, issuer_id: int, crl_partition: int) -> StoredCrl | None:
        """A published CRL, under the same rules as a response."""
        return _one(
            self._settle(
                [(issuer_id, crl_partition)],
                lambda store, keys: [store.current_crl(*key) for key in keys],
            )
        )

    def issuers(self) -> list[IssuerRecord]:
        """Issuer ids come from the primary when it answers: a replica still replaying its first
        seconds may not know an issuer registered just now."""
        try:
            return self.primary.store.issuers()
        except StoreError:
            self.primary.staleness = None
            found = _one(self._settle([None], lambda store, _: [store.issuers()]))
            return [] if found is None else found

    # the event loop's first step (store/pgloop.py) ------------------------------------------

    def loop_source(self) -> Source | None:
        """The source a batch is asked of first, by the event loop: the first fresh replica,
        exactly where _settle starts; None when there is none."""
        for replica in self.replicas:
            if replica.fresh(self.max_staleness):
                return replica
        return None

    async def read_on_loop(self, keys: list[ResponseKey]) -> list[StoredResponse | None] | None:
        """Rule 1 from the event loop, on the first fresh replica's own connection: its hits
        are final. None when it cannot be asked there (none fresh, the connection not open or
        busy, a failure): then the lookup thread applies every rule to the whole batch."""
        source = self.loop_source()
        if source is None:
            return None
        reader = source.store.loop_reader
        if not reader.ready:
            return None
        try:
            found = await reader.responses(keys)
        except StoreError:
            return None  # the thread asks again and marks the source as the rules say
        source.answers += len(found) - found.count(None)
        return found

    def open_loop_connection(self) -> None:
        """From the lookup thread: the loop's connection to its first source, if not open."""
        source = self.loop_source()
        if source is not None and not source.store.loop_reader.ready:
            source.store.loop_reader.connect()

    def sources(self) -> list[dict[str, Any]]:
        return [s.describe(self.max_staleness) for s in [self.primary, *self.replicas]]

    def close(self) -> None:
        self.stop()
        for source in [self.primary, *self.replicas]:
            source.store.close()


def _one(results: list[T | NoAuthoritativeSource | None]) -> T | None:
    """The answer of a batch of one, raising the refusal in its place."""
    [result] = results
    if isinstance(result, NoAuthoritativeSource):
        raise result
    return result
