"""Metrics of the signing roles (signer, CRL builder, purger), which run in one process beside
the primary: counters from the roles themselves, gauges from the database.

The database is read at most every `cache_for` seconds whatever the scrape rate: the queries
are aggregates (src/certstatus/store/monitoring.py), cheap at this project's sizes but not free
at hundreds of millions of rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from certstatus.config import IssuerMaterial
from certstatus.store.base import Priority, Store, StoreError

log = logging.getLogger("certstatus.metrics")


class RolesCollector(Collector):
    def __init__(
        self,
        store: Store,
        materials: Sequence[IssuerMaterial],
        ids: dict[str, int],
        signer: Any = None,
        purger: Any = None,
        crls: Any = None,
        clock: Callable[[], float] = time.time,
        cache_for: float = 5.0,
    ) -> None:
        self.store = store
        self.materials = materials
        self.ids = ids
        self.signer = signer
        self.purger = purger
        self.crls = crls
        self.clock = clock
        self.cache_for = cache_for
        self._cached: list[Metric] = []
        self._cached_at = -1e18
        self._lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        yield from self._process_metrics()
        with self._lock:
            if self.clock() - self._cached_at >= self.cache_for:
                try:
                    self._cached = list(self._database_metrics())
                    self._cached_at = self.clock()
                except StoreError as exc:
                    log.error("metrics: database unavailable: %s", exc)
                    self._cached = [_gauge("certstatus_database_up", "Database answered.", 0)]
            yield from self._cached

    def _process_metrics(self) -> Iterable[Metric]:
        if self.signer is not None:
            yield _counter(
                "certstatus_signer_signatures",
                "OCSP responses signed by this signer (two per certificate, or one for SHA-1 alone).",
                self.signer.signatures,
            )
        yield from self._key_metrics()
        if self.purger is not None:
            delivered = CounterMetricFamily(
                "certstatus_purges_delivered", "Purges confirmed by each cache.", labels=["cache"]
            )
            failures = CounterMetricFamily(
                "certstatus_purge_failures",
                "Purge attempts a cache did not confirm.",
                labels=["cache"],
            )
            for name, health in self.purger.health.items():
                delivered.add_metric([name], health.delivered)
                failures.add_metric([name], health.failures)
            yield delivered
            yield failures
        now = self.clock()
        expiry = GaugeMetricFamily(
            "certstatus_responder_certificate_expiry_seconds",
            "Seconds until each issuer's OCSP responder certificate expires (R21).",
            labels=["issuer"],
        )
        for material in self.materials:
            not_after = material.responder_certificate.not_valid_after_utc.timestamp()
            expiry.add_metric([material.name], not_after - now)
        yield expiry

    def _key_metrics(self) -> Iterable[Metric]:
        """Whether each signing role's keys sign now (0 while a token is away: nothing is
        being signed, and CertstatusSigningKeyUnavailable fires), and outages seen."""
        up = GaugeMetricFamily(
            "certstatus_signing_key_up",
            "1 while the role's keys sign; 0 while a key (token) cannot sign and it retries.",
            labels=["role"],
        )
        failures = CounterMetricFamily(
            "certstatus_signing_key_failures",
            "Times a role's keys stopped signing (token removed, module error, PIN locked).",
            labels=["role"],
        )
        for role, source in (("ocsp", self.signer), ("crl", self.crls)):
            if source is None or (role == "crl" and not source.issuers):
                continue
            up.add_metric([role], 1 if source.key_problem is None else 0)
            failures.add_metric([role], source.key_failures)
        yield up
        yield failures

    def _database_metrics(self) -> Iterable[Metric]:
        now = int(self.clock())
        yield _gauge("certstatus_database_up", "Database answered.", 1)
        due = GaugeMetricFamily(
            "certstatus_signer_due_rows",
            "Certificates waiting to be signed, by kind.",
            labels=["kind"],
        )
        for priority, count in self.store.due_count(now).items():
            due.add_metric([_KIND[priority]], count)
        yield due
        fresh = self.store.freshness(now)
        yield _gauge(
            "certstatus_signer_oldest_due_age_seconds",
            "How long the longest-waiting due certificate has waited (0: none waiting).",
            now - fresh.oldest_due_at if fresh.oldest_due_at is not None else 0,
        )
        if fresh.oldest_this_update is not None:
            yield _gauge(
                "certstatus_signer_oldest_this_update_age_seconds",
                "Age of the oldest thisUpdate among unexpired certificates' responses (R4).",
                now - fresh.oldest_this_update,
            )
            yield _gauge(
                "certstatus_signer_soonest_next_update_seconds",
                "Seconds until the first unexpired certificate's response expires (R4).",
                (fresh.soonest_next_update or now) - now,
            )
        backlog = self.store.purge_backlog()
        purges = GaugeMetricFamily(
            "certstatus_purge_backlog",
            "Purges not delivered everywhere: unready (response not signed yet) or pending.",
            labels=["state"],
        )
        purges.add_metric(["unready"], backlog.unready)
        purges.add_metric(["pending"], backlog.pending)
        yield purges
        yield _gauge(
            "certstatus_purge_oldest_age_seconds",
            "Age of the oldest purge not yet delivered to every cache (0: none).",
            now - backlog.oldest_created_at if backlog.oldest_created_at is not None else 0,
        )
        yield _counter(
            "certstatus_crl_gate_rejections",
            "CRLs the gate refused to publish (F5), recorded in the database.",
            self.store.crl_rejection_count(),
        )
        yield from self._crl_metrics(now)

    def _crl_metrics(self, now: int) -> Iterable[Metric]:
        age = GaugeMetricFamily(
            "certstatus_crl_age_seconds", "Age of each published CRL (since thisUpdate).",
            labels=["issuer", "partition"],
        )  # fmt: skip
        remaining = GaugeMetricFamily(
            "certstatus_crl_next_update_seconds", "Seconds until each CRL's nextUpdate (R16).",
            labels=["issuer", "partition"],
        )  # fmt: skip
        overdue = GaugeMetricFamily(
            "certstatus_crl_reissue_overdue_seconds",
            "Seconds past each CRL's planned reissue (0: not yet due).",
            labels=["issuer", "partition"],
        )
        if self.crls is not None:
            for issuer in self.crls.issuers:
                for partition in self.crls.partitions(issuer):
                    crl = self.store.current_crl(issuer.id, partition)
                    if crl is None:
                        continue
                    labels = [issuer.material.name, str(partition)]
                    age.add_metric(labels, now - crl.this_update)
                    remaining.add_metric(labels, crl.next_update - now)
                    overdue.add_metric(labels, max(0, now - crl.next_build_at))
        yield age
        yield remaining
        yield overdue


_KIND = {Priority.NEW: "new", Priority.REVOKED: "revoked", Priority.REFRESH: "refresh"}


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def serve_metrics(collector: Collector, listen: str) -> Any:
    """Expose collector at http://listen/metrics; returns the server (shutdown() stops it)."""
    registry = CollectorRegistry()
    registry.register(collector)
    host, _, port = listen.rpartition(":")
    try:
        server, _thread = start_http_server(int(port), host.strip("[]"), registry)
    except OSError as exc:
        raise SystemExit(
            f"signing.metrics_listen: cannot listen on {listen}: {exc}; choose a free port"
        ) from None
    return server
