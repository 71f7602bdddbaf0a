"""Reading a CRL another system published, for `certstatus import crl` (pure: bytes in, entries
out; the file is read by the command).

A CA moving to certstatus brings its revocations as its last CRL. What an import relies on is
checked here before any entry is used: the bytes are one CRL (PEM or DER), its issuer is the
configured issuer's subject, its signature verifies with that issuer's key (a CRL of another
CA, or one altered after signing, is refused), it is a full CRL (a delta lists only changes),
and no entry names another certificate issuer (an indirect CRL would bring other CAs' serials).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from cryptography import x509


class CrlReadError(ValueError):
    """The CRL cannot be imported as it is; the message says why in one line."""


@dataclass(frozen=True, slots=True)
class ListedRevocation:
    """One entry: the serial, its revocationDate (Unix seconds) and the reason by its RFC 5280
    name ("unspecified" when the entry has no CRLReason extension, as RFC 5280 5.3.1 means)."""

    serial: int
    time: int
    reason: str


@dataclass(frozen=True)
class CrlListing:
    """A CRL that passed every check; entries() reads its revocations lazily, so a CRL of a
    million entries is walked without a million objects held at once."""

    crl: x509.CertificateRevocationList
    number: int | None
    this_update: int
    next_update: int | None

    def __len__(self) -> int:
        return len(self.crl)

    def entries(self) -> Iterator[ListedRevocation]:
        """Each entry in CRL order; an entry naming another certificate issuer is refused."""
        for index, entry in enumerate(self.crl, start=1):
            reason = "unspecified"
            try:
                extensions = list(entry.extensions)
            except ValueError:
                raise CrlReadError(
                    f"entry {index} (serial {entry.serial_number:x}) has a malformed extension"
                ) from None
            for extension in extensions:
                value = extension.value
                if isinstance(value, x509.CertificateIssuer):
                    raise CrlReadError(
                        f"entry {index} (serial {entry.serial_number:x}) names another "
                        "certificate issuer (an indirect CRL); only the issuer's own CRL imports"
                    )
                if isinstance(value, x509.CRLReason):
                    reason = value.reason.value
            yield ListedRevocation(
                entry.serial_number, int(entry.revocation_date_utc.timestamp()), reason
            )


def parse_crl(data: bytes) -> x509.CertificateRevocationList:
    """One CRL, PEM or DER."""
    if not data.strip():
        raise CrlReadError("is empty; expected a PEM or DER CRL")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise CrlReadError("is not a PEM or DER CRL") from None


def read_crl(data: bytes, issuer: x509.Certificate, issuer_name: str) -> CrlListing:
    """The CRL in data, checked against the issuer's certificate (see the module docstring);
    CrlReadError names the first problem. issuer_name is the configured name, for messages."""
    crl = parse_crl(data)
    if crl.issuer != issuer.subject:
        raise CrlReadError(
            f"is issued by {crl.issuer.rfc4514_string()}, not by issuer {issuer_name!r} "
            f"({issuer.subject.rfc4514_string()})"
        )
    try:
        signed = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        signed = False
    if not signed:
        raise CrlReadError(
            f"its signature does not verify with issuer {issuer_name!r}'s certificate "
            "(altered, or signed by another key)"
        )
    try:
        extensions = crl.extensions
    except ValueError:
        raise CrlReadError("has a malformed extension") from None
    if any(isinstance(e.value, x509.DeltaCRLIndicator) for e in extensions):
        raise CrlReadError("is a delta CRL; import the full CRL it is based on")
    number = next(
        (e.value.crl_number for e in extensions if isinstance(e.value, x509.CRLNumber)), None
    )
    next_update = crl.next_update_utc
    return CrlListing(
        crl,
        number,
        int(crl.last_update_utc.timestamp()),
        None if next_update is None else int(next_update.timestamp()),
    )
