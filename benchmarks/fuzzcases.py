"""What benchmarks/fuzz.py sends: OCSP requests built as DER trees and mutated by structure and by
byte, and raw HTTP/1.1 messages with broken or odd framing.

Every case is drawn from a seeded random.Random, so a run is reproducible from its seed. An
unmutated request carries its expected answer (the oracle): the fuzzer checks the responder
against it, so a run finds wrong answers as well as crashes.
"""

from __future__ import annotations

import base64
import functools
import random
from dataclasses import dataclass, field
from urllib.parse import quote

from certstatus import der
from certstatus.ocsp.certid import HashAlgorithm, IssuerKey

# A DER element as a tree: (tag, children) for constructed, (tag, content) for primitive.
Node = tuple[int, "list[Node] | bytes"]

NONCE = "1.3.6.1.5.5.7.48.1.2"
UNDERSTOOD = ("1.3.6.1.5.5.7.48.1.2", "1.3.6.1.5.5.7.48.1.4", "1.3.6.1.5.5.7.48.1.7")
UNKNOWN = ("1.2.3.4.5", "2.5.29.19", "1.3.6.1.5.5.7.48.1.99", "1.3.6.1.4.1.11129.2.4.2")
HASH_OIDS = {
    HashAlgorithm.SHA1: "1.3.14.3.2.26",
    HashAlgorithm.SHA256: "2.16.840.1.101.3.4.2.1",
}
OTHER_HASH_OIDS = ("2.16.840.1.101.3.4.2.2", "2.16.840.1.101.3.4.2.3", "1.2.840.113549.2.5")


@dataclass(frozen=True)
class Target:
    """What the responder under test knows: its issuer's CertID hashes and some serials."""

    keys: dict[HashAlgorithm, IssuerKey]
    serials: dict[int, str]  # serial -> "good" | "revoked"


@dataclass
class Expect:
    """The answer an unmutated request must get: an OCSP responseStatus and, when successful,
    the certificate status and serial of its single response."""

    response_status: str
    cert_status: str | None = None
    serial: int | None = None


@dataclass
class OcspCase:
    """An OCSP request and what it must get (None: anything well-formed, the bytes are fuzzed)."""

    der: bytes
    expect: Expect | None
    label: str
    mutations: list[str] = field(default_factory=list)


def encode(node: Node) -> bytes:
    tag, value = node
    if isinstance(value, bytes):
        return der.tlv(tag, value)
    return der.tlv(tag, b"".join(encode(child) for child in value))


def _content(element: bytes) -> bytes:
    """The content octets of one encoded element."""
    _, start, _ = der.read_tlv(element)
    return element[start:]


@functools.cache
def _oid(dotted: str) -> Node:
    return (der.OID, _content(der.oid(dotted)))


def _integer(value: int) -> Node:
    return (der.INTEGER, _content(der.integer(value)))


def _extension(rng: random.Random, dotted: str, critical: bool) -> Node:
    if dotted == NONCE:
        value = der.octet_string(rng.randbytes(rng.choice((1, 16, 32, rng.randint(0, 200)))))
    else:
        value = rng.randbytes(rng.randint(0, 40))
    fields: list[Node] = [_oid(dotted)]
    if critical:
        fields.append((0x01, b"\xff"))
    fields.append((der.OCTET_STRING, value))
    return (der.SEQUENCE, fields)


def _extensions(rng: random.Random, unknown_critical: bool) -> tuple[Node, bool]:
    """An Extensions list; whether it holds a critical extension the responder must refuse."""
    chosen: list[Node] = []
    refused = False
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.6:
            chosen.append(_extension(rng, rng.choice(UNDERSTOOD), rng.random() < 0.3))
        else:
            critical = unknown_critical and rng.random() < 0.7
            refused |= critical
            chosen.append(_extension(rng, rng.choice(UNKNOWN), critical))
    return (der.SEQUENCE, chosen), refused


def _cert_id(rng: random.Random, target: Target) -> tuple[Node, Expect]:
    """A CertID and the answer it gets alone: ours (good/revoked), unknown serial, foreign
    issuer or unsupported hash (all unauthorized, R5/R10)."""
    algorithm = rng.choice(list(HashAlgorithm))
    keys = target.keys[algorithm]
    name_hash, key_hash, hash_oid = keys.name_hash, keys.key_hash, HASH_OIDS[algorithm]
    roll = rng.random()
    serial = rng.choice(list(target.serials))
    expect = Expect("successful", target.serials[serial], serial)
    if roll < 0.15:
        serial = rng.getrandbits(rng.choice((8, 64, 159)))
        expect = Expect("unauthorized")
    elif roll < 0.22:
        name_hash, key_hash = rng.randbytes(len(name_hash)), rng.randbytes(len(key_hash))
        expect = Expect("unauthorized")
    elif roll < 0.27:
        hash_oid = rng.choice(OTHER_HASH_OIDS)
        expect = Expect("unauthorized")
    algorithm_id: list[Node] = [_oid(hash_oid)]
    if rng.random() < 0.8:
        algorithm_id.append((der.NULL, b""))
    node: Node = (
        der.SEQUENCE,
        [
            (der.SEQUENCE, algorithm_id),
            (der.OCTET_STRING, name_hash),
            (der.OCTET_STRING, key_hash),
            _integer(serial),
        ],
    )
    return node, expect


def ocsp_request(rng: random.Random, target: Target) -> tuple[Node, Expect]:
    """A well-formed OCSPRequest tree (RFC 6960 4.1.1) and its expected answer: one or several
    Requests, SHA-1 or SHA-256 CertIDs, nonces, understood and unknown extensions, critical or
    not, in requestExtensions and singleRequestExtensions."""
    count = 1 if rng.random() < 0.85 else rng.choice((0, 2, 3, 8))
    requests: list[Node] = []
    expect = Expect("malformedRequest")
    refused = False
    for _ in range(count):
        cert_id, expect = _cert_id(rng, target)
        single: list[Node] = [cert_id]
        if rng.random() < 0.2:
            extensions, critical = _extensions(rng, unknown_critical=True)
            single.append((0xA0, [extensions]))
            refused |= critical
        requests.append((der.SEQUENCE, single))
    tbs: list[Node] = [(der.SEQUENCE, requests)]
    if rng.random() < 0.5:
        extensions, critical = _extensions(rng, unknown_critical=rng.random() < 0.5)
        tbs.append((0xA2, [extensions]))
        refused |= critical
    if count != 1 or refused:
        expect = Expect("malformedRequest")
    return (der.SEQUENCE, [(der.SEQUENCE, tbs)]), expect


# --- mutations ---------------------------------------------------------------------------------


def _walk(node: Node, path: tuple[int, ...] = ()) -> list[tuple[tuple[int, ...], Node]]:
    found = [(path, node)]
    if not isinstance(node[1], bytes):
        for i, child in enumerate(node[1]):
            found += _walk(child, (*path, i))
    return found


def _replace(node: Node, path: tuple[int, ...], new: Node | None) -> Node:
    """A copy of the tree with the node at path replaced (None: removed)."""
    tag, value = node
    assert not isinstance(value, bytes)
    children = list(value)
    if len(path) == 1:
        if new is None:
            del children[path[0]]
        else:
            children[path[0]] = new
    else:
        children[path[0]] = _replace(children[path[0]], path[1:], new)
    return (tag, children)


def mutate_tree(rng: random.Random, root: Node) -> tuple[Node, str]:
    """One structural mutation: drop, duplicate, retag or re-fill an element, add a version,
    requestorName or signature, or nest deeply."""
    nodes = _walk(root)[1:]
    if not nodes or isinstance(root[1], bytes):
        return root, "none"
    path, node = rng.choice(nodes)
    kind = rng.choice(
        ("drop", "dup", "retag", "refill", "grow", "version", "signature", "nest", "empty")
    )
    tag, value = node
    if kind == "drop":
        return _replace(root, path, None), kind
    if kind == "dup":
        parent_path = path[:-1]
        parent = root if not parent_path else dict(_walk(root))[parent_path]
        assert not isinstance(parent[1], bytes)
        children = list(parent[1])
        children.insert(path[-1], node)
        new_parent: Node = (parent[0], children)
        return (new_parent if not parent_path else _replace(root, parent_path, new_parent)), kind
    if kind == "retag":
        return _replace(
            root,
            path,
            (
                rng.choice((0, 1, 2, 4, 5, 6, 0x30, 0x31, 0xA0, 0x80, 0xFF, rng.randrange(256))),
                value,
            ),
        ), kind
    if kind == "refill":
        return _replace(root, path, (tag, rng.randbytes(rng.choice((0, 1, 2, 20, 32, 300))))), kind
    if kind == "grow" and isinstance(value, bytes):
        return _replace(root, path, (tag, value * rng.randint(2, 50))), kind
    tbs = root[1][0]
    if kind == "version" and not isinstance(tbs[1], bytes):
        version: Node = (0xA0, [_integer(rng.choice((0, 1, 2, 255)))])
        name: Node = (0xA1, [(0xA4, [(der.SEQUENCE, [])])])
        extra = [version] if rng.random() < 0.5 else [version, name]
        return _replace(root, (0,), (tbs[0], [*extra, *tbs[1]])), kind
    if kind == "signature":
        signature: Node = (
            der.SEQUENCE,
            [
                (der.SEQUENCE, [_oid("1.2.840.10045.4.3.2")]),
                (der.BIT_STRING, b"\x00" + rng.randbytes(64)),
            ],
        )
        return (root[0], [*root[1], (0xA0, [signature])]), kind
    if kind == "nest" and max(len(p) for p, _ in nodes) < 100:  # encode() recurses
        deep: Node = node
        for _ in range(rng.randint(10, 150)):
            deep = (der.SEQUENCE, [deep])
        return _replace(root, path, deep), kind
    return _replace(root, path, (tag, [] if not isinstance(value, bytes) else b"")), "empty"


def _headers(data: bytes) -> list[int]:
    """Offsets of the length octet of every TLV reachable by a best-effort walk."""
    found: list[int] = []
    stack = [(0, len(data))]
    while stack and len(found) < 64:
        start, end = stack.pop()
        pos = start
        while pos < end:
            try:
                tag, inner, stop = der.read_tlv(data, pos)
            except ValueError:
                break
            found.append(pos + 1)
            if tag & 0x20:
                stack.append((inner, stop))
            pos = stop
    return found


def mutate_bytes(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """One byte-level mutation, aimed at the DER framing half the time."""
    buf = bytearray(data)
    kind = rng.choice(("flip", "set", "insert", "delete", "length", "length", "truncate", "append"))
    if not buf:
        return rng.randbytes(rng.randint(1, 20)), "random"
    at = rng.randrange(len(buf))
    if kind == "flip":
        buf[at] ^= 1 << rng.randrange(8)
    elif kind == "set":
        buf[at] = rng.choice((0x00, 0x7F, 0x80, 0x81, 0x84, 0xFF, rng.randrange(256)))
    elif kind == "insert":
        buf[at:at] = rng.randbytes(rng.randint(1, 8))
    elif kind == "delete":
        del buf[at : at + rng.randint(1, 8)]
    elif kind == "length":
        offsets = _headers(data)
        if offsets:
            at = rng.choice(offsets)
            forms = (
                bytes((rng.randrange(128),)),
                b"\x80",  # indefinite (BER, not DER)
                b"\x81" + bytes((rng.randrange(256),)),
                b"\x82\xff\xff",
                b"\x84\xff\xff\xff\xff",
                b"\x85\x01\x00\x00\x00\x00",
                b"\x88" + rng.randbytes(8),
                b"\x81\x05",  # non-minimal long form
            )
            old_end = at + 1 + (buf[at] & 0x7F if buf[at] & 0x80 else 0)
            buf[at:old_end] = rng.choice(forms)
    elif kind == "truncate":
        del buf[at:]
    else:
        buf += rng.randbytes(rng.randint(1, 64))
    return bytes(buf), kind


def ocsp_case(rng: random.Random, target: Target) -> OcspCase:
    """A request as sent: 40% exactly as built (checked against its oracle), the rest mutated
    by structure, by bytes, or both; 3% plain random bytes."""
    if rng.random() < 0.03:
        return OcspCase(rng.randbytes(rng.choice((1, 2, 16, 100, 1000))), None, "random")
    tree, expect = ocsp_request(rng, target)
    roll = rng.random()
    if roll < 0.4:
        return OcspCase(encode(tree), expect, f"built-{expect.response_status}")
    mutations = []
    if roll < 0.75:
        for _ in range(rng.randint(1, 3)):
            tree, kind = mutate_tree(rng, tree)
            mutations.append(kind)
    data = encode(tree)
    if roll >= 0.6:
        for _ in range(rng.randint(1, 4)):
            data, kind = mutate_bytes(rng, data)
            mutations.append(kind)
    return OcspCase(data, None, "mutated", mutations)


# --- how a request travels ---------------------------------------------------------------------


def get_target(rng: random.Random, request: bytes) -> tuple[str, bool]:
    """The GET path of a request with the quirks of R14 (clean: it must decode to the request)
    and some that are simply wrong (not clean)."""
    text = base64.b64encode(request).decode()
    roll = rng.random()
    if roll < 0.5:
        return "/" + base64.urlsafe_b64encode(request).decode().rstrip("="), True
    if roll < 0.65:
        return "/" + quote(text, safe=""), True
    if roll < 0.75:
        return "//" + text, True
    if roll < 0.82:
        return "/" + quote(text.replace("+", " "), safe="/"), True
    if roll < 0.9:
        suffix = rng.choice(("%0A", "%0D%0A", ".crl", "?x=1", "#f", "%", "%zz"))
        return "/" + text + suffix, suffix in ("%0A", "%0D%0A")
    chars = bytearray(("/" + text).encode())
    for _ in range(rng.randint(1, 4)):
        chars[rng.randrange(len(chars))] = rng.choice(b"%/+=-_.~!*'();:@&$,?#[] \x7f")
    return chars.decode("latin-1").replace(" ", "%20"), False


def http_request(method: str, target: str, body: bytes | None = None, extra: str = "") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}"
    if body is None:
        return (head + "\r\n").encode("latin-1")
    head += "Content-Type: application/ocsp-request\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body


def _chunked(rng: random.Random, body: bytes, broken: bool) -> tuple[bytes, str]:
    pieces = []
    pos = 0
    while pos < len(body):
        size = rng.randint(1, max(1, len(body) - pos))
        extension = ";x=y" if rng.random() < 0.1 else ""
        pieces.append(b"%x%s\r\n%s\r\n" % (size, extension.encode(), body[pos : pos + size]))
        pos += size
    end = b"0\r\n\r\n" if rng.random() < 0.9 else b"0\r\nX-Trailer: 1\r\n\r\n"
    kind = "chunked"
    if broken:
        fault = rng.choice(("size", "negative", "huge", "long", "short", "no-end", "space"))
        kind = f"chunked-{fault}"
        bad = {
            "size": b"zz\r\n" + body + b"\r\n",
            "negative": b"-5\r\nhello\r\n",
            "huge": b"ffffffffffffffffff\r\n" + body + b"\r\n",
            "long": b"%x\r\n%s\r\n" % (max(len(body) - 3, 1), body),
            "short": b"%x\r\n%s\r\n" % (len(body) + 3, body),
            "no-end": b"",
            "space": b"%x \r\n%s\r\n" % (len(body), body),
        }[fault]
        pieces.insert(rng.randint(0, len(pieces)), bad)
        if fault == "no-end":
            end = b""
    return b"".join(pieces) + end, kind


@dataclass
class RawCase:
    """Bytes sent on a fresh connection; `answers` the number of answers to wait for at most."""

    data: bytes
    answers: int
    label: str


def raw_case(rng: random.Random, request: bytes) -> RawCase:
    """An HTTP/1.1 message with odd or broken framing, carrying an OCSP request."""
    request = request or b"\x30\x00"
    kind = rng.choices(
        (
            "chunked",
            "chunked-bad",
            "pipelined",
            "length",
            "method",
            "version",
            "header-flood",
            "header-odd",
            "target",
            "expect",
            "random",
        ),
        weights=(8, 10, 10, 6, 8, 6, 4, 8, 8, 3, 4),
    )[0]
    head = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/ocsp-request\r\n"
    if kind in ("chunked", "chunked-bad"):
        body, label = _chunked(rng, request, broken=kind == "chunked-bad")
        te = rng.choice(("chunked", "chunked", "Chunked", "gzip, chunked", " chunked"))
        return RawCase((head + f"Transfer-Encoding: {te}\r\n\r\n").encode() + body, 1, label)
    if kind == "pipelined":
        count = rng.randint(2, 12)
        parts = []
        for _ in range(count):
            if rng.random() < 0.5:
                parts.append(http_request("GET", "/" + base64.b64encode(request).decode()))
            else:
                parts.append(http_request("POST", "/", request))
        if rng.random() < 0.3:
            parts.append(http_request("POST", "/", request)[: -rng.randint(1, len(request))])
        return RawCase(b"".join(parts), count, f"pipelined-{min(count, 12)}")
    if kind == "length":
        fault = rng.choice(("shorter", "longer", "text", "negative", "two", "both", "huge", "sign"))
        size = len(request)
        value = {
            "shorter": str(max(size - rng.randint(1, size), 0)),
            "longer": str(size + rng.randint(1, 100)),
            "text": "abc",
            "negative": "-1",
            "two": f"{size}\r\nContent-Length: {size + 1}",
            "both": f"{size}\r\nTransfer-Encoding: chunked",
            "huge": "99999999999999999999999",
            "sign": f"+{size}",
        }[fault]
        return RawCase(
            (head + f"Content-Length: {value}\r\n\r\n").encode() + request, 2, f"cl-{fault}"
        )
    if kind == "method":
        method = rng.choice(
            (
                "PUT",
                "DELETE",
                "OPTIONS",
                "TRACE",
                "PATCH",
                "get",
                "CONNECT",
                "PRI",
                "M" * 300,
                "GE T",
                "PROPFIND",
                "\x00GET",
                "POST\t",
            )
        )
        target = "127.0.0.1:80" if method == "CONNECT" else "/"
        sent = request if rng.random() < 0.5 else None
        return RawCase(http_request(method, target, sent), 1, f"method-{method[:10].strip()}")
    if kind == "version":
        version = rng.choice(("HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "HTTP/1.1x", "", "http/1.1"))
        line = f"GET /{base64.b64encode(request).decode()} {version}".rstrip()
        return RawCase(f"{line}\r\nHost: x\r\n\r\n".encode(), 1, f"version-{version or 'none'}")
    if kind == "header-flood":
        fault = rng.choice(("many", "one-big", "total"))
        if fault == "many":
            extra = "".join(f"X-H{i}: {i}\r\n" for i in range(rng.choice((99, 101, 500, 2000))))
        elif fault == "one-big":
            extra = "X-Big: " + "a" * rng.choice((8_000, 70_000, 200_000)) + "\r\n"
        else:
            extra = "".join(f"X-H{i}: {'b' * 1000}\r\n" for i in range(rng.choice((60, 90))))
        return RawCase(http_request("POST", "/", request, extra), 1, f"headers-{fault}")
    if kind == "header-odd":
        fault = rng.choice(("no-colon", "space-colon", "fold", "nul", "lf", "no-host", "utf8"))
        extra = {
            "no-colon": "X-Broken\r\n",
            "space-colon": "X-Space : 1\r\n",
            "fold": "X-Fold: a\r\n  b\r\n",
            "nul": "X-Nul: a\x00b\r\n",
            "lf": "",
            "no-host": "",
            "utf8": "X-Utf8: \xe9\xff\r\n",
        }[fault]
        data = http_request("POST", "/", request, extra)
        if fault == "lf":
            head_end = data.index(b"\r\n\r\n") + 4
            data = data[:head_end].replace(b"\r\n", b"\n") + data[head_end:]
        elif fault == "no-host":
            data = data.replace(b"Host: 127.0.0.1\r\n", b"")
        return RawCase(data, 1, f"header-{fault}")
    if kind == "target":
        fault = rng.choice(("absolute", "star", "long", "huge", "nul", "empty", "dots"))
        path = "/" + base64.b64encode(request).decode()
        target = {
            "absolute": "http://127.0.0.1" + path,
            "star": "*",
            "long": "/" + "A" * 5_000,
            "huge": "/" + "M" * 70_000,
            "nul": path[:10] + "%00" + path[10:],
            "empty": "",
            "dots": "/../../etc/passwd",
        }[fault]
        return RawCase(http_request("GET", target), 1, f"target-{fault}")
    if kind == "expect":
        return RawCase(
            http_request("POST", "/", request, "Expect: 100-continue\r\n"), 1, "expect-100"
        )
    data = rng.randbytes(rng.randint(1, 2000))
    if rng.random() < 0.8:  # most end their "header block", or each would wait for a timeout
        data += b"\r\n\r\n"
    return RawCase(data, 1, "random-bytes")
