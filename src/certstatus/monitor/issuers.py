"""Which configured issuers the monitor can watch, found again on every pass.

Services start in parallel (systemd, containers): a monitor often starts before `serve` or the
first `add` has registered an issuer in the database. Reading the issuers once at start-up left
such a monitor watching nothing for good, with one log line to show for it. The book asks the
database again until every configured issuer is there, and an issuer it still cannot watch is
a finding, so a blind monitor is never quiet about it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certstatus.crl.layout import CrlLayout
from certstatus.monitor.crls import WatchedIssuer
from certstatus.monitor.findings import CRITICAL, WARNING, Findings
from certstatus.ocsp.certid import HashAlgorithm, IssuerKey, issuer_keys
from certstatus.store.base import IssuerRecord, StoreError

log = logging.getLogger("certstatus.monitor")

KINDS = {"IssuerNotWatched"}


@dataclass(frozen=True)
class ConfiguredIssuer:
    """What the monitor's configuration says about an issuer: public material only."""

    name: str
    certificate: x509.Certificate
    crl: CrlLayout | None = None

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(Encoding.DER)


class IssuerBook:
    """Configured issuers matched to their database ids. `certificates`, `keys` and
    `crl_issuers` only grow; readers on other threads see whole entries (each is set once)."""

    def __init__(
        self,
        configured: Sequence[ConfiguredIssuer],
        findings: Findings,
        grace: float,
        critical_after: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.configured = list(configured)
        self.findings = findings
        self.grace = grace
        self.critical_after = critical_after
        self.clock = clock
        self.started = clock()
        self.certificates: dict[int, x509.Certificate] = {}
        self.keys: dict[int, dict[HashAlgorithm, IssuerKey]] = {}
        self.crl_issuers: list[WatchedIssuer] = []
        self.missing_since: dict[str, float] = {c.name: self.started for c in self.configured}
        self.problems: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def complete(self) -> bool:
        return not self.missing_since

    def refresh(self, recorded: Callable[[], list[IssuerRecord]]) -> list[str]:
        """Match configured issuers not yet watched against the database's; returns the names
        that were added. `recorded` reads the database only while something is missing."""
        added: list[str] = []
        with self._lock:
            if self.missing_since:
                try:
                    by_name = {r.name: r for r in recorded()}
                except StoreError:
                    for name in self.missing_since:  # a database that never answers is no excuse
                        self.problems[name] = "cannot be looked up: the database does not answer"
                    self._raise_findings()
                    raise
                for issuer in self.configured:
                    if issuer.name not in self.missing_since:
                        continue
                    record = by_name.get(issuer.name)
                    if record is None:
                        self.problems[issuer.name] = "is not in the database yet"
                    elif record.certificate_der != issuer.der:
                        self.problems[issuer.name] = (
                            "is in the database with another certificate than the monitor's "
                            "configuration names; fix the monitor's issuers.certificate"
                        )
                    else:
                        self._watch(record.id, issuer)
                        added.append(issuer.name)
            self._raise_findings()
        for name in added:
            log.info("issuer %s found in the database; watching it", name)
        return added

    def _watch(self, issuer_id: int, issuer: ConfiguredIssuer) -> None:
        self.keys[issuer_id] = issuer_keys(issuer.certificate)
        self.certificates[issuer_id] = issuer.certificate
        if issuer.crl is not None:
            self.crl_issuers.append(
                WatchedIssuer(issuer_id, issuer.name, issuer.certificate, issuer.crl)
            )
        del self.missing_since[issuer.name]
        self.problems.pop(issuer.name, None)

    def _raise_findings(self) -> None:
        """Within the start-up grace a missing issuer is only starting; then a warning; once it
        has been missing for critical_after, critical: its certificates are not watched."""
        now = self.clock()
        raised = []
        for name, since in self.missing_since.items():
            missing_for = now - since
            if missing_for < self.grace:
                continue
            problem = self.problems.get(name, "is not in the database yet")
            severity = CRITICAL if missing_for >= self.critical_after else WARNING
            raised.append(
                (
                    "IssuerNotWatched",
                    name,
                    severity,
                    f"issuer {name} {problem}: its new serials and CRLs are not watched "
                    f"({missing_for:.0f}s since the monitor started)",
                )
            )
        self.findings.observe(KINDS, raised)

    def unwatched(self) -> list[dict[str, object]]:
        """For the status page: each configured issuer not watched, and why."""
        with self._lock:
            return [
                {"name": name, "problem": self.problems.get(name, "is not in the database yet")}
                for name in self.missing_since
            ]
