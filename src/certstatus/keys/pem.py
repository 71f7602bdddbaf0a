"""Signing keys read from PEM files (ECDSA P-256/P-384 or RSA >= 2048)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from certstatus import der
from certstatus.keys.base import KeyFileError
from certstatus.keys.uri import check_private_file

ECDSA_SHA256 = der.sequence(der.oid("1.2.840.10045.4.3.2"))
ECDSA_SHA384 = der.sequence(der.oid("1.2.840.10045.4.3.3"))
RSA_SHA256 = der.sequence(der.oid("1.2.840.113549.1.1.11"), der.tlv(der.NULL, b""))


class EcdsaKey:
    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self.private_key = key
        if isinstance(key.curve, ec.SECP256R1):
            self.algorithm_identifier = ECDSA_SHA256
            self._algorithm = ec.ECDSA(hashes.SHA256())
        elif isinstance(key.curve, ec.SECP384R1):
            self.algorithm_identifier = ECDSA_SHA384
            self._algorithm = ec.ECDSA(hashes.SHA384())
        else:
            raise KeyFileError(f"curve {key.curve.name} is not allowed; use P-256 or P-384")

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data, self._algorithm)

    def public_key_der(self) -> bytes:
        return _public_key_der(self.private_key)


class RsaKey:
    algorithm_identifier = RSA_SHA256

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        if key.key_size < 2048:
            raise KeyFileError(f"RSA key of {key.key_size} bits is too small; use 2048 or more")
        self.private_key = key
        self._padding = padding.PKCS1v15()
        self._hash = hashes.SHA256()

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data, self._padding, self._hash)

    def public_key_der(self) -> bytes:
        return _public_key_der(self.private_key)


def _public_key_der(private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_from_private(private_key: object) -> EcdsaKey | RsaKey:
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return EcdsaKey(private_key)
    if isinstance(private_key, rsa.RSAPrivateKey):
        return RsaKey(private_key)
    raise KeyFileError(f"{type(private_key).__name__} keys cannot sign OCSP responses here")


def load_pem_key(path: Path) -> EcdsaKey | RsaKey:
    """Load an unencrypted PEM private key, naming the file in every error. A key file that
    group or others may read is refused before it is read (R25: key hygiene)."""
    check_private_file(path, "key file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        private_key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    try:
        return key_from_private(private_key)
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
