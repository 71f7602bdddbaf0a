"""A refresh pass over a filled deployment (issue 15 item 4): what the signer costs when the
rows due are spread over the whole key range, as a steady state's refreshes are.

`benchmarks.fill` signs fresh certificates, which come due in key order. A refresh does not:
the certificates due in one minute are scattered among all the others. This makes every
certificate whose serial ends in one hex digit due now (a sixteenth of them, spread over the
key range), then times one `Signer.sign_due` pass with 2 signing processes, and reports the
certificates/s and the signer's own process CPU per certificate (claim, plan, store, and
SQLite's work). Each run takes another digit, so runs can alternate between two trees on the
same database (`PYTHONPATH=<tree>/src:.`).

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.fill DIR --certs 10000000
    PYTHONPATH=src:. .venv/bin/python -m benchmarks.refresh DIR --digit 1

It prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import time
from pathlib import Path
from typing import Any

from benchmarks.common import open_bench
from certstatus.signer import Signer
from certstatus.store import sqlite_path
from certstatus.store.base import Priority

HEX_DIGITS = "0123456789abcdef"


def make_due(database: Path, digit: str, now: int) -> int:
    """Every certificate whose stored serial ends in digit, due for refresh now; how many."""
    with sqlite3.connect(database) as db:
        due = db.execute(
            "UPDATE certificates SET due_at = ?, priority = ? "
            "WHERE substr(serial, -1) = ? AND due_at IS NOT NULL",
            (now - 100, int(Priority.REFRESH), digit),
        ).rowcount
    with sqlite3.connect(database) as db:  # the pass starts from a WAL emptied
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return due


def refresh(directory: Path, digit: str) -> dict[str, Any]:
    config, materials, store, name, issuer_id = open_bench(directory / "certstatus.toml")
    try:
        database = sqlite_path(config.database, config.base_dir)
        due = make_due(database, digit, int(time.time()))
        with Signer(store, materials, {name: issuer_id}, config.signing, processes=2) as signer:
            signer.probe()  # the pool started and the key opened before the clock
            before = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            stored = signer.sign_due()
            elapsed = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        store.close()
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {
        "digit": digit,
        "due": due,
        "stored": stored,
        "seconds": round(elapsed, 2),
        "certificates_per_s": round(stored / elapsed) if elapsed else 0,
        "signer_cpu_us_per_certificate": round(cpu / stored * 1e6, 1) if stored else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", type=Path, help="a deployment benchmarks.fill made")
    parser.add_argument("--digit", default="0", choices=list(HEX_DIGITS))
    args = parser.parse_args()
    if not (args.directory / "certstatus.toml").exists():
        parser.error(f"{args.directory} holds no deployment; make one with benchmarks.fill")
    print(json.dumps(refresh(args.directory, args.digit)))


if __name__ == "__main__":
    main()
