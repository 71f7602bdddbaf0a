"""What ingest reads of a certificate, taken from its DER without building Python objects.

cryptography's x509 objects build every extension's value (SubjectAlternativeName, AIA, ...)
and the issuer Name as Python objects when asked: ~70 µs a certificate here, more than half
of what an ECDSA P-256 verification costs. Ingest needs only the raw tbsCertificate (what the
issuer signed), the issuer name's DER and four facts of the extensions, so this reads just
those (RFC 5280 4.1). The certificate has already been parsed by cryptography
(load_der_x509_certificate, a strict DER parser), so this meets only well-formed outer
structure; anything it does not expect (a duplicate extension, an odd tag or length, a
basicConstraints or EKU value it cannot read) gives None, and the caller checks that
certificate the slow way, through cryptography, which gives the same answer as before.
"""

from __future__ import annotations

from dataclasses import dataclass

_SEQUENCE, _BOOLEAN, _OID, _OCTETS, _INTEGER = 0x30, 0x01, 0x06, 0x04, 0x02
_VERSION, _ISSUER_UID, _SUBJECT_UID, _EXTENSIONS = 0xA0, 0x81, 0x82, 0xA3

# extnID contents (the OID's DER without tag and length)
BASIC_CONSTRAINTS = bytes.fromhex("551d13")  # 2.5.29.19
EXTENDED_KEY_USAGE = bytes.fromhex("551d25")  # 2.5.29.37
CRL_DISTRIBUTION_POINTS = bytes.fromhex("551d1f")  # 2.5.29.31
CT_POISON = bytes.fromhex("2b06010401d679020403")  # 1.3.6.1.4.1.11129.2.4.3 (RFC 6962)
OCSP_SIGNING = bytes.fromhex("2b06010505070309")  # 1.3.6.1.5.5.7.3.9
_READ = frozenset((BASIC_CONSTRAINTS, EXTENDED_KEY_USAGE, CRL_DISTRIBUTION_POINTS, CT_POISON))


class _Unexpected(Exception):
    """Something this reader does not handle: the caller takes the slow path."""


@dataclass(frozen=True, slots=True)
class LeafFacts:
    """The raw tbsCertificate (tag and length included), the issuer Name's DER, and what
    the leaf checks read of the extensions."""

    tbs: bytes
    issuer: bytes
    ca: bool
    ocsp_signing: bool
    precertificate: bool
    distribution_points: bool


def _header(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at pos, which must end by end.
    Single-byte tags and definite lengths of up to four bytes only (all DER certificates)."""
    if pos + 2 > end:
        raise _Unexpected
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise _Unexpected  # high tag number form: not in a certificate's fields read here
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise _Unexpected
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise _Unexpected
    return tag, pos, pos + length


def _expect(data: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    found, start, stop = _header(data, pos, end)
    if found != tag:
        raise _Unexpected
    return start, stop


def read_leaf(der: bytes) -> LeafFacts | None:
    """The facts of a certificate's DER, or None where the slow path must decide."""
    try:
        return _read(der)
    except _Unexpected:
        return None


def _read(der: bytes) -> LeafFacts:
    start, end = _expect(der, 0, len(der), _SEQUENCE)  # Certificate
    tbs_start = start
    start, tbs_end = _expect(der, tbs_start, end, _SEQUENCE)  # TBSCertificate
    pos = start
    tag, _, stop = _header(der, pos, tbs_end)
    if tag == _VERSION:
        pos = stop
    _, pos = _expect(der, pos, tbs_end, _INTEGER)  # serialNumber
    _, pos = _expect(der, pos, tbs_end, _SEQUENCE)  # signature
    issuer_start = pos
    _, pos = _expect(der, pos, tbs_end, _SEQUENCE)  # issuer
    issuer = der[issuer_start:pos]
    for _ in range(3):  # validity, subject, subjectPublicKeyInfo
        _, pos = _expect(der, pos, tbs_end, _SEQUENCE)
    ca = ocsp_signing = precertificate = points = False
    seen: set[bytes] = set()
    while pos < tbs_end:
        tag, start, stop = _header(der, pos, tbs_end)
        pos = stop
        if tag in (_ISSUER_UID, _SUBJECT_UID):
            continue
        if tag != _EXTENSIONS or pos != tbs_end:
            raise _Unexpected
        start, stop = _expect(der, start, stop, _SEQUENCE)
        while start < stop:
            tag, s, start = _header(der, start, stop)  # Extension
            if tag != _SEQUENCE or der[s] != _OID or der[s + 1] & 0x80:
                raise _Unexpected
            oid = der[s + 2 : s + 2 + der[s + 1]]
            if oid in seen:
                raise _Unexpected  # cryptography refuses a duplicate extension
            seen.add(oid)
            if oid not in _READ:
                continue
            tag, v, value_end = _header(der, s + 2 + len(oid), start)
            if tag == _BOOLEAN:  # critical
                tag, v, value_end = _header(der, value_end, start)
            if tag != _OCTETS or value_end != start:
                raise _Unexpected
            if oid == BASIC_CONSTRAINTS:
                ca = _ca(der, v, value_end)
            elif oid == EXTENDED_KEY_USAGE:
                ocsp_signing = _has_ocsp_signing(der, v, value_end)
            elif oid == CT_POISON:
                if der[v:value_end] != b"\x05\x00":  # its value is NULL
                    raise _Unexpected
                precertificate = True
            else:
                points = True
    return LeafFacts(der[tbs_start:tbs_end], issuer, ca, ocsp_signing, precertificate, points)


def _ca(der: bytes, pos: int, end: int) -> bool:
    """basicConstraints' cA (SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLen INTEGER OPTIONAL })."""
    start, stop = _expect(der, pos, end, _SEQUENCE)
    if stop != end:
        raise _Unexpected
    if start == stop:
        return False
    tag, v, value_end = _header(der, start, stop)
    if tag != _BOOLEAN:
        if tag != _INTEGER or value_end != stop:
            raise _Unexpected
        return False
    value = der[v:value_end]
    if value not in (b"\xff", b"\x00"):
        raise _Unexpected
    if value_end != stop:
        _, after = _expect(der, value_end, stop, _INTEGER)
        if after != stop:
            raise _Unexpected
    return value == b"\xff"


def _has_ocsp_signing(der: bytes, pos: int, end: int) -> bool:
    """Whether an extKeyUsage value (SEQUENCE OF KeyPurposeId) lists id-kp-OCSPSigning."""
    start, stop = _expect(der, pos, end, _SEQUENCE)
    if stop != end or start == stop:
        raise _Unexpected  # an empty list: cryptography decides
    found = False
    while start < stop:
        s, start = _expect(der, start, stop, _OID)
        found = found or der[s:start] == OCSP_SIGNING
    return found
