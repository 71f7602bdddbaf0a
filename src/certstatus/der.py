"""Just enough DER encoding to build OCSP structures by hand.

`cryptography`'s builders are general and allocate a Python object per field; the signer builds
millions of near-identical responses, so it concatenates DER directly. Every structure built with
these helpers is parsed back by `cryptography` in the tests, which is the oracle for correctness.
"""

from __future__ import annotations

import calendar
import time

SEQUENCE = 0x30
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
ENUMERATED = 0x0A
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
BOOLEAN_TRUE = b"\x01\x01\xff"


def length(n: int) -> bytes:
    """Encode a DER length (short form below 128, long form above)."""
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def header(tag: int, size: int) -> bytes:
    """Tag and length of an element whose content is size bytes, for building by concatenation."""
    if size < 0x80:
        return bytes((tag, size))
    if size < 0x100:
        return bytes((tag, 0x81, size))
    if size < 0x10000:
        return bytes((tag, 0x82, size >> 8, size & 0xFF))
    return bytes((tag,)) + length(size)


def tlv(tag: int, content: bytes) -> bytes:
    """One tag-length-value element with a single-byte tag."""
    return bytes((tag,)) + length(len(content)) + content


def sequence(*parts: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(parts))


def explicit(number: int, content: bytes) -> bytes:
    """A context-specific, constructed [number] EXPLICIT wrapper."""
    return tlv(0xA0 | number, content)


def integer(value: int) -> bytes:
    """A DER INTEGER: minimal two's-complement bytes, so a high top bit gets a 0x00 prefix."""
    if value < 0:
        raise ValueError("negative integers are not used in OCSP serials")
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return tlv(INTEGER, body)


def octet_string(value: bytes) -> bytes:
    return tlv(OCTET_STRING, value)


def bit_string(value: bytes) -> bytes:
    """A BIT STRING with no unused bits, as signatures and keys are encoded."""
    return tlv(BIT_STRING, b"\x00" + value)


def enumerated(value: int) -> bytes:
    if not 0 <= value < 128:
        raise ValueError("enumerated values used here fit in one byte")
    return tlv(ENUMERATED, bytes((value,)))


def oid(dotted: str) -> bytes:
    """Encode an OBJECT IDENTIFIER from its dotted form; done once at start-up, never per response."""
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in (40 * arcs[0] + arcs[1], *arcs[2:]):  # the first two share one subidentifier
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return tlv(OID, bytes(body))


def generalized_time(unix_seconds: int) -> bytes:
    """GeneralizedTime in Zulu with whole seconds only (R8: fractional seconds broke clients)."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(unix_seconds)) + "Z"
    return tlv(GENERALIZED_TIME, stamp.encode("ascii"))


_UTC_DAYS: dict[int, bytes] = {}
_UTC_TIME_END = 2_524_608_000  # 2050-01-01T00:00:00Z


def x509_time(unix_seconds: int) -> bytes:
    """RFC 5280 Time: UTCTime through 2049, GeneralizedTime from 2050 (4.1.2.5, 5.1.2.4).

    A large CRL encodes a million revocation dates: the date part is cached per day and the
    time of day is plain arithmetic (checked against strftime in the tests)."""
    if not 0 <= unix_seconds < _UTC_TIME_END:
        return generalized_time(unix_seconds)
    day, second = divmod(unix_seconds, 86400)
    prefix = _UTC_DAYS.get(day)
    if prefix is None:
        prefix = _UTC_DAYS[day] = b"\x17\x0d" + time.strftime(
            "%y%m%d", time.gmtime(day * 86400)
        ).encode("ascii")
    hour, second = divmod(second, 3600)
    minute, second = divmod(second, 60)
    return b"%s%02d%02d%02dZ" % (prefix, hour, minute, second)


def elements(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, content start, end) of each element between start and end."""
    found = []
    pos = start
    while pos < end:
        tag, content_start, content_end = read_tlv(data, pos)
        found.append((tag, pos, content_start, content_end))
        pos = content_end
    return found


def oid_text(content: bytes) -> str:
    """The dotted form of an OBJECT IDENTIFIER's content octets (inverse of oid's content);
    ValueError for a truncated arc."""
    if not content or content[-1] & 0x80:
        raise ValueError("truncated OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))


def parse_generalized_time(value: str) -> int:
    """Inverse of generalized_time for the whole-second Zulu form; used by tests and tools."""
    return calendar.timegm(time.strptime(value, "%Y%m%d%H%M%SZ"))


def read_tlv(data: bytes, offset: int = 0) -> tuple[int, int, int]:
    """Return (tag, content start, content end) of the element at offset; raise ValueError if cut."""
    if offset + 2 > len(data):
        raise ValueError("truncated DER element")
    tag = data[offset]
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        size = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("unsupported DER length")
        size = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + size > len(data):
        raise ValueError("truncated DER element")
    return tag, pos, pos + size
