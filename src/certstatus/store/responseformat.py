"""How the signers store and pregenerate responses: one row (response_format) every signer,
reader and monitor reads, switched by `certstatus response-format` (audit-logged).

- certs_stored_once (schema 11): responses stored without their responder certificate
  (responsecerts.py). On only once no reader of a release before schema 10 is left.
- sha256_on_request (schema 12): only the SHA-1 CertID response is pregenerated; a SHA-256
  one is signed once a client asks for it (sha256requests.py). On only once every reader runs
  schema 12 or later: an earlier one would serve the empty DER.

Kept in the database rather than in each host's config, so signers cannot disagree (one
would undo the other's rows at every refresh) and the monitor checks what is pregenerated.
"""

from __future__ import annotations

from certstatus.store.base import ResponseFormat

SELECT = "SELECT certs_stored_once, sha256_on_request FROM response_format WHERE id = 1"
CERTS_STORED_ONCE = "SELECT certs_stored_once FROM response_format WHERE id = 1"
UPDATE = "UPDATE response_format SET certs_stored_once = ?, sha256_on_request = ? WHERE id = 1"


def from_row(row: tuple[int, int]) -> ResponseFormat:
    return ResponseFormat(bool(row[0]), bool(row[1]))
