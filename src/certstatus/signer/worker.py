"""What runs in each signing process: build and sign both CertID variants of a response.

Keys are opened once per process (a PEM file read, or a session on the token opened here,
after the process started), never sent over the pipe; a job carries only the serial, its status
and its times. A key that does not match the responder certificate is refused here too: a
token relabelled during a rotation must not sign for the old certificate.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certstatus.keys.base import KeyFileError, KeyUnavailableError
from certstatus.keys.source import KeyRef, open_key
from certstatus.ocsp.response import ResponseBuilder


@dataclass(frozen=True)
class IssuerSpec:
    """Enough to rebuild an issuer's ResponseBuilder in another process."""

    issuer_id: int
    issuer_der: bytes
    responder_der: bytes
    key: KeyRef

    def builder(self) -> ResponseBuilder:
        responder = x509.load_der_x509_certificate(self.responder_der)
        key = open_key(self.key)
        expected = responder.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if key.public_key_der() != expected:
            raise KeyUnavailableError(
                f"{self.key}: not the key of the responder certificate this signer holds; "
                "not signing until the certificate is reloaded"
            )
        return ResponseBuilder(x509.load_der_x509_certificate(self.issuer_der), responder, key)


# (issuer_id, serial, revoked, revoked_at, reason, this_update, next_update, produced_at,
#  whether to sign the SHA-256 CertID response too)
Job = tuple[int, int, bool, int | None, int | None, int, int, int, bool]


class Builders(dict[int, ResponseBuilder]):
    """Each issuer's ResponseBuilder, made when first needed: a process whose token is away
    when it starts still starts, and makes the builder when the token is back. A key that
    cannot be opened is KeyUnavailableError (the signer backs off and retries)."""

    def __init__(self, specs: list[IssuerSpec]) -> None:
        super().__init__()
        self.specs = {spec.issuer_id: spec for spec in specs}

    def __missing__(self, issuer_id: int) -> ResponseBuilder:
        try:
            builder = self.specs[issuer_id].builder()
        except KeyFileError as exc:
            raise KeyUnavailableError(str(exc)) from None
        self[issuer_id] = builder
        return builder


_builders = Builders([])


def init_worker(specs: list[IssuerSpec]) -> None:
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _builders.clear()
    _builders.specs = {spec.issuer_id: spec for spec in specs}


def probe(builders: Builders | None = None) -> None:
    """Sign a throwaway message with every issuer's key: raises KeyUnavailableError while a
    key cannot sign. The signer asks this before claiming rows again after an outage."""
    table = _builders if builders is None else builders
    for issuer_id in table.specs:
        table[issuer_id].key.sign(b"certstatus key probe")


# (SHA-1 CertID response, SHA-256 CertID response, the `certs` field both end with)
Signed = tuple[bytes, bytes, bytes]


def sign_jobs(jobs: list[Job], builders: dict[int, ResponseBuilder] | None = None) -> list[Signed]:
    """Sign each job under SHA-1 and SHA-256 CertIDs (SHA-1 only when the job says so, b""
    in its place): one SingleResponse per response (R8).
    Each response comes back without its trailing `certs` field, which the store keeps once;
    the field is returned beside them from the builder that counted it in the responses'
    length headers, one bytes object per issuer (pickled once per batch)."""
    table = _builders if builders is None else builders
    signed = []
    for job in jobs:
        builder = table[job[0]]
        # serial, status and times, in sign_both's order; then whether to sign SHA-256 too
        sha1, sha256 = builder.sign_both(*job[1:8], certs=False, sha256=job[8])
        signed.append((sha1, sha256, builder.certs))
    return signed
