"""The ingest library API behind `certstatus add` and `certstatus revoke`.

Everything is checked before anything is committed: a batch with one bad file writes nothing
(on PostgreSQL, `add` writes checked chunks inside the batch's transaction meanwhile).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certstatus.config import IssuerCertificates
from certstatus.ingest.check import (
    POOL_THRESHOLD,
    Checker,
    IngestError,
    IssuerCheck,
    certificate_ders,
)
from certstatus.ocsp.reasons import parse_reason
from certstatus.store.base import (
    AddResult,
    AuditContext,
    BatchRefused,
    CertificateRow,
    IngestStore,
    RevocationRequest,
    RevokeOutcome,
)

CLOCK_SKEW = 60
SMALL_PEM = 700  # bytes of a small certificate in PEM (a P-256 leaf is ~770)


def read_certificate_file(path: Path) -> list[x509.Certificate]:
    """All certificates in a PEM file (one or more blocks) or a single DER certificate.

    Refused with one plain line naming the file: an empty file, or one that holds no
    certificate, must not surface the parser's internal error text to an operator."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"{path}: cannot read: {exc.strerror or exc}; nothing recorded") from None
    if not data.strip():
        raise IngestError(f"{path}: is empty; expected a PEM or DER certificate; nothing recorded")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except (ValueError, x509.InvalidVersion):  # InvalidVersion is not a ValueError
        raise IngestError(f"{path}: not a PEM or DER certificate; nothing recorded") from None


@dataclass(frozen=True)
class Revocation:
    """One revocation as asked (by the API, a `revoke --from` file, the command line), before
    it is checked; source names it in an error ("line 7", "item 3")."""

    issuer: str
    serial: int
    reason: str | int
    time: int | None = None
    source: str = ""


def operator_actor() -> str:
    """`cli:<user>`: who ran a command, for the audit log. The account of the process's uid,
    not $USER or $LOGNAME, which the person being audited sets (else the uid itself)."""
    uid = os.getuid()
    try:
        return f"cli:{pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"cli:uid{uid}"


class Ingest:
    """Checks what the CA tells (certificates, revocations) and records it, with its audit
    entries, through the store. It needs only public material: recording holds no key (R25).
    actor is who asks, for the audit log (R23); an API request passes its own AuditContext
    instead."""

    def __init__(
        self,
        store: IngestStore,
        issuers: Sequence[IssuerCertificates],
        actor: str | None = None,
        processes: int | None = None,
    ) -> None:
        """processes: how many processes check a large batch (None: one per core; 1: only
        this one)."""
        self.store = store
        self.audit = AuditContext(actor or operator_actor())
        self._materials = {m.name: m for m in issuers}
        self._issuers = [
            IssuerCheck.of(
                store.ensure_issuer(m.name, m.certificate.public_bytes(Encoding.DER)),
                m.name,
                m.certificate,
                m.crl,
            )
            for m in issuers
        ]
        self._by_name = {i.name: i for i in self._issuers}
        self.checker = Checker(self._issuers, processes)

    def close(self) -> None:
        """Stop the checking processes, if a large batch started them."""
        self.checker.close()

    def __enter__(self) -> Ingest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def issuer_names(self) -> list[str]:
        return list(self._by_name)

    def issuer_id(self, name: str) -> int:
        issuer = self._by_name.get(name)
        if issuer is None:
            known = ", ".join(self._by_name) or "none configured"
            raise IngestError(f"unknown issuer {name!r}; known issuers: {known}")
        return issuer.id

    def issuer_name(self, issuer_id: int) -> str:
        return next(i.name for i in self._issuers if i.id == issuer_id)

    def material(self, name: str) -> IssuerCertificates:
        self.issuer_id(name)
        return self._materials[name]

    def add_certificates(
        self,
        certificates: Sequence[tuple[x509.Certificate, str]],
        now: int,
        audit: AuditContext | None = None,
    ) -> AddResult:
        """Record (certificate, source) pairs; every one is checked (a large batch by a
        process per core) before any is written, and all are written in one transaction."""
        records = self.checker.check(certificates)
        return self.store.add_certificates(records, now, audit or self.audit)

    def add_files(self, paths: Sequence[Path], now: int) -> AddResult:
        """Record every certificate of the files (PEM, multi-PEM, DER), each named by its
        file (and its place in it) in a refusal; all checked before any is committed. Files
        large enough to hold a pool's worth of certificates start the checking processes
        before they are read, so the processes start while this one reads and splits."""
        size = 0
        for path in paths:
            with contextlib.suppress(OSError):  # certificate_ders names a file it cannot read
                size += path.stat().st_size
        if size >= POOL_THRESHOLD * SMALL_PEM:
            self.checker.start()
        items = [
            (der, f"{path}" if n == 0 else f"{path}#{n + 1}")
            for path in paths
            for n, der in enumerate(certificate_ders(path))
        ]
        # written as they are checked; closed at once if the write fails (no checks left over)
        with contextlib.closing(self.checker.check_der_chunks(items)) as chunks:
            return self.store.add_certificate_chunks(chunks, now, self.audit)

    def revoke(
        self,
        issuer: str,
        serial: int,
        reason: str | int,
        now: int,
        time: int | None = None,
    ) -> CertificateRow:
        """Revoke a known serial; the response is re-signed by the next signer pass. Asking
        again for the revocation in place is refused (the operator learns it was there)."""
        item = Revocation(issuer, serial, reason, time)
        return self.revoke_many([item], now, repeat_ok=False)[0].row

    def check_revocations(self, items: Sequence[Revocation], now: int) -> list[RevocationRequest]:
        """Every revocation checked against the rules and the recorded rows, before anything
        is written: a known issuer and serial, an R7 reason, a time neither in the future nor
        before the certificate's notBefore, and a transition status.py allows. The first bad
        one is refused, naming its source."""
        requests = []
        for item in items:
            where = f"{item.source}: " if item.source else ""
            try:
                issuer_id = self.issuer_id(item.issuer)
                code = parse_reason(item.reason)
            except (IngestError, ValueError) as exc:
                raise IngestError(f"{where}{exc}") from None
            if item.time is not None and item.time > now + CLOCK_SKEW:
                raise IngestError(
                    f"{where}revocation time is in the future; omit --time to use now"
                )
            time = now if item.time is None else item.time
            requests.append(
                RevocationRequest(issuer_id, item.serial, time, code, item.time is not None)
            )
        rows: dict[int, dict[int, CertificateRow]] = {}
        for issuer_id in {r.issuer_id for r in requests}:
            serials = [r.serial for r in requests if r.issuer_id == issuer_id]
            rows[issuer_id] = self.store.certificates_many(issuer_id, serials)
        for item, request in zip(items, requests, strict=True):
            where = f"{item.source}: " if item.source else ""
            row = rows[request.issuer_id].get(request.serial)
            if row is None:
                raise IngestError(
                    f"{where}serial {request.serial:x} is not known for issuer "
                    f"{item.issuer!r}; add the certificate first"
                )
            if row.not_before is not None and request.time < row.not_before:
                raise IngestError(
                    f"{where}serial {request.serial:x}: revocation time is before the "
                    "certificate's notBefore"
                )
        return requests

    def revoke_many(
        self,
        items: Sequence[Revocation],
        now: int,
        audit: AuditContext | None = None,
        repeat_ok: bool = True,
    ) -> list[RevokeOutcome]:
        """Check every revocation, then apply them all in one transaction or none. repeat_ok:
        the revocation already in place is reported unchanged (a retried batch succeeds)."""
        requests = self.check_revocations(items, now)
        try:
            return self.store.revoke_many(requests, now, audit or self.audit, repeat_ok)
        except BatchRefused as exc:
            item = items[exc.index]
            where = f"{item.source}: " if item.source else ""
            raise IngestError(f"{where}serial {item.serial:x}: {exc.cause}") from None


def parse_serial(text: str) -> int:
    """A serial as hex, with or without 0x and ':' separators, as operators copy it from tools."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    if not cleaned or not re.fullmatch(r"[0-9a-f]+", cleaned) or len(cleaned) > 42:
        raise IngestError(f"serial {text!r} is not a hexadecimal serial number")
    return int(cleaned, 16)
