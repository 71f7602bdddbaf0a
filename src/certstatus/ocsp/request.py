"""Decoding OCSP requests from POST bodies and from GET paths with every quirk seen in the wild (R14).

Every failure is a MalformedRequest; nothing else escapes, whatever the bytes (property-tested).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import unquote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from certstatus import der
from certstatus.ocsp.certid import HashAlgorithm, IssuerKey
from certstatus.ocsp.plain import read_plain_request

# The largest request the decoder reads. It is also the upper bound of [responder] max_post_body
# (config.py refuses more), so the only cap a client meets is the configured one, answered 413.
MAX_POST_BODY = 10_000
MAX_GET_PATH = 4_096

_HASHES: dict[type[hashes.HashAlgorithm], HashAlgorithm] = {a.hash_class: a for a in HashAlgorithm}


class MalformedRequest(ValueError):
    """The request cannot be understood; answered with malformedRequest, never a traceback."""


@dataclass(frozen=True, slots=True)
class CertRequest:
    """The one certificate an OCSP request asks about. algorithm is None for a hash we do not serve."""

    algorithm: HashAlgorithm | None
    name_hash: bytes
    key_hash: bytes
    serial: int


def decode_get_path(raw_path: str) -> bytes:
    """Turn the path of an OCSP GET (RFC 6960 A.1) into request DER.

    Handles: percent-encoded or raw '+', '/', '='; '+' turned into ' ' by an intermediary; leading
    '//' from clients that join a base URL ending in '/'; trailing newlines; URL-safe base64;
    missing padding. A DER OCSPRequest begins with 0x30, so its base64 starts with 'M' and no
    legitimate request begins with '/'.
    """
    if len(raw_path) > MAX_GET_PATH:
        raise MalformedRequest("GET path too long")
    try:
        text = unquote(raw_path.lstrip("/"), encoding="ascii", errors="strict")
    except UnicodeDecodeError:
        raise MalformedRequest("percent-escape outside base64's alphabet") from None
    text = text.replace(" ", "+")
    text = "".join(text.split())
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text = text.rstrip("=")
    if not text:
        raise MalformedRequest("empty request")
    text += "=" * (-len(text) % 4)
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise MalformedRequest(f"GET path is not base64: {exc}") from None


def decode_request(request_der: bytes) -> CertRequest:
    """Parse an OCSPRequest holding exactly one Request; nonces and other extensions are ignored (R9).

    The shape nearly every client sends is read by hand (ocsp/plain.py); anything else, and
    every malformed request, goes through cryptography's parser (decode_request_fully)."""
    if not request_der or len(request_der) > MAX_POST_BODY:
        raise MalformedRequest("request empty or too large")
    plain = read_plain_request(request_der)
    if plain is not None:
        return CertRequest(*plain)
    return decode_request_fully(request_der)


def decode_request_fully(request_der: bytes) -> CertRequest:
    """decode_request with cryptography's parser for every request: the oracle the hand-read
    plain shape is tested against."""
    if not request_der or len(request_der) > MAX_POST_BODY:
        raise MalformedRequest("request empty or too large")
    try:
        request = ocsp.load_der_ocsp_request(request_der)
        serial = request.serial_number
        name_hash = request.issuer_name_hash
        key_hash = request.issuer_key_hash
    except Exception as exc:  # the parser's errors vary by version; all mean "malformed"
        raise MalformedRequest(f"not a single-certificate OCSP request: {exc}") from None
    try:
        algorithm = _HASHES.get(type(request.hash_algorithm))
    except Exception:  # an unknown hash OID: well-formed, but not a CertID we can have issued
        algorithm = None
    if serial < 0:
        raise MalformedRequest("negative serial number")
    unknown = unknown_critical_extensions(request_der)
    if unknown:
        raise MalformedRequest(f"critical extension not understood: {', '.join(unknown)}")
    return CertRequest(algorithm, name_hash, key_hash, serial)


# Request extensions this responder understands (RFC 6960 4.4, RFC 8954): it may ignore them,
# critical or not. Pre-signed responses carry no nonce (R9), so a nonce, even critical, is
# answered as any request is; the client decides what a response without one is worth.
UNDERSTOOD_EXTENSIONS = frozenset(
    {
        "1.3.6.1.5.5.7.48.1.2",  # id-pkix-ocsp-nonce
        "1.3.6.1.5.5.7.48.1.4",  # id-pkix-ocsp-response (acceptable responses: basic is ours)
        "1.3.6.1.5.5.7.48.1.7",  # id-pkix-ocsp-service-locator
        "1.3.6.1.5.5.7.48.1.8",  # id-pkix-ocsp-pref-sig-algs
    }
)


def unknown_critical_extensions(request_der: bytes) -> list[str]:
    """OIDs of critical extensions this responder does not understand, in the request's
    requestExtensions and in its Request's singleRequestExtensions. RFC 6960 4.1.2: a critical
    extension that is not understood means the request cannot be answered as asked, so it is
    malformedRequest, never a successful answer that ignores it.

    The DER was already accepted by cryptography's parser (called first), which does not
    expose singleRequestExtensions; this walks the structure itself:
    OCSPRequest { TBSRequest { [0] version, [1] requestorName, requestList SEQUENCE OF
    Request { CertID, [0] singleRequestExtensions }, [2] requestExtensions }, [0] signature }."""
    try:
        _, start, end = der.read_tlv(request_der)
        [tbs, *_] = der.elements(request_der, start, end)
        lists: list[tuple[int, int]] = []
        for tag, _, inner, stop in der.elements(request_der, tbs[2], tbs[3]):
            if tag == der.SEQUENCE:  # requestList
                for _, _, r_start, r_end in der.elements(request_der, inner, stop):
                    for r_tag, _, e_start, e_end in der.elements(request_der, r_start, r_end):
                        if r_tag == 0xA0:
                            lists.append((e_start, e_end))
            elif tag == 0xA2:
                lists.append((inner, stop))
        unknown = []
        for e_start, e_end in lists:
            [(_, _, x_start, x_end)] = der.elements(request_der, e_start, e_end)
            for _, _, f_start, f_end in der.elements(request_der, x_start, x_end):
                fields = der.elements(request_der, f_start, f_end)
                oid_tlv, critical = fields[0], fields[1] if len(fields) == 3 else None
                if critical is None or request_der[critical[1] : critical[3]] != der.BOOLEAN_TRUE:
                    continue
                dotted = der.oid_text(request_der[oid_tlv[2] : oid_tlv[3]])
                if dotted not in UNDERSTOOD_EXTENSIONS:
                    unknown.append(dotted)
        return unknown
    except (ValueError, IndexError) as exc:
        raise MalformedRequest(f"request extensions cannot be read: {exc}") from None


def encode_request(issuer: IssuerKey, serial: int) -> bytes:
    """The DER OCSPRequest a client sends for one serial, its CertID under the issuer key's
    hash algorithm: what the monitor, the drills and the benchmarks ask with."""
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        issuer.name_hash, issuer.key_hash, serial, issuer.algorithm.hash_class()
    )
    return builder.build().public_bytes(serialization.Encoding.DER)


def get_path(request_der: bytes) -> str:
    """The GET path for a request (RFC 6960 A.1) in the URL-safe alphabet without padding:
    decode_get_path reads it (R14) and it is a plain file name, for nginx in the benchmarks."""
    return "/" + base64.urlsafe_b64encode(request_der).decode("ascii").rstrip("=")
