"""Certificates and CSRs signed by any SigningKey, including keys that never leave a token.

`cryptography` signs only with its own private keys. A certificate's to-be-signed part does not
depend on the signing key beyond its AlgorithmIdentifier, so it is built by `cryptography`
signed with a throwaway key of the same algorithm, and re-signed with the real key. A CSR's
CertificationRequestInfo holds the requester's public key, so it is assembled here in DER.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certstatus import der
from certstatus.keys.base import SigningKey
from certstatus.keys.pem import ECDSA_SHA256, ECDSA_SHA384, RSA_SHA256

_EXTENSION_REQUEST = der.oid("1.2.840.113549.1.9.14")


@cache
def _throwaway(algorithm: bytes) -> tuple[Any, Any]:
    if algorithm == ECDSA_SHA256:
        return ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()
    if algorithm == ECDSA_SHA384:
        return ec.generate_private_key(ec.SECP384R1()), hashes.SHA384()
    if algorithm == RSA_SHA256:
        return rsa.generate_private_key(65537, 2048), hashes.SHA256()
    raise ValueError("unsupported signature algorithm")


def _signed(tbs: bytes, key: SigningKey) -> bytes:
    return der.sequence(tbs, key.algorithm_identifier, der.bit_string(key.sign(tbs)))


def sign_certificate(builder: x509.CertificateBuilder, key: SigningKey) -> x509.Certificate:
    """builder's certificate, signed by key (a PEM key or one in a token)."""
    stand_in, digest = _throwaway(key.algorithm_identifier)
    tbs = builder.sign(stand_in, digest).tbs_certificate_bytes
    return x509.load_der_x509_certificate(_signed(tbs, key))


def certificate_request(
    subject: x509.Name, key: SigningKey, extensions: list[tuple[x509.ExtensionType, bool]]
) -> x509.CertificateSigningRequest:
    """A PKCS#10 request for key's public key, asking for extensions (the R6 profile)."""
    encoded = [
        der.sequence(
            der.oid(ext.oid.dotted_string),
            der.BOOLEAN_TRUE if critical else b"",
            der.octet_string(ext.public_bytes()),
        )
        for ext, critical in extensions
    ]
    attribute = der.sequence(_EXTENSION_REQUEST, der.tlv(0x31, der.sequence(*encoded)))
    info = der.sequence(
        der.integer(0),
        subject.public_bytes(),
        key.public_key_der(),
        der.tlv(0xA0, attribute),
    )
    return x509.load_der_x509_csr(_signed(info, key))


def public_key_of(key: SigningKey) -> Any:
    return serialization.load_der_public_key(key.public_key_der())
