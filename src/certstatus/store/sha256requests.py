"""SHA-256 CertID responses signed on request ([signing] sha256_responses = "on-request").

RFC 5019 clients, browsers among them, ask with SHA-1 CertIDs, so a CA may pregenerate only
those and halve its signing and its stored bytes. A client asking with SHA-256 for a
certificate nobody asked about before finds an empty der_sha256: its responder answers
tryLater (never cached) and asks for it here, and a signer signs it within seconds; the
responder never signs (web nodes hold no key). From then on that certificate is signed with
both CertIDs at every refresh: whoever asked once asks again.

The ask makes the row due now, first in line (Priority.NEW: a client cannot verify it yet).
It is stamped, and a certificate is asked for at most once per ASK_INTERVAL across every web
node: a row being signed is not made due again by each request that arrives meanwhile, and
an ask whose signing was lost is repeated after it. Only a recorded, unexpired certificate
can be asked for, so the most a client can make the signers do is what "pregenerate" does.
"""

from __future__ import annotations

from certstatus.store.base import Priority

ASK_INTERVAL = 30  # seconds between two asks for one certificate's SHA-256 response

WANT = (
    "UPDATE certificates SET sha256_wanted_at = ?, priority = ?, due_at = ? "
    "WHERE issuer_id = ? AND serial = ? AND not_after > ? AND sha256_wanted_at < ?"
)


def want_parameters(issuer_id: int, serial_key: str, now: int) -> tuple[int | str, ...]:
    return (now, int(Priority.NEW), now, issuer_id, serial_key, now, now - ASK_INTERVAL)
