"""The array literals PostgreSQL's batch writes send (store/pgarrays.py) read back as the
values they spell, NULLs and every byte value included; a token that would be misread is
refused."""

from __future__ import annotations

import os

import pytest

from certstatus.store import pgarrays

pytestmark = pytest.mark.integration


def test_literals_read_back_as_their_values(postgres_server: str) -> None:
    import psycopg

    integers = [0, 1, -5, 2**62, None, 1_700_000_000]
    texts = ["1", "abcdef0123456789" * 3, "cert", "precert"]
    blobs = [b"", bytes(range(256)), b'\\"{},\x00 NULL', os.urandom(700)]
    with psycopg.connect(postgres_server) as conn:
        row = conn.execute(
            "SELECT %s::bigint[], %s::text[], %s::bytea[]",
            (pgarrays.integers(integers), pgarrays.hex_texts(texts), pgarrays.byteas(blobs)),
        ).fetchone()
    assert row is not None
    assert row[0] == integers
    assert row[1] == texts
    assert [bytes(b) for b in row[2]] == blobs


def test_slices_of_one_binary_blob_read_back_as_their_values(postgres_server: str) -> None:
    """The signer sends a batch's responses as one binary bytea and (start, length) pairs;
    the server's substring gives back each one, empty and every byte value included."""
    import psycopg

    blobs = [b"", bytes(range(256)), b"\x00", os.urandom(700), b'\\"{},NULL', os.urandom(3)]
    blob, starts, lengths = pgarrays.slices(blobs)
    assert blob == b"".join(blobs)
    with psycopg.connect(postgres_server) as conn:
        rows = conn.execute(
            "SELECT substring(%(blob)b FROM s FOR n) FROM unnest(%(starts)s::int[], "
            "%(lengths)s::int[]) WITH ORDINALITY AS u(s, n, i) ORDER BY i",
            {"blob": blob, "starts": starts, "lengths": lengths},
        ).fetchall()
    assert [bytes(r[0]) for r in rows] == blobs
    assert pgarrays.slices([]) == (b"", "{}", "{}")


@pytest.mark.parametrize("token", ["a b", "a,b", 'a"', "NULL", "null", "é", ""])
def test_a_token_that_would_be_misread_is_refused(token: str) -> None:
    if token == "":
        assert pgarrays.hex_texts([]) == "{}"
        with pytest.raises(ValueError):
            pgarrays.hex_texts([token])
        return
    with pytest.raises(ValueError):
        pgarrays.hex_texts(["ab", token])
