"""OCSP request decoding: every GET quirk of R14, POST bodies, and property tests showing that no
input makes the decoder raise anything but MalformedRequest."""

from __future__ import annotations

import base64
import contextlib
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from hypothesis import given, settings
from hypothesis import strategies as st

from certstatus.demo.ca import DemoCA
from certstatus.ocsp.certid import HashAlgorithm, issuer_keys
from certstatus.ocsp.request import (
    CertRequest,
    MalformedRequest,
    decode_get_path,
    decode_request,
    encode_request,
    get_path,
)

CA = DemoCA.create()


def request_der(
    serial: int, algorithm: hashes.HashAlgorithm | None = None, nonce: bytes | None = None
) -> bytes:
    algorithm = algorithm or hashes.SHA1()
    keys = issuer_keys(CA.certificate)[
        HashAlgorithm.SHA1 if isinstance(algorithm, hashes.SHA1) else HashAlgorithm.SHA256
    ]
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        keys.name_hash, keys.key_hash, serial, algorithm
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def find_request_with(chars: str) -> bytes:
    """A request whose base64 contains all of chars, so each quirk is really exercised."""
    for serial in range(1, 100_000):
        der = request_der(serial)
        text = base64.b64encode(der).decode()
        if all(c in text for c in chars):
            return der
    raise AssertionError("no such serial")


DER = find_request_with("+/=")
B64 = base64.b64encode(DER).decode()


@pytest.mark.parametrize(
    "path",
    [
        "/" + B64,  # raw + / =
        "/" + quote(B64, safe=""),  # percent-encoded
        "/" + B64.replace("+", " "),  # '+' turned into ' ' by an intermediary
        "/" + quote(B64.replace("+", " "), safe="/"),  # ... then encoded as %20
        "//" + B64,  # leading '//'
        "/" + B64 + "\n",  # trailing newline
        "/" + quote(B64 + "\r\n", safe=""),  # percent-encoded trailing CRLF
        "/" + base64.urlsafe_b64encode(DER).decode(),  # URL-safe alphabet
        "/" + B64.rstrip("="),  # padding dropped
        "/" + B64.replace("=", "%3d"),  # lower-case percent escape
    ],
)
def test_get_quirks_all_decode_to_the_same_request_r14(path: str) -> None:
    assert decode_get_path(path) == DER
    assert decode_request(decode_get_path(path)).serial == decode_request(DER).serial


@pytest.mark.parametrize("path", ["/", "//", "/!!!!", "/" + "A" * 5000, "/%zz", "/%ff%fe"])
def test_undecodable_get_paths_are_malformed_r14(path: str) -> None:
    with pytest.raises(MalformedRequest):
        decode_request(decode_get_path(path))


def test_sha1_and_sha256_certids_are_recognised_r8() -> None:
    assert decode_request(request_der(5)).algorithm is HashAlgorithm.SHA1
    sha256 = decode_request(request_der(5, hashes.SHA256()))
    assert sha256.algorithm is HashAlgorithm.SHA256
    assert sha256.name_hash == issuer_keys(CA.certificate)[HashAlgorithm.SHA256].name_hash


def test_other_hash_is_decoded_but_not_served() -> None:
    request_ = (
        ocsp.OCSPRequestBuilder()
        .add_certificate_by_hash(b"n" * 48, b"k" * 48, 5, hashes.SHA384())
        .build()
        .public_bytes(serialization.Encoding.DER)
    )
    request = decode_request(request_)
    assert request.algorithm is None and request.serial == 5


def test_nonce_is_ignored_r9() -> None:
    assert decode_request(request_der(77, nonce=b"x" * 32)).serial == 77


def test_request_for_two_certificates_is_malformed() -> None:
    # Splice a second Request into requestList: single-certificate requests only (RFC 9919 2.1).
    der = request_der(9)
    assert decode_request(der).serial == 9
    with pytest.raises(MalformedRequest):
        decode_request(der[:-2] + b"\x00" * 3)


def test_oversized_body_is_malformed() -> None:
    with pytest.raises(MalformedRequest):
        decode_request(b"\x30" + b"\x00" * 20_000)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_escape_the_decoder(data: bytes) -> None:
    with contextlib.suppress(MalformedRequest):
        decode_request(data)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_get_paths_never_escape_the_decoder(path: str) -> None:
    with contextlib.suppress(MalformedRequest):
        decode_request(decode_get_path(path))


@settings(max_examples=200, deadline=None)
@given(
    serial=st.integers(min_value=0, max_value=(1 << 159) - 1),
    sha256=st.booleans(),
    quirk=st.sampled_from(["raw", "quoted", "space", "urlsafe", "slashes", "newline"]),
)
def test_valid_requests_round_trip(serial: int, sha256: bool, quirk: str) -> None:
    der = request_der(serial, hashes.SHA256() if sha256 else hashes.SHA1())
    text = base64.b64encode(der).decode()
    path = {
        "raw": "/" + text,
        "quoted": "/" + quote(text, safe=""),
        "space": "/" + text.replace("+", " "),
        "urlsafe": "/" + base64.urlsafe_b64encode(der).decode(),
        "slashes": "//" + text,
        "newline": "/" + text + "\n",
    }[quirk]
    request = decode_request(decode_get_path(path))
    assert request.serial == serial
    assert request.algorithm is (HashAlgorithm.SHA256 if sha256 else HashAlgorithm.SHA1)


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=2**159 - 1), st.sampled_from(list(HashAlgorithm)))
def test_encoded_requests_decode_back_r14(serial: int, algorithm: HashAlgorithm) -> None:
    """encode_request and get_path (the monitor's, drills' and benchmarks' requests) produce
    what the decoder reads back, and cryptography agrees on the CertID."""
    keys = issuer_keys(CA.certificate)[algorithm]
    der = encode_request(keys, serial)
    parsed = ocsp.load_der_ocsp_request(der)
    assert (parsed.serial_number, parsed.issuer_key_hash) == (serial, keys.key_hash)
    path = get_path(der)
    assert "=" not in path and "+" not in path and "/" not in path[1:]
    assert decode_request(decode_get_path(path)) == CertRequest(
        algorithm, keys.name_hash, keys.key_hash, serial
    )


# Critical extensions (RFC 6960 4.1.2 and 4.4) --------------------------------------------------

UNKNOWN = x509.ObjectIdentifier("1.2.3.4.5")


def with_extension(critical: bool, oid: x509.ObjectIdentifier = UNKNOWN, nonce: bool = False):
    keys = issuer_keys(CA.certificate)[HashAlgorithm.SHA1]
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        keys.name_hash, keys.key_hash, 7, hashes.SHA1()
    )
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(b"n" * 16), critical=critical)
    else:
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, b"\x05\x00"), critical)
    return builder.build().public_bytes(serialization.Encoding.DER)


def with_single_extension(critical: bool) -> bytes:
    """A request whose one Request carries singleRequestExtensions ([0] after the CertID),
    which cryptography's builder cannot write: built from the DER helpers."""
    from certstatus import der

    plain = request_der(7)
    _, start, end = der.read_tlv(plain)
    [tbs] = der.elements(plain, start, end)
    [request_list] = der.elements(plain, tbs[2], tbs[3])
    [request] = der.elements(plain, request_list[2], request_list[3])
    cert_id = plain[request[2] : request[3]]
    extension = der.sequence(
        der.oid("1.2.3.4.5"),
        *((der.BOOLEAN_TRUE,) if critical else ()),
        der.octet_string(b"\x05\x00"),
    )
    single = der.sequence(cert_id, der.explicit(0, der.sequence(extension)))
    return der.sequence(der.sequence(der.sequence(single)))


def test_unknown_critical_request_extension_is_malformed_r9() -> None:
    assert decode_request(with_extension(critical=False)).serial == 7  # ignored (RFC 6960 4.4)
    with pytest.raises(MalformedRequest, match=r"critical extension not understood: 1\.2\.3\.4\.5"):
        decode_request(with_extension(critical=True))


def test_unknown_critical_single_request_extension_is_malformed() -> None:
    assert ocsp.load_der_ocsp_request(with_single_extension(True)).serial_number == 7  # valid DER
    assert decode_request(with_single_extension(critical=False)).serial == 7
    with pytest.raises(MalformedRequest, match="critical extension not understood"):
        decode_request(with_single_extension(critical=True))


def test_a_critical_nonce_is_understood_and_answered_r9() -> None:
    """R9: a request with a nonce is answered with the pre-signed response, critical or not."""
    assert decode_request(with_extension(critical=True, nonce=True)).serial == 7


@given(st.lists(st.integers(0, 2**40), min_size=1, max_size=8), st.integers(0, 2))
def test_oid_text_reads_back_what_oid_writes(arcs: list[int], first: int) -> None:
    from certstatus import der

    second = arcs[0] % 40 if first < 2 else arcs[0]
    dotted = ".".join(str(a) for a in (first, second, *arcs[1:]))
    encoded = der.oid(dotted)
    assert der.oid_text(encoded[2:] if encoded[1] < 0x80 else encoded[3:]) == dotted


# The plain shape read by hand (ocsp/plain.py), held to cryptography's parser -----------------


def _agrees_with_the_full_parser(data: bytes) -> None:
    """Whatever the hand reader returns, cryptography's path returns the same; when it steps
    aside (None), decode_request gives exactly the full path's answer or error."""
    from certstatus.ocsp.plain import read_plain_request
    from certstatus.ocsp.request import decode_request_fully

    plain = read_plain_request(data)
    if plain is not None:
        assert decode_request_fully(data) == CertRequest(*plain)
    try:
        expected: object = decode_request_fully(data)
    except MalformedRequest:
        expected = MalformedRequest
    try:
        got: object = decode_request(data)
    except MalformedRequest:
        got = MalformedRequest
    assert got == expected


def _without_null_parameters(data: bytes) -> bytes:
    """The same request with its AlgorithmIdentifier's NULL parameters left out (allowed)."""
    from certstatus import der

    for body, oid in ((b"\x2b\x0e\x03\x02\x1a", "1.3.14.3.2.26"),):
        old = der.sequence(der.oid(oid), der.tlv(der.NULL, b""))
        assert body in old
        if old in data:
            new = der.sequence(der.oid(oid))
            shrink = len(old) - len(new)
            # every enclosing SEQUENCE is short-form here: shrink each length byte on the way
            head = bytearray(data[: data.index(old)])
            for offset in (1, 3, 5, 7, 9):
                head[offset] -= shrink
            return bytes(head) + new + data[data.index(old) + len(old) :]
    raise AssertionError("no SHA-1 AlgorithmIdentifier")


def test_the_requests_clients_send_are_read_by_hand() -> None:
    """The fast path is taken for what OpenSSL, browsers and our own tools send, nonce or not;
    otherwise it would be measured but never used."""
    from certstatus.ocsp.plain import read_plain_request

    for data in (
        request_der(12345),
        request_der(2**158 + 3, hashes.SHA256()),
        request_der(0),
        request_der(128),
        request_der(77, nonce=b"x" * 32),
        with_extension(critical=False),
        _without_null_parameters(request_der(99)),
    ):
        assert read_plain_request(data) is not None, data.hex()
        _agrees_with_the_full_parser(data)
    for unusual in (
        with_extension(critical=True),
        with_extension(critical=True, nonce=True),
        with_single_extension(critical=False),
        request_der(9)[:-2] + b"\x00" * 3,
    ):
        assert read_plain_request(unusual) is None, unusual.hex()
        _agrees_with_the_full_parser(unusual)


@settings(max_examples=300, deadline=None)
@given(
    serial=st.integers(min_value=0, max_value=(1 << 159) - 1),
    sha256=st.booleans(),
    nonce=st.one_of(st.none(), st.binary(min_size=1, max_size=40)),
)
def test_hand_reading_agrees_with_cryptography_on_valid_requests(
    serial: int, sha256: bool, nonce: bytes | None
) -> None:
    data = request_der(serial, hashes.SHA256() if sha256 else hashes.SHA1(), nonce)
    from certstatus.ocsp.plain import read_plain_request

    assert read_plain_request(data) is not None
    _agrees_with_the_full_parser(data)


@settings(max_examples=1500, deadline=None)
@given(
    base=st.sampled_from(
        [
            request_der(1),
            request_der(0x7F),
            request_der(0x80),
            request_der(2**64 + 1, hashes.SHA256()),
            request_der(5, nonce=b"n" * 16),
            with_extension(critical=False),
            with_extension(critical=True),
        ]
    ),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["set", "insert", "delete"]), st.integers(0, 200), st.integers(0, 255)
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_hand_reading_agrees_with_cryptography_on_damaged_requests(
    base: bytes, edits: list[tuple[str, int, int]]
) -> None:
    """Bytes changed, inserted or removed anywhere (lengths, tags, the OID, the serial's sign
    and padding): the hand reader either steps aside or agrees with cryptography."""
    data = bytearray(base)
    for kind, position, value in edits:
        position %= len(data) + (kind == "insert")
        if kind == "set" and data:
            data[position % len(data)] = value
        elif kind == "insert":
            data.insert(position, value)
        elif data:
            del data[position % len(data)]
    _agrees_with_the_full_parser(bytes(data))
