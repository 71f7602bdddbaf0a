"""Who is calling: the verified client certificate, matched to a configured client.

The TLS layer does the verifying (server.py: CERT_REQUIRED against [api] client_ca, TLS 1.2
at least): a connection without a client certificate, with one from another CA or an expired
one never completes its handshake, so no request of it reaches the app. What reaches the app
is the certificate the handshake verified (the ASGI TLS extension's client_cert_chain); this
module names the configured client it belongs to, by the SHA-256 of its public key or by its
subject, and says whether that client holds a permission. A verified certificate that no client
matches gets 403: being issued by the client CA is not enough.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from certstatus.config import API_PERMISSIONS, ApiClient, ApiConfig


@dataclass(frozen=True)
class Caller:
    """A request's identity: the configured client (None: verified but not configured), what
    the audit log names it, and what it may do."""

    client: str | None
    actor: str
    permissions: frozenset[str]


def spki_sha256(certificate: x509.Certificate) -> str:
    """Hex SHA-256 of the certificate's SubjectPublicKeyInfo: what [[api.clients]] spki_sha256
    holds (`openssl x509 -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum`)."""
    der = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


@functools.lru_cache(maxsize=1024)
def _parse(pem: str) -> tuple[str, str]:
    certificate = x509.load_pem_x509_certificate(pem.encode())
    return spki_sha256(certificate), certificate.subject.rfc4514_string()


LOOPBACK = Caller("loopback", "api:insecure-loopback", frozenset(API_PERMISSIONS))


class Clients:
    """The configured clients, by key hash and by subject."""

    def __init__(self, config: ApiConfig) -> None:
        self.insecure = config.insecure_loopback
        self._by_spki: dict[str, ApiClient] = {}
        self._by_subject: dict[str, ApiClient] = {}
        for client in config.clients:
            if client.spki_sha256:
                self._by_spki[client.spki_sha256] = client
            if client.subject:
                normalised = x509.Name.from_rfc4514_string(client.subject).rfc4514_string()
                self._by_subject[normalised] = client

    def identify(self, scope: dict[str, Any]) -> Caller | None:
        """The caller of a request, or None when the connection carries no verified client
        certificate (never the case behind server.py's TLS unless insecure_loopback is set)."""
        if self.insecure:
            return LOOPBACK
        tls = scope.get("extensions", {}).get("tls") or {}
        chain = tls.get("client_cert_chain") or []
        if not chain:
            return None
        spki, subject = _parse(chain[0])
        client = self._by_spki.get(spki) or self._by_subject.get(subject)
        if client is None:
            return Caller(None, f"unknown:spki={spki}", frozenset())
        return Caller(client.name, f"api:{client.name}", frozenset(client.permissions))
