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
    """Signs responses for one issuer with its delegated responder (or the issuer itself)."""

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
        certs = b""
        if include_responder_certificate and responder != issuer:
            certs = der.explicit(
                0, der.sequence(responder.public_bytes(serialization.Encoding.DER))
            )
        self._certs = certs
        self._times: dict[int, bytes] = {}

    def tbs_response_data(
        self,
        algorithm: HashAlgorithm,
        serial: int,
        status: CertStatus,
        this_update: int,
        next_update: int,
        produced_at: int,
    ) -> bytes:
        times = self._times
        if len(times) > 4096:
            times.clear()
        cert_id = der.sequence(self._certid_prefix[algorithm], der.integer(serial))
        single = der.sequence(
            cert_id,
            status.encode(times),
            _time(times, this_update),
            der.explicit(0, _time(times, next_update)),
        )
        return der.sequence(self._responder_id, _time(times, produced_at), der.sequence(single))

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
        tbs = self.tbs_response_data(
            algorithm, serial, status, this_update, next_update, produced_at
        )
        basic = der.sequence(
            tbs,
            self.key.algorithm_identifier,
            der.bit_string(self.key.sign(tbs)),
            self._certs,
        )
        return der.sequence(
            der.enumerated(ResponseStatus.SUCCESSFUL),
            der.explicit(0, der.sequence(ID_PKIX_OCSP_BASIC, der.octet_string(basic))),
        )
