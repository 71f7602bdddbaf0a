"""Expiry housekeeping's statements, shared by both engines ('?' placeholders).

Both walk certificates in (not_after, issuer_id, serial) order through certificates_expiry
(schema v9), a batch at a time from a key, so each batch reads what it handles and no more.

Retiring flags the response of a certificate past its notAfter (responses.retired), taking it
out of the partial indexes the freshness metrics read; the response is still served. The key
reached is kept in the housekeeping row, so each certificate is retired once.

Pruning deletes a certificate and its response once all of these hold:
- notAfter is more than the retention ago (the caller passes expired_before);
- its response, if any, has passed its nextUpdate, so no valid signed answer disappears;
- if revoked: the CRL published for its partition no longer lists it (R18: an entry stays one
  CRL period past notAfter; crl/schedule.py r18_cutoff) and has been out for a whole period,
  so no cache still holds an earlier CRL that lists it (a CRL's max-age ends at its planned
  reissue). A partition with no published CRL keeps nothing back.
The audit log is never touched (R23): it outlives the rows it describes.
"""

from __future__ import annotations

from dataclasses import dataclass

ExpiryKey = tuple[int, int, str]  # (not_after, issuer_id, serial hex)
START: ExpiryKey = (-(2**62), -1, "")

CURSOR = "SELECT retired_not_after, retired_issuer, retired_serial FROM housekeeping WHERE id = 1"
SET_CURSOR = (
    "UPDATE housekeeping SET retired_not_after = ?, retired_issuer = ?, retired_serial = ? "
    "WHERE id = 1"
)
# the next batch of certificates expired by a time, after a key, in key order
NEXT_EXPIRED = (
    "SELECT not_after, issuer_id, serial FROM certificates "
    "WHERE (not_after, issuer_id, serial) > (?, ?, ?) AND not_after <= ? "
    "ORDER BY not_after, issuer_id, serial LIMIT ?"
)
# UPDATE ... FROM, so both engines walk the key range and look each response up by its key
# (SQLite scans responses for "(issuer_id, serial) IN (subquery)"). The range is also given on
# not_after alone: PostgreSQL estimates a row comparison coarsely (a fixed fraction of the
# table), and with that estimate it would hash-join the whole of responses.
# parameters: the key after, the last key, the first and the last not_after
RETIRE = (
    "UPDATE responses SET retired = 1 FROM certificates c WHERE responses.retired = 0 "
    "AND c.issuer_id = responses.issuer_id AND c.serial = responses.serial "
    "AND (c.not_after, c.issuer_id, c.serial) > (?, ?, ?) "
    "AND (c.not_after, c.issuer_id, c.serial) <= (?, ?, ?) "
    "AND c.not_after BETWEEN ? AND ?"
)
# a revoked certificate is kept while its partition's published CRL lists it (this_update -
# period <= not_after) or was published less than a period ago; parameters: period, now - period
_CRL_DONE_WITH = (
    "(c.revoked = 0 OR NOT EXISTS (SELECT 1 FROM crls k WHERE k.issuer_id = c.issuer_id "
    "AND k.crl_partition = c.crl_partition AND (k.this_update - ? <= c.not_after "
    "OR k.this_update > ?)))"
)
# per key: issuer_id, serial, now, issuer_id, serial, period, now - period
PRUNE_RESPONSE = (
    "DELETE FROM responses WHERE issuer_id = ? AND serial = ? AND next_update <= ? "
    "AND EXISTS (SELECT 1 FROM certificates c WHERE c.issuer_id = ? AND c.serial = ? "
    f"AND {_CRL_DONE_WITH})"
)
# per key: issuer_id, serial, period, now - period (a response still there is still valid)
PRUNE_CERTIFICATE = (
    "DELETE FROM certificates AS c WHERE c.issuer_id = ? AND c.serial = ? "
    f"AND {_CRL_DONE_WITH} AND NOT EXISTS (SELECT 1 FROM responses r "
    "WHERE r.issuer_id = c.issuer_id AND r.serial = c.serial)"
)


@dataclass(frozen=True, slots=True)
class ExpiryBatch:
    """What one batch (one transaction) did: certificates read (fewer than the limit: the end
    was reached), how many were changed (retired or pruned), and the last key read."""

    scanned: int
    changed: int
    last: ExpiryKey | None


def prune_parameters(
    keys: list[ExpiryKey], now: int, crl_period: int
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The parameters of PRUNE_RESPONSE and PRUNE_CERTIFICATE for each key."""
    kept_after = now - crl_period
    responses: list[tuple[object, ...]] = [
        (i, s, now, i, s, crl_period, kept_after) for _, i, s in keys
    ]
    certificates: list[tuple[object, ...]] = [(i, s, crl_period, kept_after) for _, i, s in keys]
    return responses, certificates
