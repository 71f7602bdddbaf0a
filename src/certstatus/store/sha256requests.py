"""SHA-256 CertID responses signed on request (`certstatus response-format --sha256
on-request`, store/responseformat.py).

RFC 5019 clients, browsers among them, ask with SHA-1 CertIDs, so a CA may pregenerate only
those and halve its signing and its stored bytes. A client asking with SHA-256 for a
certificate nobody asked about before finds an empty der_sha256: its responder answers
tryLater (never cached) and asks for it here, and a signer signs it within seconds; the
responder never signs (web nodes hold no key). From then on that certificate is signed with
both CertIDs at every refresh: whoever asked once asks again. A revoked certificate is always
signed with both (signer/loop.py).

The ask makes the row due now as a refresh: behind new certificates and revocations, never
lowering a row already due sooner or at a higher priority. It is stamped, and a certificate
is asked for at most once per ASK_INTERVAL across every web node, so a row being signed is
not made due again by each request that arrives meanwhile. Only a recorded, unexpired
certificate can be asked for. A SHA-1-only response stored after an ask (its claim was made
before) is refused by store_signed, so the row stays due and is signed with both.

WANT is SQLite's ask. PostgreSQL asks through a function of schema 13 with the same effect,
whose owner's rights let a web node's role ask without UPDATE on certificates; it holds
Priority.REFRESH and ASK_INTERVAL as constants (tests/test_sha256_on_request.py checks them).
"""

from __future__ import annotations

from certstatus.store.base import Priority

ASK_INTERVAL = 30  # seconds between two asks for one certificate's SHA-256 response

WANT = (
    "UPDATE certificates SET sha256_wanted_at = ?, "
    "priority = CASE WHEN priority < ? THEN priority ELSE ? END, "
    "due_at = CASE WHEN due_at IS NOT NULL AND due_at < ? THEN due_at ELSE ? END "
    "WHERE issuer_id = ? AND serial = ? AND not_after > ? AND sha256_wanted_at < ?"
)


def want_parameters(issuer_id: int, serial_key: str, now: int) -> tuple[int | str, ...]:
    refresh = int(Priority.REFRESH)
    return (now, refresh, refresh, now, now, issuer_id, serial_key, now, now - ASK_INTERVAL)
