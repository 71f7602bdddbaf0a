"""CertID hashing (RFC 6960 4.1.1): how a request names an issuer, by SHA-1 or SHA-256 (R8)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certstatus import der


class HashAlgorithm(Enum):
    """The CertID hash algorithms certstatus answers for; any other is answered unauthorized."""

    SHA1 = "sha1"
    SHA256 = "sha256"

    @property
    def algorithm_identifier(self) -> bytes:
        # With explicit NULL parameters, which is what OpenSSL and most clients send; OpenSSL
        # compares the whole AlgorithmIdentifier when it matches a response's CertID to its request.
        return _ALGORITHM_IDENTIFIERS[self]

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(self.value, data).digest()

    @property
    def hash_class(self) -> type[hashes.HashAlgorithm]:
        """cryptography's class for this hash: parsing requests, building them in tools."""
        return hashes.SHA1 if self is HashAlgorithm.SHA1 else hashes.SHA256


_ALGORITHM_IDENTIFIERS = {
    HashAlgorithm.SHA1: der.sequence(der.oid("1.3.14.3.2.26"), der.tlv(der.NULL, b"")),
    HashAlgorithm.SHA256: der.sequence(der.oid("2.16.840.1.101.3.4.2.1"), der.tlv(der.NULL, b"")),
}


def subject_public_key_bits(certificate: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's value (without the unused-bits byte): what keyHash hashes."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _, start, _ = der.read_tlv(spki)
    _, _, alg_end = der.read_tlv(spki, start)
    tag, bits_start, bits_end = der.read_tlv(spki, alg_end)
    if tag != der.BIT_STRING:
        raise ValueError("SubjectPublicKeyInfo without a BIT STRING key")
    return spki[bits_start + 1 : bits_end]


@dataclass(frozen=True, slots=True)
class IssuerKey:
    """An issuer as one hash algorithm sees it: the lookup key of an incoming CertID."""

    algorithm: HashAlgorithm
    name_hash: bytes
    key_hash: bytes


def issuer_keys(issuer: x509.Certificate) -> dict[HashAlgorithm, IssuerKey]:
    """The CertID issuer hashes of a CA certificate under every supported algorithm."""
    name = issuer.subject.public_bytes()
    key = subject_public_key_bits(issuer)
    return {alg: IssuerKey(alg, alg.digest(name), alg.digest(key)) for alg in HashAlgorithm}
