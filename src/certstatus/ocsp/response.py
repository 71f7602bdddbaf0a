"""Building and signing OCSP responses (RFC 6960 4.2) by concatenating DER.

One SingleResponse per response (R8), responderID byKey, whole-second GeneralizedTime, nextUpdate
always present, no nonce (R9). The responses for one issuer differ only in serial, status and
times, so everything else is encoded once per issuer in ResponseBuilder.__init__.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certstatus import der
from certstatus.keys.base import SigningKey
from certstatus.ocsp.certid import HashAlgorithm, issuer_keys, subject_public_key_bits
from certstatus.ocsp.reasons import encoded_reason

ID_PKIX_OCSP_BASIC = der.oid("1.3.6.1.5.5.7.48.1.1")


class ResponseStatus(IntEnum):
    SUCCESSFUL = 0
    MALFORMED_REQUEST = 1
    INTERNAL_ERROR = 2
    TRY_LATER = 3
    UNAUTHORIZED = 6


def _error_response(status: ResponseStatus) -> bytes:
    return der.sequence(der.enumerated(status))


# Built once: the unsigned error answers are the same bytes for every request.
MALFORMED_REQUEST = _error_response(ResponseStatus.MALFORMED_REQUEST)
INTERNAL_ERROR = _error_response(ResponseStatus.INTERNAL_ERROR)
TRY_LATER = _error_response(ResponseStatus.TRY_LATER)
UNAUTHORIZED = _error_response(ResponseStatus.UNAUTHORIZED)

_GOOD = b"\x80\x00"  # [0] IMPLICIT NULL
_SUCCESSFUL = der.enumerated(ResponseStatus.SUCCESSFUL)


@dataclass(frozen=True, slots=True)
class CertStatus:
    """What a response says about a certificate: good, or revoked at a time for a reason."""

    revoked: bool = False
    revocation_time: int | None = None
    reason: int | None = None

    def encode(self, time_der: dict[int, bytes]) -> bytes:
        if not self.revoked:
            return _GOOD
        if self.revocation_time is None:
            raise ValueError("a revoked status needs a revocation time (R7)")
        info = _time(time_der, self.revocation_time)
        code = encoded_reason(self.reason or 0)
        if code is not None:
            info += der.explicit(0, der.enumerated(code))
        return der.tlv(0xA1, info)  # revoked [1] IMPLICIT RevokedInfo


def _time(cache: dict[int, bytes], unix_seconds: int) -> bytes:
    encoded = cache.get(unix_seconds)
    if encoded is None:
        encoded = cache[unix_seconds] = der.generalized_time(unix_seconds)
    return encoded


class ResponseBuilder:
    """Signs responses for one issuer with its delegated responder (or the issuer itself).

    Every DER header of a response depends only on the lengths of what it wraps. Within one
    signing batch the serial's length takes a handful of values, the status and times are
    shared by every good certificate, and an ECDSA signature is 70 to 72 bytes, so `sign` and
    `sign_both` splice the serial and the signature between byte strings cached per length
    (built by `tbs_response_data` and `envelope`, the header-by-header reference path, on a
    miss). Measured: 20-22 us per response over the P-256 signature before, 7.6 us with the
    caches, of which 3 us is this code (docs/benchmarks.md, issue 15).
    """

    _CACHE_LIMIT = 4096  # entries per cache; emptied when passed (times move on every batch)

    def __init__(
        self,
        issuer: x509.Certificate,
        responder: x509.Certificate,
        key: SigningKey,
        include_responder_certificate: bool = True,
    ) -> None:
        self.key = key
        self._certid_prefix = {
            alg: alg.algorithm_identifier
            + der.octet_string(keys.name_hash)
            + der.octet_string(keys.key_hash)
            for alg, keys in issuer_keys(issuer).items()
        }
        key_hash = hashlib.sha1(subject_public_key_bits(responder)).digest()
        self._responder_id = der.explicit(2, der.octet_string(key_hash))  # byKey
        certs = certs_field(issuer, responder) if include_responder_certificate else b""
        self._certs = certs
        self._certs_len = len(certs)
        self._sig_alg_len = len(key.algorithm_identifier)
        self._times: dict[int, bytes] = {}
        self._tails: dict[tuple[bool, int | None, int | None, int, int], bytes] = {}
        # tbsResponseData up to the serial, per (serial length, tail length, producedAt)
        self._heads: dict[HashAlgorithm, dict[tuple[int, int, int], bytes]] = {
            alg: {} for alg in self._certid_prefix
        }
        self._sha1_heads = self._heads[HashAlgorithm.SHA1]
        self._sha256_heads = self._heads[HashAlgorithm.SHA256]
        # (what precedes tbsResponseData, what lies between it and the signature value),
        # per (tbsResponseData length, signature length)
        self._envelopes: dict[tuple[int, int], tuple[bytes, bytes]] = {}

    def _single_tail(self, status: CertStatus, this_update: int, next_update: int) -> bytes:
        return self.single_tail(
            status.revoked, status.revocation_time, status.reason, this_update, next_update
        )

    def single_tail(
        self,
        revoked: bool,
        revocation_time: int | None,
        reason: int | None,
        this_update: int,
        next_update: int,
    ) -> bytes:
        """certStatus, thisUpdate and nextUpdate: the same bytes for every good response signed
        in one batch, so they are encoded once and reused."""
        key = (revoked, revocation_time, reason, this_update, next_update)
        tail = self._tails.get(key)
        if tail is None:
            if len(self._tails) > self._CACHE_LIMIT:
                self._tails.clear()
                self._times.clear()
            times = self._times
            status = CertStatus(revoked, revocation_time, reason)
            tail = self._tails[key] = (
                status.encode(times)
                + _time(times, this_update)
                + der.explicit(0, _time(times, next_update))
            )
        return tail

    def tbs_response_data(
        self,
        algorithm: HashAlgorithm,
        serial: int,
        status: CertStatus,
        this_update: int,
        next_update: int,
        produced_at: int,
    ) -> bytes:
        """ResponseData with one SingleResponse, every header computed from lengths: the
        reference the cached path of `sign` is checked against."""
        return self._tbs_from_parts(
            algorithm,
            der.integer(serial),
            self._single_tail(status, this_update, next_update),
            produced_at,
        )

    def _tbs_from_parts(
        self, algorithm: HashAlgorithm, serial_der: bytes, tail: bytes, produced_at: int
    ) -> bytes:
        prefix = self._certid_prefix[algorithm]
        produced = _time(self._times, produced_at)
        cert_id_len = len(prefix) + len(serial_der)
        cert_id_hdr = der.header(der.SEQUENCE, cert_id_len)
        single_len = len(cert_id_hdr) + cert_id_len + len(tail)
        single_hdr = der.header(der.SEQUENCE, single_len)
        responses_len = len(single_hdr) + single_len
        responses_hdr = der.header(der.SEQUENCE, responses_len)
        body_len = len(self._responder_id) + len(produced) + len(responses_hdr) + responses_len
        return b"".join(
            (
                der.header(der.SEQUENCE, body_len),
                self._responder_id,
                produced,
                responses_hdr,
                single_hdr,
                cert_id_hdr,
                prefix,
                serial_der,
                tail,
            )
        )

    def envelope(self, tbs: bytes, signature: bytes) -> bytes:
        """The complete OCSPResponse around a signed tbsResponseData, every header computed
        from lengths: the reference the cached path of `sign` is checked against."""
        before, between = self._envelope_parts(len(tbs), len(signature))
        return b"".join((before, tbs, between, signature, self._certs))

    def _envelope_parts(self, tbs_len: int, signature_len: int) -> tuple[bytes, bytes]:
        """What precedes tbsResponseData (OCSPResponse down to BasicOCSPResponse's header) and
        what lies between it and the signature value (signatureAlgorithm, the BIT STRING's
        header and its unused-bits octet); the responder certificate follows the signature."""
        bits_hdr = der.header(der.BIT_STRING, signature_len + 1)
        basic_len = tbs_len + self._sig_alg_len + len(bits_hdr) + 1 + signature_len
        basic_len += self._certs_len
        basic_hdr = der.header(der.SEQUENCE, basic_len)
        octets_len = len(basic_hdr) + basic_len
        octets_hdr = der.header(der.OCTET_STRING, octets_len)
        bytes_len = len(ID_PKIX_OCSP_BASIC) + len(octets_hdr) + octets_len
        bytes_hdr = der.header(der.SEQUENCE, bytes_len)
        explicit_len = len(bytes_hdr) + bytes_len
        explicit_hdr = der.header(0xA0, explicit_len)
        outer_len = len(_SUCCESSFUL) + len(explicit_hdr) + explicit_len
        before = b"".join(
            (
                der.header(der.SEQUENCE, outer_len),
                _SUCCESSFUL,
                explicit_hdr,
                bytes_hdr,
                ID_PKIX_OCSP_BASIC,
                octets_hdr,
                basic_hdr,
            )
        )
        return before, self.key.algorithm_identifier + bits_hdr + b"\x00"

    def sign_reference(
        self,
        algorithm: HashAlgorithm,
        serial: int,
        status: CertStatus,
        this_update: int,
        next_update: int,
        produced_at: int,
    ) -> bytes:
        """`sign` without the length caches: every header computed for this response."""
        tbs = self.tbs_response_data(
            algorithm, serial, status, this_update, next_update, produced_at
        )
        return self.envelope(tbs, self.key.sign(tbs))

    def sign(
        self,
        algorithm: HashAlgorithm,
        serial: int,
        status: CertStatus,
        this_update: int,
        next_update: int,
        produced_at: int,
    ) -> bytes:
        """A complete, signed OCSPResponse for one certificate under one CertID hash."""
        tail = self._single_tail(status, this_update, next_update)
        signed = self._signed(
            algorithm, self._heads[algorithm], _serial_der(serial), tail, produced_at
        )
        return signed + self._certs

    @property
    def certs(self) -> bytes:
        """The BasicOCSPResponse `certs` field ([0] with the responder certificate) that ends
        every response of this builder; empty when the issuer signs for itself."""
        return self._certs

    def sign_both(
        self,
        serial: int,
        revoked: bool,
        revocation_time: int | None,
        reason: int | None,
        this_update: int,
        next_update: int,
        produced_at: int,
        certs: bool = True,
        sha256: bool = True,
    ) -> tuple[bytes, bytes]:
        """The SHA-1 and SHA-256 CertID responses of one certificate, sharing the serial's and
        the status's encoding. With certs=False each stops before the trailing `certs` field:
        what the signer stores, since that field is the same for every response of a
        responder certificate and would be 60 % of each row (the store appends it on reading).
        With sha256=False the SHA-256 one is not signed (b""): a deployment that signs it only
        once a client asks for it.
        """
        serial_der = _serial_der(serial)
        tail = self.single_tail(revoked, revocation_time, reason, this_update, next_update)
        sha1 = self._signed(HashAlgorithm.SHA1, self._sha1_heads, serial_der, tail, produced_at)
        second = (
            self._signed(HashAlgorithm.SHA256, self._sha256_heads, serial_der, tail, produced_at)
            if sha256
            else b""
        )
        if certs and self._certs:
            return sha1 + self._certs, second and second + self._certs
        return sha1, second

    def _signed(
        self,
        algorithm: HashAlgorithm,
        heads: dict[tuple[int, int, int], bytes],
        serial_der: bytes,
        tail: bytes,
        produced_at: int,
    ) -> bytes:
        shape = (len(serial_der), len(tail), produced_at)
        head = heads.get(shape)
        if head is None:
            # everything before the serial depends only on these lengths and producedAt
            if len(heads) > self._CACHE_LIMIT:
                heads.clear()
            reference = self._tbs_from_parts(algorithm, serial_der, tail, produced_at)
            head = heads[shape] = reference[: len(reference) - len(serial_der) - len(tail)]
        tbs = head + serial_der + tail
        signature = self.key.sign(tbs)
        lengths = (len(tbs), len(signature))
        around = self._envelopes.get(lengths)
        if around is None:
            if len(self._envelopes) > self._CACHE_LIMIT:
                self._envelopes.clear()
            around = self._envelopes[lengths] = self._envelope_parts(*lengths)
        return b"".join((around[0], tbs, around[1], signature))


def certs_field(issuer: x509.Certificate, responder: x509.Certificate) -> bytes:
    """BasicOCSPResponse's `certs` for a delegated responder ([0] EXPLICIT SEQUENCE OF
    Certificate, RFC 6960 4.2.1), so a client can check the signature without fetching the
    responder certificate; empty when the issuer signs its own responses."""
    if responder == issuer:
        return b""
    return der.explicit(0, der.sequence(responder.public_bytes(serialization.Encoding.DER)))


def _serial_der(serial: int) -> bytes:
    """der.integer for a certificate serial: at most 20 octets (RFC 5280 4.1.2.2), so the
    short length form, written directly; longer ones take the general path."""
    if serial < 0:
        raise ValueError("negative integers are not used in OCSP serials")
    body = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
    if len(body) >= 0x80:
        return der.integer(serial)
    return bytes((der.INTEGER, len(body))) + body


_CERT_STATUS = {0x80: "good", 0xA1: "revoked", 0x82: "unknown"}


def cert_status_of(response_der: bytes) -> str:
    """ "good", "revoked" or "unknown" of a successful response's first SingleResponse, read
    by hopping over DER headers without parsing the rest (metrics count it per answer, so
    it is a measured hot path; cryptography's parser is its oracle in the tests).

    OCSPResponse > [0] > ResponseBytes > OCTET STRING > BasicOCSPResponse > tbsResponseData
    > responses (after optional [0] version, responderID, producedAt) > SingleResponse >
    certStatus, the element after CertID: [0] good, [1] revoked, [2] unknown.
    """
    read = der.read_tlv
    _, pos, _ = read(response_der, 0)  # OCSPResponse
    pos = read(response_der, pos)[2]  # skip responseStatus
    _, pos, _ = read(response_der, pos)  # [0] EXPLICIT
    _, pos, _ = read(response_der, pos)  # ResponseBytes
    pos = read(response_der, pos)[2]  # skip responseType OID
    _, pos, _ = read(response_der, pos)  # OCTET STRING
    _, pos, _ = read(response_der, pos)  # BasicOCSPResponse
    _, pos, _ = read(response_der, pos)  # tbsResponseData
    if response_der[pos] == 0xA0:
        pos = read(response_der, pos)[2]  # skip version
    pos = read(response_der, pos)[2]  # skip responderID
    pos = read(response_der, pos)[2]  # skip producedAt
    _, pos, _ = read(response_der, pos)  # responses
    _, pos, _ = read(response_der, pos)  # SingleResponse
    pos = read(response_der, pos)[2]  # skip CertID
    return _CERT_STATUS.get(response_der[pos], "unknown")
