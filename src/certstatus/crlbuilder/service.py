"""Building, gating and publishing CRLs for every issuer and partition.

Numbers come from the database (reserved in their own transaction), so several builders on
several hosts never reuse one, and a restart continues the sequence (R17). A CRL is published
only if the gate passes and its number is above the published one; otherwise the previous CRL
stays and the rejection is logged and recorded (F5).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from certstatus.config import IssuerMaterial
from certstatus.crl.builder import CrlSigner
from certstatus.crl.gate import GateInput, Rejection, check
from certstatus.crl.layout import CrlLayout
from certstatus.crl.schedule import CrlPolicy, due_reason
from certstatus.keys.base import KeyUnavailableError
from certstatus.status import RevokedEntry
from certstatus.store.base import CertificateReads, CrlState, ResponseReads, StoredCrl

log = logging.getLogger("certstatus.crl")


class CrlBuilderStore(CrlState, CertificateReads, ResponseReads, Protocol):
    """The CRL role's storage: its CRL state, and for the agreement check (F6, agreement.py)
    the certificates and stored OCSP responses the CRLs are compared with."""

    def close(self) -> None:
        """A one-shot command closes the store its service was given."""


@dataclass(frozen=True)
class BuildResult:
    issuer: str
    crl_partition: int
    number: int
    published: bool
    entries: int
    reason: str
    rejections: tuple[Rejection, ...] = ()


class _Counted:
    """The store's stream of entries, counted as the signer consumes it (the CRL's size
    without a list of its entries)."""

    def __init__(self, entries: Iterator[RevokedEntry]) -> None:
        self._entries = entries
        self.count = 0

    def __iter__(self) -> Iterator[RevokedEntry]:
        for entry in self._entries:
            self.count += 1
            yield entry

    def close(self) -> None:
        close = getattr(self._entries, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True)
class _Issuer:
    id: int
    material: IssuerMaterial
    layout: CrlLayout
    signer: CrlSigner


class CrlService:
    def __init__(
        self,
        store: CrlBuilderStore,
        issuers: Sequence[tuple[int, IssuerMaterial]],
        policy: CrlPolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self._random = random.Random()
        self.key_problem: str | None = None  # why the issuer key cannot sign now
        self.key_failures = 0
        self.probe_every = 60.0
        self.issuers = [
            _Issuer(issuer_id, m, m.crl, CrlSigner(m.certificate, m.issuer_key))
            for issuer_id, m in issuers
            if m.crl is not None and m.issuer_key is not None
        ]

    def partitions(self, issuer: _Issuer) -> list[int]:
        return issuer.layout.published(self.store.crl_partitions_in_use(issuer.id))

    def idp_url(self, issuer: _Issuer, partition: int, partitions: list[int]) -> str | None:
        """A single full CRL carries no IDP; partitions name their own URL (R19)."""
        return None if partitions == [0] else issuer.layout.url(partition)

    def due(self, now: int) -> list[tuple[_Issuer, int, str]]:
        found = []
        for issuer in self.issuers:
            dirty = self.store.crl_dirty_since(issuer.id)
            for partition in self.partitions(issuer):
                current = self.store.current_crl(issuer.id, partition)
                reason = due_reason(
                    now,
                    self.policy,
                    current.next_build_at if current else None,
                    current.next_update if current else None,
                    dirty.get(partition),
                )
                if reason is not None:
                    found.append((issuer, partition, reason))
        return found

    def build_due(self, force: bool = False) -> list[BuildResult]:
        now = int(self.clock())
        if force:
            work = [(i, p, "requested") for i in self.issuers for p in self.partitions(i)]
        else:
            work = self.due(now)
        return [self.build(issuer, partition, reason) for issuer, partition, reason in work]

    def build(
        self, issuer: _Issuer, partition: int, reason: str, sign: Callable[..., bytes] | None = None
    ) -> BuildResult:
        """Build one CRL, gate it, publish it. `sign` replaces the signer (tests build bad CRLs)."""
        number = self.store.reserve_crl_number(issuer.id, partition)
        snapshot = int(self.clock())
        this_update = snapshot
        next_update = this_update + self.policy.validity
        cutoff = self.policy.r18_cutoff(this_update)
        entries = _Counted(self.store.revoked_entries_by_serial(issuer.id, partition, cutoff))
        idp = self.idp_url(issuer, partition, self.partitions(issuer))
        try:
            der = (sign or issuer.signer.sign)(entries, number, this_update, next_update, idp)
        finally:
            entries.close()  # a signer that failed midway leaves no read open
        previous = self.store.current_crl(issuer.id, partition)
        if previous is not None and previous.number > number and previous.this_update >= snapshot:
            # numbers are reserved in order: a builder that reserved after this one has
            # published meanwhile (a CRL at least as recent). Nothing is wrong with this one,
            # it is only late; the gate would refuse its number, and a refusal is what alerts
            # (CertstatusCrlGateRejected). An older CRL with a higher number (a number
            # counter gone back) still goes to the gate and is refused.
            log.info(
                "CRL %s/%d #%d superseded by #%d from another builder",
                issuer.material.name,
                partition,
                number,
                previous.number,
            )
            return BuildResult(
                issuer.material.name, partition, number, False, entries.count, reason
            )

        def still_required(serials: Sequence[int]) -> list[int]:
            return self._still_required(issuer.id, serials, cutoff)

        gate = GateInput(
            issuer.material.certificate,
            idp,
            previous.number if previous else None,
            previous.der if previous else None,
            self.store.revoked_serials_recorded_before(
                issuer.id, partition, snapshot - self.policy.debounce, cutoff
            ),
            still_required,
        )
        problems = check(der, gate)
        del previous, gate  # the previous CRL's DER (50 MB for a million entries) is done with
        result = BuildResult(
            issuer.material.name, partition, number, False, entries.count, reason, tuple(problems)
        )
        if problems:
            for problem in problems:
                log.error(
                    "CRL %s/%d #%d not published: %s: %s",
                    issuer.material.name,
                    partition,
                    number,
                    problem.code,
                    problem.message,
                )
                self.store.record_crl_rejection(
                    issuer.id, partition, number, problem.code, problem.message, snapshot
                )
            return result
        stored = StoredCrl(
            issuer.id,
            partition,
            number,
            this_update,
            next_update,
            self.policy.next_build_at(this_update, self._random.random()),
            entries.count,
            der,
        )
        if not self.store.publish_crl(stored, snapshot):
            log.info(
                "CRL %s/%d #%d superseded by a newer one from another builder",
                issuer.material.name,
                partition,
                number,
            )
            return result
        return BuildResult(issuer.material.name, partition, number, True, entries.count, reason)

    def _still_required(self, issuer_id: int, serials: Sequence[int], cutoff: int) -> list[int]:
        """Of entries of the previous CRL that the new build leaves out, those R18 still
        requires: all but those whose certificate expired before the cutoff. A serial the
        database cannot date is kept (fail safe)."""
        not_after = self.store.not_after_of(issuer_id, set(serials))
        return [s for s in serials if not_after.get(s, cutoff) >= cutoff]

    def probe(self) -> None:
        """KeyUnavailableError unless every issuer key signs now."""
        for issuer in self.issuers:
            assert issuer.material.issuer_key is not None  # only such issuers are built
            issuer.material.issuer_key.sign(b"certstatus key probe")

    def run(self, stop: threading.Event, interval: float = 5.0) -> None:
        """Build whatever is due every few seconds until stop is set. While the issuer key
        cannot sign (its token gone), nothing is published: the outage is logged once, shown
        in key_problem (certstatus_signing_key_up{role="crl"}), and retried with backoff."""
        backoff = 0.0
        probed = self.clock()
        while not stop.is_set():
            try:
                if not self.build_due() and (
                    self.key_problem is not None or self.clock() - probed >= self.probe_every
                ):
                    # nothing was due: sign a throwaway message so a token that went away
                    # is known (and alerted on) before a CRL falls due, not when it does
                    probed = self.clock()
                    self.probe()
            except KeyUnavailableError as exc:
                if self.key_problem is None:
                    self.key_failures += 1
                    log.error("CRL signing stopped: %s; retrying with backoff", exc)
                self.key_problem = str(exc)
                backoff = min(max(interval, backoff * 2), 60.0)
                stop.wait(backoff)
                continue
            except Exception:
                log.exception("CRL pass failed; retrying")
            else:
                if self.key_problem is not None:
                    log.warning("CRL signing resumed (was: %s)", self.key_problem)
                    self.key_problem = None
                    backoff = 0.0
            stop.wait(interval)
