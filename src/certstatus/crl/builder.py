"""Building and signing a CRL (RFC 5280 5.1) by concatenating DER.

`cryptography`'s CertificateRevocationListBuilder makes a Python object per entry; a CA with a
million revocations needs seconds, not minutes, so entries are encoded directly here. The
result is parsed and verified with `cryptography` (and pkilint, and `openssl crl`) in tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from cryptography import x509

from certstatus import der
from certstatus.keys.base import SigningKey
from certstatus.ocsp.certid import subject_public_key_bits
from certstatus.ocsp.reasons import encoded_reason
from certstatus.status import RevokedEntry as Entry

MAX_VALIDITY = 10 * 86400  # R16: nextUpdate at most 10 days after thisUpdate
MAX_CRL_NUMBER = 1 << 159  # R17

_REASON_CODE = der.oid("2.5.29.21")
_AKI = der.oid("2.5.29.35")
_CRL_NUMBER = der.oid("2.5.29.20")
_IDP = der.oid("2.5.29.28")
_V2 = der.integer(1)
# encoded revocation times remembered while encoding (a bulk revocation repeats one); bounded,
# since a million revocations made one by one have a million times
_TIMES_KEPT = 4096


def raw_subject(certificate: x509.Certificate) -> bytes:
    """The subject Name exactly as encoded in the certificate: a CRL's issuer must be
    byte-identical to it (R17), so it is copied, never re-encoded."""
    tbs = certificate.tbs_certificate_bytes
    _, start, end = der.read_tlv(tbs)
    fields = der.elements(tbs, start, end)
    offset = 1 if fields[0][0] == 0xA0 else 0  # [0] version, present in v3 certificates
    _, element_start, _, element_end = fields[offset + 4]  # serial, sig, issuer, validity, subject
    return tbs[element_start:element_end]


def authority_key_id(issuer: x509.Certificate) -> bytes:
    """The issuer's subjectKeyIdentifier, or the RFC 5280 method-1 hash if it has none."""
    try:
        return issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return hashlib.sha1(subject_public_key_bits(issuer)).digest()


def _extension(oid: bytes, value: bytes, critical: bool = False) -> bytes:
    return der.sequence(oid, der.BOOLEAN_TRUE if critical else b"", der.octet_string(value))


def idp_extension(url: str) -> bytes:
    """A critical IssuingDistributionPoint naming url as its fullName (R19)."""
    uri = der.tlv(0x86, url.encode("ascii"))  # GeneralName uniformResourceIdentifier [6]
    full_name = der.tlv(0xA0, uri)  # fullName [0] IMPLICIT GeneralNames
    distribution_point = der.tlv(0xA0, full_name)  # distributionPoint [0]
    return _extension(_IDP, der.sequence(distribution_point), critical=True)


class CrlSigner:
    """Builds and signs CRLs for one issuer with its key."""

    def __init__(self, issuer: x509.Certificate, key: SigningKey) -> None:
        self.key = key
        self._issuer_name = raw_subject(issuer)
        key_id = der.tlv(0x80, authority_key_id(issuer))  # keyIdentifier [0] IMPLICIT
        self._aki = _extension(_AKI, der.sequence(key_id))

    def entries_der(self, entries: Iterable[Entry]) -> bytes:
        """revokedCertificates, or nothing when empty (an empty SEQUENCE is an error)."""
        body = self._entries_body(entries)
        return der.header(der.SEQUENCE, len(body)) + body if body else b""

    def _entries_body(self, entries: Iterable[Entry]) -> bytearray:
        """The content of revokedCertificates, encoded as entries arrive (they may stream from
        the store), in one growing buffer: no object is kept per entry."""
        times: dict[int, bytes] = {}
        reasons: dict[int, bytes] = {}
        body = bytearray()
        for entry in entries:
            when = times.get(entry.revoked_at)
            if when is None:
                if len(times) >= _TIMES_KEPT:  # revocations mostly have times of their own
                    times.clear()
                when = times[entry.revoked_at] = der.x509_time(entry.revoked_at)
            code = encoded_reason(entry.reason)
            ext = b""
            if code is not None:
                if code not in reasons:
                    reasons[code] = der.sequence(_extension(_REASON_CODE, der.enumerated(code)))
                ext = reasons[code]
            serial = der.integer(entry.serial)
            body += der.header(der.SEQUENCE, len(serial) + len(when) + len(ext))
            body += serial
            body += when
            body += ext
        return body

    def sign(
        self,
        entries: Iterable[Entry],
        number: int,
        this_update: int,
        next_update: int,
        idp_url: str | None,
    ) -> bytes:
        """A complete, signed CertificateList. idp_url is None for a single full CRL (R19).
        Entries are listed in the order given; in ascending serial order (as the CRL builder
        reads them) the gate compares this CRL with the next one without sorting it."""
        if not 0 < number < MAX_CRL_NUMBER:
            raise ValueError("CRLNumber must be positive and below 2^159 (R17)")
        if not 0 < next_update - this_update <= MAX_VALIDITY:
            raise ValueError("nextUpdate must be after thisUpdate and within 10 days (R16)")
        extensions = self._aki + _extension(_CRL_NUMBER, der.integer(number))
        if idp_url is not None:
            extensions += idp_extension(idp_url)
        algorithm = self.key.algorithm_identifier
        body = self._entries_body(entries)
        revoked = der.header(der.SEQUENCE, len(body)) if body else b""
        head = b"".join(
            (
                _V2,
                algorithm,
                self._issuer_name,
                der.x509_time(this_update),
                der.x509_time(next_update),
                revoked,
            )
        )
        tail = der.explicit(0, der.sequence(extensions))
        # the entries are copied once into the TBS and once into the result: a million
        # entries are about 50 MB, so every extra copy would show in the builder's peak memory
        tbs = b"".join(
            (der.header(der.SEQUENCE, len(head) + len(body) + len(tail)), head, body, tail)
        )
        del body
        signature = der.bit_string(self.key.sign(tbs))
        body_len = len(tbs) + len(algorithm) + len(signature)
        return b"".join((der.header(der.SEQUENCE, body_len), tbs, algorithm, signature))
