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

import re
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


def _children(der: bytes, pos: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, start, content start, content end) of each element from pos to end, in one
    loop: a certificate's ~25 elements read by a call each cost more than the rest of
    the reading. Single-byte tags, and lengths of up to two bytes in their shortest form
    (DER; a certificate longer than 64 KiB goes the slow way)."""
    found = []
    while pos < end:
        tag = der[pos]
        length = der[pos + 1]
        if length < 0x80:
            start = pos + 2
        elif length == 0x81:
            start, length = pos + 3, der[pos + 2]
            if length < 0x80:
                raise _Unexpected
        elif length == 0x82:
            start, length = pos + 4, der[pos + 2] << 8 | der[pos + 3]
            if length < 0x100:
                raise _Unexpected
        else:
            raise _Unexpected
        stop = start + length
        if stop > end or tag & 0x1F == 0x1F:
            raise _Unexpected
        found.append((tag, pos, start, stop))
        pos = stop
    return found


def _only(der: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    """The content of the one element from pos to end, which must have this tag."""
    (found,) = _children(der, pos, end)
    if found[0] != tag:
        raise _Unexpected
    return found[2], found[3]


def read_leaf(der: bytes) -> LeafFacts | None:
    """The facts of a certificate's DER, or None where the slow path must decide."""
    try:
        return _read(der)
    except (_Unexpected, ValueError, IndexError):  # ValueError: not exactly one element
        return None


# the tags of a TBSCertificate's fields from serialNumber on: serialNumber, signature, issuer,
# validity, subject, subjectPublicKeyInfo, then the optional unique IDs and extensions
_TBS_SHAPES = {
    bytes([_INTEGER, *[_SEQUENCE] * 5, *ids, *extensions])
    for ids in ((), (_ISSUER_UID,), (_SUBJECT_UID,), (_ISSUER_UID, _SUBJECT_UID))
    for extensions in ((), (_EXTENSIONS,))
}


def _read(der: bytes) -> LeafFacts:
    ((tag, _, start, end),) = _children(der, 0, len(der))  # Certificate
    if tag != _SEQUENCE:
        raise _Unexpected
    tag, tbs_start, start, tbs_end = _children(der, start, end)[0]
    if tag != _SEQUENCE:
        raise _Unexpected
    fields = _children(der, start, tbs_end)
    if fields[0][0] == _VERSION:
        del fields[0]
    if bytes([field[0] for field in fields]) not in _TBS_SHAPES:
        raise _Unexpected
    issuer = der[fields[2][1] : fields[2][3]]
    ca = ocsp_signing = precertificate = points = False
    if fields[-1][0] == _EXTENSIONS:
        listed = _only(der, fields[-1][2], fields[-1][3], _SEQUENCE)
        seen: set[bytes] = set()
        for tag, _, s, stop in _children(der, *listed):  # each Extension
            if tag != _SEQUENCE or der[s] != _OID or der[s + 1] >= 0x80:
                raise _Unexpected
            at = s + 2 + der[s + 1]
            oid = der[s + 2 : at]
            if oid in seen:
                raise _Unexpected  # cryptography refuses a duplicate extension
            seen.add(oid)
            if oid not in _READ:
                continue
            if der[at] == _BOOLEAN:  # critical
                if der[at + 1] != 1:
                    raise _Unexpected
                at += 3
            v, value_end = _only(der, at, stop, _OCTETS)
            if oid == BASIC_CONSTRAINTS:
                ca = _ca(der[v:value_end])
            elif oid == EXTENDED_KEY_USAGE:
                ocsp_signing = _has_ocsp_signing(der, v, value_end)
            elif oid == CT_POISON:
                if der[v:value_end] != b"\x05\x00":  # its value is NULL
                    raise _Unexpected
                precertificate = True
            else:
                points = True
    return LeafFacts(der[tbs_start:tbs_end], issuer, ca, ocsp_signing, precertificate, points)


_NOT_CA = b"\x30\x00"  # basicConstraints {}: cA FALSE, no pathLenConstraint
_CA = b"\x30\x03\x01\x01\xff"  # basicConstraints { cA TRUE }


def _ca(value: bytes) -> bool:
    """basicConstraints' cA (SEQUENCE { cA BOOLEAN DEFAULT FALSE, pathLen INTEGER OPTIONAL });
    an explicit FALSE, which DER forbids, is left to cryptography."""
    if value == _NOT_CA:
        return False
    if value == _CA:
        return True
    start, stop = _only(value, 0, len(value), _SEQUENCE)
    shape = _children(value, start, stop)
    tags = bytes([part[0] for part in shape])
    # pathLen without cA (a pathLen on a non-CA) is refused by cryptography: the slow path
    if tags != bytes([_BOOLEAN, _INTEGER]) or value[shape[0][2] : shape[0][3]] != b"\xff":
        raise _Unexpected
    return True


_BAD_OID = re.compile(rb"(?:^|[\x00-\x7f])\x80|[\x80-\xff]$")  # not the shortest form; cut


def _has_ocsp_signing(der: bytes, pos: int, end: int) -> bool:
    """Whether an extKeyUsage value (SEQUENCE OF KeyPurposeId) lists id-kp-OCSPSigning; a
    list that is empty or holds a malformed OID is left to cryptography."""
    start, stop = _only(der, pos, end, _SEQUENCE)
    purposes = _children(der, start, stop)
    found = False
    for tag, _, s, e in purposes:
        oid = der[s:e]
        if tag != _OID or not oid or _BAD_OID.search(oid):
            raise _Unexpected
        found = found or oid == OCSP_SIGNING
    if not purposes:
        raise _Unexpected
    return found
