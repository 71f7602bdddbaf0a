"""Checking one OCSP answer as a relying party would, against what the primary records.

Pure: given the bytes and headers a target returned, the request, the issuer and the
expected status, say whether the answer is authoritative and what is wrong with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from certstatus.ocsp.certid import HashAlgorithm, issuer_keys

MAX_VALIDITY = 10 * 86400  # R3
CLOCK_SKEW = 60


@dataclass
class Verdict:
    """kind: good/revoked/unknown for a successful answer, else the error status or transport
    problem (unauthorized, tryLater, malformedRequest, http-503, unreachable...)."""

    kind: str
    problems: list[str] = field(default_factory=list)

    @property
    def authoritative(self) -> bool:
        return self.kind in ("good", "revoked")

    @property
    def correct(self) -> bool:
        return self.authoritative and not self.problems


_ERRORS = {
    ocsp.OCSPResponseStatus.MALFORMED_REQUEST: "malformedRequest",
    ocsp.OCSPResponseStatus.INTERNAL_ERROR: "internalError",
    ocsp.OCSPResponseStatus.TRY_LATER: "tryLater",
    ocsp.OCSPResponseStatus.SIG_REQUIRED: "sigRequired",
    ocsp.OCSPResponseStatus.UNAUTHORIZED: "unauthorized",
}


def check_answer(
    status: int,
    headers: dict[str, str],
    body: bytes,
    issuer: x509.Certificate,
    serial: int,
    algorithm: HashAlgorithm,
    expected: str | None,
    now: float,
) -> Verdict:
    """expected: "good" or "revoked" per the primary, or None when the primary's record is
    still being signed (any authoritative status is then acceptable)."""
    if status != 200:
        return Verdict(f"http-{status}")
    try:
        response = ocsp.load_der_ocsp_response(body)
    except ValueError as exc:
        return Verdict("garbage", [f"not an OCSP response: {exc}"])
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return Verdict(_ERRORS.get(response.response_status, "error"))
    kind = response.certificate_status.name.lower()
    verdict = Verdict(kind)
    problems = verdict.problems
    keys = issuer_keys(issuer)[algorithm]
    if (
        response.serial_number != serial
        or type(response.hash_algorithm) is not algorithm.hash_class
        or response.issuer_key_hash != keys.key_hash
        or response.issuer_name_hash != keys.name_hash
    ):
        problems.append("CertID does not match the request")
    problems.extend(_signature_problems(response, issuer))
    if expected is not None and kind != expected:
        problems.append(f"says {kind}, the primary records {expected}")
    this_update = response.this_update_utc.timestamp()
    next_update = response.next_update_utc.timestamp() if response.next_update_utc else None
    if this_update > now + CLOCK_SKEW:
        problems.append("thisUpdate is in the future")
    if next_update is None or next_update <= now:
        problems.append("expired (nextUpdate passed or missing)")
    elif next_update - this_update > MAX_VALIDITY:
        problems.append("validity longer than 10 days (R3)")
    problems.extend(_header_problems(headers, next_update, now))
    return verdict


def _signature_problems(response: ocsp.OCSPResponse, issuer: x509.Certificate) -> list[str]:
    signer = issuer
    if response.certificates:
        delegated = response.certificates[0]
        try:
            delegated.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            return ["responder certificate not issued by the issuer"]
        try:
            eku = delegated.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return ["responder certificate lacks the OCSPSigning EKU"]
        if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
            return ["responder certificate lacks the OCSPSigning EKU"]
        signer = delegated
    key = signer.public_key()
    algorithm = response.signature_hash_algorithm
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
        elif isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(
                response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm
            )
        else:
            return ["unsupported signature algorithm"]
    except InvalidSignature:
        return ["signature does not verify"]
    return []


def _header_problems(headers: dict[str, str], next_update: float | None, now: float) -> list[str]:
    problems = []
    if headers.get("content-type") != "application/ocsp-response":
        problems.append("content-type is not application/ocsp-response")
    control = headers.get("cache-control", "")
    if "max-age=" not in control or "public" not in control:
        problems.append("authoritative answer without max-age/public (R12)")
    else:
        try:
            max_age = int(control.split("max-age=")[1].split(",")[0])
            age = int(headers.get("age", "0") or 0)
        except ValueError:
            return [*problems, "unparseable Cache-Control or Age"]
        if next_update is not None and now + max_age - age > next_update + CLOCK_SKEW:
            problems.append("cacheable past nextUpdate (R12)")
    return problems
