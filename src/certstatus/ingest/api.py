"""The ingest library API behind `certstatus add` and `certstatus revoke`.

Everything is checked before anything is written: a batch with one bad file writes nothing.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from certstatus.config import IssuerCertificates
from certstatus.crl.layout import CrlLayout
from certstatus.ocsp.reasons import parse_reason
from certstatus.store.base import (
    AddResult,
    AuditContext,
    BatchRefused,
    CertificateRecord,
    CertificateRow,
    IngestStore,
    RevocationRequest,
    RevokeOutcome,
)

CT_POISON = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.3")
CLOCK_SKEW = 60


class IngestError(ValueError):
    """Input refused; nothing was written."""


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
    except ValueError:
        raise IngestError(f"{path}: not a PEM or DER certificate; nothing recorded") from None


def not_a_leaf(certificate: x509.Certificate) -> str | None:
    """Why a certificate is not a subscriber (pre)certificate to record, or None.

    A CA certificate (the issuer itself, an intermediate) or the delegated OCSP responder
    certificate is not a leaf: recorded, it would get signed "good" responses of its own and a
    place on the CRLs, which no relying party should ever be shown for it."""
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        if constraints.value.ca:
            return "is a CA certificate, not a subscriber certificate"
    except x509.ExtensionNotFound:
        pass
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.OCSP_SIGNING in usages:
            return (
                "is an OCSP responder certificate (EKU OCSPSigning), not a subscriber certificate"
            )
    except x509.ExtensionNotFound:
        pass
    return None


def crl_partition(certificate: x509.Certificate, layout: CrlLayout | None, source: str) -> int:
    """The CRL partition a certificate belongs to, decided once and stored (R19).

    The CDP written at issuance is the truth; a certificate without one takes the partition the
    layout assigns to its serial. A CDP naming a URL this issuer does not publish is refused:
    no CRL we serve could ever list that certificate.
    """
    if layout is None:
        return 0
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return layout.partition_for_serial(certificate.serial_number)
    urls = [
        name.value
        for point in points
        for name in point.full_name or []
        if isinstance(name, x509.UniformResourceIdentifier)
    ]
    for url in urls:
        partition = layout.partition_from_url(url)
        if partition is not None:
            return partition
    raise IngestError(
        f"{source}: its CRL distribution point {urls} is not a URL of issuer "
        f"{layout.issuer!r} ({layout.url_template}); fix crl_url or the CA's CDP"
    )


def is_precertificate(certificate: x509.Certificate) -> bool:
    """A precertificate carries the critical CT poison extension (RFC 6962 3.1)."""
    return any(ext.oid == CT_POISON for ext in certificate.extensions)


@dataclass(frozen=True)
class _KnownIssuer:
    id: int
    material: IssuerCertificates


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
    """`cli:<user>`: who ran a command, for the audit log (the login name, else the uid)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


class Ingest:
    """Checks what the CA tells (certificates, revocations) and records it, with its audit
    entries, through the store. It needs only public material: recording holds no key (R25).
    actor is who asks, for the audit log (R23); an API request passes its own AuditContext
    instead."""

    def __init__(
        self, store: IngestStore, issuers: Sequence[IssuerCertificates], actor: str | None = None
    ) -> None:
        self.store = store
        self.audit = AuditContext(actor or operator_actor())
        self._issuers = [
            _KnownIssuer(store.ensure_issuer(m.name, m.certificate.public_bytes(Encoding.DER)), m)
            for m in issuers
        ]
        self._by_name = {i.material.name: i for i in self._issuers}

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
        return next(i.material.name for i in self._issuers if i.id == issuer_id)

    def material(self, name: str) -> IssuerCertificates:
        self.issuer_id(name)
        return self._by_name[name].material

    def _record(self, certificate: x509.Certificate, source: str) -> CertificateRecord:
        refused = not_a_leaf(certificate)
        if refused is not None:
            raise IngestError(f"{source}: {refused}; nothing recorded")
        candidates = [
            i for i in self._issuers if i.material.certificate.subject == certificate.issuer
        ]
        if not candidates:
            raise IngestError(
                f"{source}: issued by {certificate.issuer.rfc4514_string()}, which is not a "
                "configured issuer"
            )
        for issuer in candidates:
            try:
                certificate.verify_directly_issued_by(issuer.material.certificate)
            except Exception:
                continue
            kind = "precert" if is_precertificate(certificate) else "cert"
            return CertificateRecord(
                issuer.id,
                certificate.serial_number,
                kind,
                int(certificate.not_valid_after_utc.timestamp()),
                crl_partition(certificate, issuer.material.crl, source),
                int(certificate.not_valid_before_utc.timestamp()),
            )
        raise IngestError(
            f"{source}: signature does not verify against issuer "
            f"{candidates[0].material.name!r}; not recorded"
        )

    def add_certificates(
        self,
        certificates: Iterable[tuple[x509.Certificate, str]],
        now: int,
        audit: AuditContext | None = None,
    ) -> AddResult:
        """Record (certificate, source) pairs; every one is checked before any is written."""
        records = [self._record(cert, source) for cert, source in certificates]
        return self.store.add_certificates(records, now, audit or self.audit)

    def add_files(self, paths: Sequence[Path], now: int) -> AddResult:
        pairs = [
            (cert, f"{path}" if n == 0 else f"{path}#{n + 1}")
            for path in paths
            for n, cert in enumerate(read_certificate_file(path))
        ]
        return self.add_certificates(pairs, now)

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
