"""The responder's batched response lookups, spoken to libpq directly.

This is the one hand-written database path, kept because it was measured to be the replica
responder's largest cost: through psycopg's cursor (the serial array dumped element by element,
each row built by per-column loaders) a batch of 11 lookups cost 26 us of client CPU per key;
here, with the serials in one comma-joined parameter, a server-side prepared statement and
binary results read cell by cell, 10 us (benchmarks/postgres.py, `serving`). Everything else
goes through psycopg; `PostgresStore.response` (psycopg's cursor) is this module's oracle in
tests/test_postgres.py.

The statement keeps each key's position (WITH ORDINALITY), so a serial asked twice in one
batch is answered twice and no answer is matched to its key by parsing the serial back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import psycopg
from psycopg import pq

from certstatus.ocsp.certid import HashAlgorithm
from certstatus.store import pgarrays as arrays
from certstatus.store.base import StoredResponse
from certstatus.store.responsecerts import CERTS

ResponseKey = tuple[int, int, HashAlgorithm]  # issuer id, serial, CertID hash

_UNDEFINED_PREPARED_STATEMENT = b"26000"
STATEMENTS = {
    algorithm: (
        f"certstatus_responses_{algorithm.value}".encode(),
        (
            f"SELECT k.i, r.der_{algorithm.value}, r.this_update, r.next_update, r.refresh_at, "
            "r.certs_id FROM unnest(string_to_array($2, ',')) WITH ORDINALITY AS k(serial, i) "
            "JOIN responses r ON r.issuer_id = $1 AND r.serial = k.serial"
        ).encode(),
    )
    for algorithm in HashAlgorithm
}
_BINARY = 1


def group_by_statement(
    keys: Sequence[ResponseKey],
) -> list[tuple[HashAlgorithm, int, list[int], bytes]]:
    """(algorithm, issuer id, the keys' positions, their serials joined) per statement to run."""
    groups: dict[tuple[int, HashAlgorithm], list[int]] = {}
    for position, (issuer_id, _, algorithm) in enumerate(keys):
        groups.setdefault((issuer_id, algorithm), []).append(position)
    return [
        (
            algorithm,
            issuer_id,
            positions,
            ",".join([format(keys[p][1], "x") for p in positions]).encode("ascii"),
        )
        for (issuer_id, algorithm), positions in groups.items()
    ]


# the responder certificates a batch's rows end with that this process has not read yet
CERTS_STATEMENT = b"SELECT id, der FROM response_certs WHERE id = ANY($1::bigint[])"

Pending = list[tuple[int, int]]  # (position in the results, certs_id)


def store_rows(
    rows: pq.abc.PGresult,
    positions: list[int],
    source: str,
    results: list[StoredResponse | None],
) -> Pending:
    """Each row of one statement's result into the place of the key it answers, completed
    with its responder certificate (store/responsecerts.py). Rows whose certificate this
    process has not read yet are returned: the caller runs CERTS_STATEMENT with
    certs_parameter(pending), then complete()."""
    from_bytes = int.from_bytes
    cell = rows.get_value
    known = CERTS.get
    pending: Pending = []
    for row in range(rows.ntuples):
        # every column is NOT NULL: no cell is None
        position = positions[from_bytes(cell(row, 0), "big") - 1]  # type: ignore[arg-type]
        der = cell(row, 1)
        certs_id = from_bytes(cell(row, 5), "big", signed=True)  # type: ignore[arg-type]
        certs = known(certs_id)
        if not der:  # not signed (store/sha256requests.py): stays empty
            certs = b""
        elif certs is None:
            pending.append((position, certs_id))
            certs = b""
        results[position] = StoredResponse(
            der + certs,  # type: ignore[operator]
            from_bytes(cell(row, 2), "big", signed=True),  # type: ignore[arg-type]
            from_bytes(cell(row, 3), "big", signed=True),  # type: ignore[arg-type]
            from_bytes(cell(row, 4), "big", signed=True),  # type: ignore[arg-type]
            source,
        )
    return pending


def certs_parameter(pending: Pending) -> bytes:
    """CERTS_STATEMENT's parameter: the ids pending rows wait for, each once."""
    return arrays.integers(sorted({certs_id for _, certs_id in pending})).encode()


def complete(results: list[StoredResponse | None], pending: Pending, rows: pq.abc.PGresult) -> None:
    """Append each pending row's responder certificate, read by CERTS_STATEMENT (StoreError
    if one is missing: a response is never served without the certificate it was signed
    with)."""
    cell = rows.get_value
    found = {
        int.from_bytes(cell(row, 0), "big", signed=True): cell(row, 1)  # type: ignore[arg-type]
        for row in range(rows.ntuples)
    }
    for position, certs_id in pending:
        certs = CERTS.learn(certs_id, found.get(certs_id))
        partial = results[position]
        assert partial is not None
        results[position] = dataclasses.replace(partial, der=partial.der + certs)


def read_responses(
    connection: psycopg.Connection, source: str, keys: Sequence[ResponseKey]
) -> list[StoredResponse | None]:
    """One statement per (issuer, hash algorithm) in the batch; None where nothing is stored.
    Raises psycopg.Error on any database failure, like the rest of the store."""
    results: list[StoredResponse | None] = [None] * len(keys)
    pending: Pending = []
    for algorithm, issuer_id, positions, serials in group_by_statement(keys):
        rows = _execute(connection.pgconn, algorithm, [b"%d" % issuer_id, serials])
        pending += store_rows(rows, positions, source, results)
    if pending:
        rows = connection.pgconn.exec_params(
            CERTS_STATEMENT, [certs_parameter(pending)], None, None, _BINARY
        )
        _check(rows, pq.ExecStatus.TUPLES_OK)
        complete(results, pending, rows)
    return results


def _execute(
    pgconn: pq.abc.PGconn, algorithm: HashAlgorithm, params: list[bytes]
) -> pq.abc.PGresult:
    """Run the algorithm's statement, preparing it on first use on this connection (a pool's
    connection may be new at any call, so a missing statement is prepared and retried once)."""
    name, sql = STATEMENTS[algorithm]
    result = pgconn.exec_prepared(name, params, None, _BINARY)
    if (
        result.status == pq.ExecStatus.FATAL_ERROR
        and result.error_field(pq.DiagnosticField.SQLSTATE) == _UNDEFINED_PREPARED_STATEMENT
    ):
        prepared = pgconn.prepare(name, sql, None)
        _check(prepared, pq.ExecStatus.COMMAND_OK)
        result = pgconn.exec_prepared(name, params, None, _BINARY)
    _check(result, pq.ExecStatus.TUPLES_OK)
    return result


def _check(result: pq.abc.PGresult, expected: pq.ExecStatus) -> None:
    if result.status != expected:
        message = result.error_message.decode("utf-8", "replace").strip()
        raise psycopg.OperationalError(message or f"unexpected result status {result.status}")
