"""What runs in each signing process: build and sign both CertID variants of a response.

Keys are loaded once per process from their files, never sent over the pipe; a job carries only
the serial, its status and its times.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from certstatus.keys.pem import load_pem_key
from certstatus.ocsp.certid import HashAlgorithm
from certstatus.ocsp.response import CertStatus, ResponseBuilder


@dataclass(frozen=True)
class IssuerSpec:
    """Enough to rebuild an issuer's ResponseBuilder in another process."""

    issuer_id: int
    issuer_der: bytes
    responder_der: bytes
    key_path: Path

    def builder(self) -> ResponseBuilder:
        return ResponseBuilder(
            x509.load_der_x509_certificate(self.issuer_der),
            x509.load_der_x509_certificate(self.responder_der),
            load_pem_key(self.key_path),
        )


# (issuer_id, serial, revoked, revoked_at, reason, this_update, next_update, produced_at)
Job = tuple[int, int, bool, int | None, int | None, int, int, int]

_builders: dict[int, ResponseBuilder] = {}


def init_worker(specs: list[IssuerSpec]) -> None:
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _builders.clear()
    _builders.update({spec.issuer_id: spec.builder() for spec in specs})


def sign_jobs(
    jobs: list[Job], builders: dict[int, ResponseBuilder] | None = None
) -> list[tuple[bytes, bytes]]:
    """Sign each job under SHA-1 and SHA-256 CertIDs: one SingleResponse per response (R8)."""
    table = _builders if builders is None else builders
    signed = []
    for issuer_id, serial, revoked, revoked_at, reason, this_update, next_update, produced in jobs:
        builder = table[issuer_id]
        status = CertStatus(revoked, revoked_at, reason)
        signed.append(
            (
                builder.sign(
                    HashAlgorithm.SHA1, serial, status, this_update, next_update, produced
                ),
                builder.sign(
                    HashAlgorithm.SHA256, serial, status, this_update, next_update, produced
                ),
            )
        )
    return signed
