"""Each responder certificate stored once, not in every response.

A pre-signed response from a delegated responder ends with its `certs` field: the responder
certificate, about 500 of a response's 800 bytes, the same for every response it signs. The
responses table keeps each response without that field and a certs_id; response_certs maps
the id to the field, and readers append it. The row, its index and the replication stream
are then a third of the size.

The id is derived from the bytes (the first 8 bytes of their SHA-256 as a signed 64-bit
integer), so the signer knows it without asking, a repeated insert changes nothing, and a
reader may cache an id forever: no replica, failover or restore can make one id mean other
bytes. Id 0 appends nothing: rows written before schema 10, and issuers that sign their own
responses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from certstatus.store.base import SignedResponse, StoreError

WHOLE = 0  # the stored DER is the whole response

INSERT = "INSERT INTO response_certs (id, der) VALUES (?, ?) ON CONFLICT (id) DO NOTHING"
SELECT = "SELECT der FROM response_certs WHERE id = ?"


def certs_id(certs: bytes) -> int:
    if not certs:
        return WHOLE
    return int.from_bytes(hashlib.sha256(certs).digest()[:8], "big", signed=True) or 1


def ids_of(responses: Iterable[SignedResponse]) -> dict[bytes, int]:
    """The id of each distinct `certs` among a batch's responses (one, but for a rotation)."""
    return {certs: certs_id(certs) for certs in {r.certs for r in responses}}


def whole(response: SignedResponse) -> SignedResponse:
    """The response with its `certs` put back: what a database whose readers may predate
    schema 10 stores (schema.py, v11)."""
    if not response.certs:
        return response
    return response._replace(
        der_sha1=response.der_sha1 + response.certs,
        der_sha256=response.der_sha256 and response.der_sha256 + response.certs,
        certs=b"",
    )


class CertsCache:
    """A reader's map from certs_id to the field it stands for: a handful of entries (one per
    responder certificate ever used), never stale, so never emptied."""

    def __init__(self) -> None:
        self._known: dict[int, bytes] = {WHOLE: b""}

    def get(self, stored_id: int) -> bytes | None:
        return self._known.get(stored_id)

    def learn(self, stored_id: int, certs: bytes | None) -> bytes:
        """Remember what the database holds for an id, checked against the id itself: a
        response is never completed with another certificate than the one it was signed with."""
        if certs is None or certs_id(certs) != stored_id:
            raise StoreError(
                f"response_certs has no row matching id {stored_id}: the responses that "
                "refer to it cannot be served whole; restore the table from a backup"
            )
        self._known[stored_id] = certs
        return certs


# Ids are content hashes, so one cache serves every store of the process.
CERTS = CertsCache()
