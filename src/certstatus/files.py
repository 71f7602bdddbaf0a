"""Files certstatus writes, created with their final mode from the first byte.

A key written with the default umask and chmod-ed afterwards is readable by anyone for a moment
(and for good if the process dies in between); so every file is created by os.open with its
mode, under a name no other file has, and renamed into place: a reader sees either the old file
or the complete new one, and never a wider mode.

Modes: private keys 0600; the database and the configuration 0600 (the configuration may name
tokens' variables, the database holds every status); published material (certificates, CRL
exports) 0644, since a web server or a relying party must read it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PRIVATE = 0o600
PUBLIC = 0o644


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Replace path atomically with data; the new file has exactly `mode` (not widened by the
    umask, never chmod-ed): it is created with O_EXCL under a fresh name, then renamed."""
    staging = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        # the umask can only narrow the mode given to open; fchmod on our own fresh descriptor
        # restores exactly `mode` before any byte is written (e.g. 0644 under umask 077)
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        staging.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def create_private(path: Path) -> None:
    """Create path empty with mode 0600 if it does not exist (a SQLite database before SQLite
    opens it: SQLite gives its -wal and -shm files the database file's mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE)
    except FileExistsError:
        return
    os.close(fd)
