"""CRLs from outside: fetch each published CRL URL, check it as a relying party would, and
compare it with the database and the OCSP responses (F6)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from certstatus.crl.agreement import Revocation, disagreements
from certstatus.crl.layout import CrlLayout
from certstatus.crlbuilder.agreement import crl_says, ocsp_says
from certstatus.monitor import metrics as m
from certstatus.monitor.findings import CRITICAL, WARNING, Findings
from certstatus.monitor.targets import fetch
from certstatus.store.base import CertificateReads, CrlReads, ResponseReads


class CrlWatchReads(CrlReads, CertificateReads, ResponseReads, Protocol):
    """What comparing a fetched CRL with the database and the OCSP responses reads."""


@dataclass
class CrlState:
    url: str
    ok: bool
    number: int | None
    this_update: int | None
    next_update: int | None
    problems: list[str]


@dataclass(frozen=True)
class WatchedIssuer:
    id: int
    name: str
    certificate: x509.Certificate
    layout: CrlLayout


class CrlWatch:
    def __init__(
        self,
        store: CrlWatchReads,
        issuers: Sequence[WatchedIssuer],
        findings: Findings,
        reissue_period: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.issuers = issuers  # grows as issuers are registered (monitor/issuers.py)
        self.findings = findings
        self.reissue_period = reissue_period
        self.clock = clock
        self.numbers: dict[str, int] = {}
        self.states: dict[str, CrlState] = {}

    def check(self) -> None:
        raised: list[tuple[str, str, str, str]] = []
        agreement = 0
        for issuer in self.issuers:
            for partition in issuer.layout.published(self.store.crl_partitions_in_use(issuer.id)):
                url = issuer.layout.url(partition)
                state, crl = self._fetch(issuer, url)
                self.states[url] = state
                m.CRL_OK.labels(url).set(1 if state.ok else 0)
                if state.next_update is not None:
                    m.CRL_REMAINING.labels(url).set(state.next_update - self.clock())
                if state.problems:
                    severity = CRITICAL if state.next_update is None else WARNING
                    raised.append(("CrlProblem", url, severity, "; ".join(state.problems)))
                if crl is not None:
                    found = self._agreement(issuer, partition, crl)
                    agreement += len(found)
                    if found:
                        raised.append(
                            ("Disagreement", url, CRITICAL, f"{len(found)}: {found[0]} (F6)")
                        )
        m.AGREEMENT.set(agreement)
        self.findings.observe({"CrlProblem", "Disagreement"}, raised)

    def _fetch(
        self, issuer: WatchedIssuer, url: str
    ) -> tuple[CrlState, x509.CertificateRevocationList | None]:
        fetched = fetch(url, timeout=10)
        if fetched.status != 200:
            return CrlState(
                url, False, None, None, None, [f"HTTP {fetched.status or 'failed'}"]
            ), None
        try:
            crl = x509.load_der_x509_crl(fetched.body)
        except ValueError as exc:
            return CrlState(url, False, None, None, None, [f"not a DER CRL: {exc}"]), None
        now = self.clock()
        problems = []
        if not crl.is_signature_valid(issuer.certificate.public_key()):  # type: ignore[arg-type]
            problems.append("signature does not verify with the issuer's key")
        if crl.issuer.public_bytes() != issuer.certificate.subject.public_bytes():
            problems.append("issuer name differs from the issuer certificate")
        this_update = int(crl.last_update_utc.timestamp())
        next_update = int(crl.next_update_utc.timestamp()) if crl.next_update_utc else None
        if next_update is None or next_update <= now:
            problems.append("expired: nextUpdate has passed (R16)")
        if now - this_update > self.reissue_period + 3600:
            problems.append(f"not reissued for {(now - this_update) / 3600:.1f} h (R16)")
        try:
            number: int | None = crl.extensions.get_extension_for_class(
                x509.CRLNumber
            ).value.crl_number
        except x509.ExtensionNotFound:
            number = None
            problems.append("no CRLNumber extension (R17)")
        previous = self.numbers.get(url)
        if number is not None:
            if previous is not None and number < previous:
                problems.append(f"CRLNumber went back from {previous} to {number} (R17)")
            self.numbers[url] = max(number, previous or 0)
        state = CrlState(url, not problems, number, this_update, next_update, problems)
        return state, crl

    def _agreement(
        self, issuer: WatchedIssuer, partition: int, crl: x509.CertificateRevocationList
    ) -> list[str]:
        """Only what the fetched CRL must already show: revocations recorded before its
        thisUpdate (later ones wait for the next issue, within the debounce window)."""
        now = int(self.clock())
        this_update = int(crl.last_update_utc.timestamp())
        settled = self.store.revoked_recorded_before(issuer.id, partition, this_update, now)
        entries = self.store.revoked_entries(issuer.id, partition, 0)
        ever = {e.serial for e in entries}
        recorded = {
            e.serial: Revocation(e.revoked_at, e.reason) for e in entries if e.serial in settled
        }
        listed = crl_says(crl)
        said: dict[int, Revocation | None] = {}
        for serial, truth in recorded.items():
            row = self.store.certificate(issuer.id, serial)
            if row is not None and row.due_at is not None and row.due_at <= now:
                said[serial] = truth  # being re-signed: not a disagreement yet
            else:
                said[serial] = ocsp_says(self.store, issuer.id, serial)
        return disagreements(recorded, said, listed, ever)

    def snapshot(self) -> list[dict[str, object]]:
        return [vars(state) for state in self.states.values()]
