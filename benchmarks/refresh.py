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
import contextlib
import json
import resource
import sqlite3
import time
from pathlib import Path
from typing import Any

from benchmarks.common import open_bench
from certstatus.config import load_config
from certstatus.signer import Signer
from certstatus.store import sqlite_path
from certstatus.store.base import Priority

HEX_DIGITS = "0123456789abcdef"


def already_due(database: Path, now: int) -> int:
    """Rows due before this run touches anything: a deployment older than refresh_after minus
    the jitter is all due, and its pass would sign far more than the sixteenth counted."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        [(due,)] = db.execute(
            "SELECT count(*) FROM certificates WHERE due_at IS NOT NULL AND due_at <= ?", (now,)
        ).fetchall()
    return int(due)


def make_due(database: Path, digit: str, now: int) -> int:
    """Every signed certificate whose stored serial ends in digit, due for refresh now (its
    priority stays REFRESH: nothing new or revoked is touched); how many."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        with db:
            due = db.execute(
                "UPDATE certificates SET due_at = ? "
                "WHERE substr(serial, -1) = ? AND priority = ? AND due_at IS NOT NULL",
                (now - 100, digit, int(Priority.REFRESH)),
            ).rowcount
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:
        raise SystemExit(f"{database}: busy (another process holds it); stop it and run again")
    return int(due)


def refresh(directory: Path, digit: str) -> dict[str, Any]:
    config_path = directory / "certstatus.toml"
    config = load_config(config_path)
    if config.is_postgres:
        raise SystemExit(f"{config_path}: a PostgreSQL deployment; this measures SQLite's")
    database = sqlite_path(config.database, config.base_dir)
    if not database.exists():
        raise SystemExit(f"{database} does not exist; make the deployment with benchmarks.fill")
    if due := already_due(database, int(time.time())):
        raise SystemExit(
            f"{database}: {due} certificates are due already (older than refresh_after minus "
            "the jitter?); sign them first (`certstatus sign`), or fill a new deployment"
        )
    _, materials, store, name, issuer_id = open_bench(config_path)
    try:
        due = make_due(database, digit, int(time.time()))
        if not due:
            raise SystemExit(f"{database}: no signed certificate's serial ends in {digit}")
        with Signer(store, materials, {name: issuer_id}, config.signing, processes=2) as signer:
            signer.probe()  # the key opened before the clock (a second process may still start)
            before = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            stored = signer.sign_due()
            elapsed = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        store.close()
    if stored != due:
        raise SystemExit(f"{due} certificates made due, but {stored} signed: not comparable")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {
        "digit": digit,
        "due": due,
        "stored": stored,
        "seconds": round(elapsed, 2),
        "certificates_per_s": round(stored / elapsed),
        "signer_cpu_us_per_certificate": round(cpu / stored * 1e6, 1),
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
