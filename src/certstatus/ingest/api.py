"""The ingest library API behind `certstatus add` and `certstatus revoke`.

Everything is checked before anything is written: a batch with one bad file writes nothing.
"""

from __future__ import annotations

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
from certstatus.status import RevocationRefused
from certstatus.store.base import (
    AddResult,
    CertificateRecord,
    CertificateRow,
    Store,
    UnknownCertificate,
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
        raise IngestError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not data.strip():
        raise IngestError(f"{path}: is empty; expected a PEM or DER certificate")
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


class Ingest:
    def __init__(self, store: Store, issuers: Sequence[IssuerCertificates]) -> None:
        self.store = store
        self._issuers = [
            _KnownIssuer(store.ensure_issuer(m.name, m.certificate.public_bytes(Encoding.DER)), m)
            for m in issuers
        ]
        self._by_name = {i.material.name: i for i in self._issuers}

    def issuer_id(self, name: str) -> int:
        issuer = self._by_name.get(name)
        if issuer is None:
            known = ", ".join(self._by_name) or "none configured"
            raise IngestError(f"unknown issuer {name!r}; known issuers: {known}")
        return issuer.id

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
            )
        raise IngestError(
            f"{source}: signature does not verify against issuer "
            f"{candidates[0].material.name!r}; not recorded"
        )

    def add_certificates(
        self, certificates: Iterable[tuple[x509.Certificate, str]], now: int
    ) -> AddResult:
        """Record (certificate, source) pairs; every one is checked before any is written."""
        records = [self._record(cert, source) for cert, source in certificates]
        return self.store.add_certificates(records, now)

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
        """Revoke a known serial; the response is re-signed by the next signer pass."""
        issuer_id = self.issuer_id(issuer)
        try:
            code = parse_reason(reason)
        except ValueError as exc:
            raise IngestError(str(exc)) from None
        if time is not None and time > now + CLOCK_SKEW:
            raise IngestError("revocation time is in the future; omit --time to use now")
        try:
            return self.store.revoke(
                issuer_id, serial, now if time is None else time, code, time is not None, now
            )
        except UnknownCertificate:
            raise IngestError(
                f"serial {serial:x} is not known for issuer {issuer!r}; add the certificate first"
            ) from None
        except RevocationRefused as exc:
            raise IngestError(f"serial {serial:x}: {exc}") from None


def parse_serial(text: str) -> int:
    """A serial as hex, with or without 0x and ':' separators, as operators copy it from tools."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    if not cleaned or not re.fullmatch(r"[0-9a-f]+", cleaned) or len(cleaned) > 42:
        raise IngestError(f"serial {text!r} is not a hexadecimal serial number")
    return int(cleaned, 16)
