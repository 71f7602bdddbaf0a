"""Reading certificates from files and checking a delegated responder certificate (R6, R21, F8)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

OCSP_NOCHECK_VALUE = b"\x05\x00"


class CertificateError(ValueError):
    """A certificate that cannot be used; the message says which file and why."""


def read_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file (one or more blocks) or the one in a DER file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is not a ValueError
        raise CertificateError(f"{path}: not a PEM or DER certificate ({exc})") from None


def load_certificate(path: Path) -> x509.Certificate:
    """The single certificate in a PEM or DER file; a bundle here is a configuration mistake."""
    certificates = read_certificates(path)
    if len(certificates) != 1:
        raise CertificateError(f"{path}: holds {len(certificates)} certificates; expected one")
    return certificates[0]


def _public_der(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def responder_problems(
    responder: x509.Certificate,
    issuer: x509.Certificate,
    now: dt.datetime,
    expiry_margin: dt.timedelta,
    private_key_public_der: bytes | None = None,
) -> list[str]:
    """Everything wrong with a delegated responder certificate; empty when it may sign.

    The profile is R6 (BR 7.1.2.8): issued directly by the CA, EKU id-kp-OCSPSigning only,
    id-pkix-ocsp-nocheck non-critical with value NULL, keyUsage digitalSignature only, not a CA,
    no CRL distribution points and no subjectAltName. R21: refuse to start when it expires within
    expiry_margin, so an operator learns of it days ahead, not when responses stop validating.
    """
    problems: list[str] = []
    try:
        responder.verify_directly_issued_by(issuer)
    except Exception as exc:
        problems.append(
            f"is not issued directly by the issuer {issuer.subject.rfc4514_string()} "
            f"({exc or type(exc).__name__})"
        )
    extensions = {ext.oid: ext for ext in responder.extensions}

    eku = extensions.get(ExtensionOID.EXTENDED_KEY_USAGE)
    if eku is None or list(eku.value) != [ExtendedKeyUsageOID.OCSP_SIGNING]:
        problems.append("extendedKeyUsage must be id-kp-OCSPSigning and nothing else")

    nocheck = extensions.get(ExtensionOID.OCSP_NO_CHECK)
    if nocheck is None:
        problems.append("id-pkix-ocsp-nocheck extension is missing")
    else:
        if nocheck.critical:
            problems.append("id-pkix-ocsp-nocheck must not be critical")
        if nocheck.value.public_bytes() != OCSP_NOCHECK_VALUE:
            problems.append("id-pkix-ocsp-nocheck value must be NULL (0500)")

    ku = extensions.get(ExtensionOID.KEY_USAGE)
    if ku is None:
        problems.append("keyUsage digitalSignature is missing")
    else:
        usage = ku.value
        others = [
            usage.content_commitment,
            usage.key_encipherment,
            usage.data_encipherment,
            usage.key_agreement,
            usage.key_cert_sign,
            usage.crl_sign,
        ]
        if not usage.digital_signature or any(others):
            problems.append("keyUsage must be digitalSignature only")

    bc = extensions.get(ExtensionOID.BASIC_CONSTRAINTS)
    if bc is not None and bc.value.ca:
        problems.append("basicConstraints cA must be false")
    if ExtensionOID.CRL_DISTRIBUTION_POINTS in extensions:
        problems.append("must not carry cRLDistributionPoints")
    if ExtensionOID.SUBJECT_ALTERNATIVE_NAME in extensions:
        problems.append("must not carry subjectAltName")

    if responder.not_valid_before_utc > now:
        problems.append(f"is not valid before {responder.not_valid_before_utc:%Y-%m-%d %H:%M}Z")
    if responder.not_valid_after_utc <= now + expiry_margin:
        problems.append(
            f"expires {responder.not_valid_after_utc:%Y-%m-%d %H:%M}Z, within the "
            f"{expiry_margin.days}-day margin (R21); issue a new responder certificate"
        )
    if private_key_public_der is not None and private_key_public_der != _public_der(responder):
        problems.append("does not match its private key")
    return problems
