"""The embedded responder's snapshot reads (store/sqlitesnapshot.py): a read transaction kept
open between commits must never serve an answer older than a fresh read would (a revocation is
never outrun), and must not pin the WAL."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

from certstatus.ocsp.certid import HashAlgorithm
from certstatus.store.sqlite import SqliteStore
from certstatus.store.sqlitesnapshot import SnapshotReads

SERIAL = 0xABC


def _write(path: str, der: bytes) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 5000")
    db.execute(
        "INSERT INTO responses (issuer_id, serial, version, this_update, next_update, refresh_at,"
        " der_sha1, der_sha256) VALUES (1, ?, 1, 1, 2, 2, ?, ?) ON CONFLICT (issuer_id, serial)"
        " DO UPDATE SET der_sha1 = excluded.der_sha1, der_sha256 = excluded.der_sha256",
        (format(SERIAL, "x"), der, der),
    )
    db.close()


def _writer(path: str, orders: multiprocessing.connection.Connection) -> None:
    while (der := orders.recv()) is not None:
        _write(path, der)
        orders.send("committed")


def _database(tmp_path: Path) -> Path:
    path = tmp_path / "certstatus.db"
    SqliteStore(path).close()  # the schema, in WAL mode
    _write(str(path), b"v0")
    return path


def test_a_commit_by_another_process_is_seen_by_the_next_lookup(tmp_path: Path) -> None:
    """Each change committed by another process (the signer storing a revoked response) is
    what the very next lookup returns: the kept snapshot is dropped as soon as anything is
    committed."""
    path = _database(tmp_path)
    reads = SnapshotReads(path)
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    writer = multiprocessing.get_context("spawn").Process(target=_writer, args=(str(path), theirs))
    writer.start()
    try:
        for n in range(1, 150):
            for _ in range(3):  # a few reads of the same state keep the snapshot
                found = reads.response(1, SERIAL, HashAlgorithm.SHA1)
                assert found is not None and found.der == b"v%d" % (n - 1)
            ours.send(b"v%d" % n)
            assert ours.recv() == "committed"
            found = reads.response(1, SERIAL, HashAlgorithm.SHA256)
            assert found is not None and found.der == b"v%d" % n
    finally:
        ours.send(None)
        writer.join(10)
        reads.close()
    assert 149 <= reads.renewals <= 2 * 149 + 5  # renewed per commit, not per lookup


def test_the_snapshot_is_kept_while_nothing_is_committed(tmp_path: Path) -> None:
    path = _database(tmp_path)
    reads = SnapshotReads(path, max_age=60)
    for _ in range(2000):
        assert reads.response(1, SERIAL, HashAlgorithm.SHA1) is not None
    assert reads.response(1, SERIAL + 1, HashAlgorithm.SHA1) is None
    assert reads.renewals == 1
    reads.close()


def test_the_snapshot_ages_out_so_the_wal_is_not_pinned(tmp_path: Path) -> None:
    """A writer committing continuously while the responder reads: the WAL is checkpointed and
    restarted behind the reader, so the -wal file stays small."""
    path = _database(tmp_path)
    reads = SnapshotReads(path, max_age=0.05)
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            _write(str(path), b"x" * 2000 + b"%d" % n)

    writer = threading.Thread(target=write)
    writer.start()
    largest = 0
    deadline = time.monotonic() + 3
    try:
        while time.monotonic() < deadline:
            assert reads.response(1, SERIAL, HashAlgorithm.SHA1) is not None
            largest = max(largest, Path(f"{path}-wal").stat().st_size)
    finally:
        stop.set()
        writer.join()
        reads.close()
    assert largest < 8 * 1024 * 1024, largest
