"""The one thing the signer needs from a key: its AlgorithmIdentifier and a sign operation."""

from __future__ import annotations

from typing import Protocol


class SigningKey(Protocol):
    """A private key that signs with SHA-256 or stronger (R8: no SHA-1 signatures)."""

    @property
    def algorithm_identifier(self) -> bytes:
        """DER AlgorithmIdentifier of the signature this key produces."""
        ...

    def sign(self, data: bytes) -> bytes:
        """The signature value over data, as carried in the BIT STRING."""
        ...

    def public_key_der(self) -> bytes:
        """SubjectPublicKeyInfo DER, to check the key belongs to its certificate."""
        ...


class KeyFileError(ValueError):
    """A key that cannot be used; the message says which file and why."""


class KeyUnavailableError(RuntimeError):
    """A key that signed before cannot sign now (token removed, module error, PIN locked).

    Not a configuration error: the signing roles stop signing, say so in their log and
    metrics, and retry with backoff until the key is back (keys/pkcs11.py)."""
