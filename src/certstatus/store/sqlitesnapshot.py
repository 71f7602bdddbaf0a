"""The embedded responder's reads: one read transaction kept open while nothing was committed.

In WAL mode every statement outside a transaction begins and ends a read transaction, taking
and dropping a lock in the -shm file each time: half of a lookup's cost (measured: 11.8 us a
lookup in autocommit, 5.7 us inside one transaction, 4.6 us with mmap as well). A snapshot
that stays open would serve old answers, so it is kept only while the database has not moved.

SQLite decides what a new read transaction sees from the WAL-index header at the start of the
-shm file (two copies of 48 bytes, which a committing writer rewrites; sqlite.org/walformat.html).
Before each lookup the header is compared with its bytes when the snapshot began (a memory
read through mmap, no lock): unchanged means no commit since, so the open snapshot is exactly
what a new transaction would see; changed, torn or unreadable means the snapshot is dropped and
a new one begun. The header is read before the new snapshot begins, so a commit landing in
between only causes one more renewal, never a missed one. A snapshot is also renewed after
max_age seconds, so the WAL can be checkpointed and restarted behind it (a reader holding an old
snapshot pins the WAL's frames).
"""

from __future__ import annotations

import mmap
import os
import sqlite3
import time
from pathlib import Path

from certstatus.ocsp.certid import HashAlgorithm
from certstatus.store.base import StoredResponse, StoreError, serial_key

_HEADER = 96  # both copies of the WAL-index header

_RESPONSE_BY_ALGORITHM = {
    algorithm: f"SELECT der_{algorithm.value}, this_update, next_update, refresh_at "
    "FROM responses WHERE issuer_id = ? AND serial = ?"
    for algorithm in HashAlgorithm
}


class SnapshotReads:
    """Response lookups for one thread (the responder's event loop), on a connection of their
    own: a write on the same connection would find the read transaction open."""

    def __init__(self, path: Path, max_age: float = 1.0, mmap_size: int = 1 << 34) -> None:
        self.path = path
        self.max_age = max_age
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.execute(f"PRAGMA mmap_size = {int(mmap_size)}")
        if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            raise StoreError(f"database {path} is not in WAL mode")
        self._db.execute("SELECT 1 FROM responses LIMIT 1").fetchall()  # the -shm file exists now
        self._shm = self._map_shm()
        self._seen: bytes | None = None  # the header when the open snapshot began
        self._began = 0.0
        self.renewals = 0

    def _map_shm(self) -> mmap.mmap | None:
        try:
            fd = os.open(f"{self.path}-shm", os.O_RDONLY)
        except OSError:
            return None  # no shared index (another VFS): every lookup renews, still correct
        try:
            if os.fstat(fd).st_size < _HEADER:
                return None
            return mmap.mmap(fd, _HEADER, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)

    def _header(self) -> bytes | None:
        if self._shm is None:
            return None
        header = self._shm[:_HEADER]
        return header if header[:48] == header[48:] else None  # a writer mid-update: torn

    def response(
        self, issuer_id: int, serial: int, algorithm: HashAlgorithm
    ) -> StoredResponse | None:
        header = self._header()
        if (
            self._seen is None
            or header != self._seen
            or time.monotonic() - self._began > self.max_age
        ):
            self._renew(header)
        try:
            row = self._db.execute(
                _RESPONSE_BY_ALGORITHM[algorithm], (issuer_id, serial_key(serial))
            ).fetchone()
        except sqlite3.Error as exc:
            self._end()
            raise StoreError(f"database {self.path}: {exc}") from None
        return None if row is None else StoredResponse(*row)

    def _renew(self, header: bytes | None) -> None:
        """End the open snapshot and begin a new one; header was read before it begins."""
        self._end()
        try:
            self._db.execute("BEGIN")
        except sqlite3.Error as exc:
            raise StoreError(f"database {self.path}: {exc}") from None
        self._seen = header  # None (unreadable) never equals a later header: renewed each time
        self._began = time.monotonic()
        self.renewals += 1

    def _end(self) -> None:
        self._seen = None
        if self._db.in_transaction:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._db.rollback()

    def close(self) -> None:
        self._end()
        if self._shm is not None:
            self._shm.close()
        self._db.close()
