"""A SQLite deployment of N certificates built in minutes, for `benchmarks.scale --existing DIR`
(issue 15: serving at 10^7 certificates).

Growing a deployment through real certificates (`benchmarks.scale --certs N`) records them at
2.4k/s past 10^6 on this machine (docs/benchmarks.md): 10^7 takes hours. What serving at 10^7
needs is a database of that size whose responses are real, so this:

- records N certificates without building X.509 ones (the records `certstatus add` would
  write; its checks' cost is what `benchmarks.ingest` and `benchmarks.scale` measure), with
  random 128-bit serials as a CA draws them, written in key order (the stored hex text's
  order), with an audit entry each. Written in order, the B-trees are packed tighter than a
  CA's random-order inserts leave them: its bytes per certificate are a lower bound;
- signs every one for real with the Signer (2 processes): the database then holds what a
  deployment of that size holds, and a responder serves signed OCSP responses from it.

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.fill DIR --certs 10000000 \\
        [--sha256 pregenerate|on-request]
    PYTHONPATH=src:. .venv/bin/python -m benchmarks.scale --existing DIR --json

It prints one JSON object: the recording and signing rates, the signing rate's ratio to
`openssl speed -multi 2 ecdsap256` measured just before the signing pass, and the bytes on
disk.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    make_deployment,
    open_bench,
    openssl_speed,
    random_serials,
    record_serials,
    set_sha256,
)
from certstatus.signer import Signer
from certstatus.store import sqlite_path
from certstatus.store.base import serial_key

CHUNK = 50_000


def log(message: str) -> None:
    print(f"[fill {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fill(directory: Path, certs: int, sha256: str, seed: int = 11) -> dict[str, Any]:
    if (directory / "certstatus.toml").exists():
        raise SystemExit(f"{directory} already holds a deployment; give a new directory")
    config, materials, store, name, issuer_id = open_bench(
        make_deployment(directory, server="native", workers=2)
    )
    try:
        set_sha256(store, sha256, "benchmark:fill")
        serials = sorted(random_serials(certs, seed=seed), key=serial_key)

        def recorded(done: int) -> None:
            if done % (20 * CHUNK) == 0:
                log(f"recorded {done}")

        started = time.perf_counter()
        record_serials(store, issuer_id, serials, "benchmark:fill", CHUNK, recorded)
        record_s = time.perf_counter() - started
        del serials
        openssl = openssl_speed("ecdsap256", 2, 3)  # the ceiling, measured beside the pass
        log(f"recorded {certs} in {record_s:.0f} s; openssl signs {openssl:.0f}/s; signing")
        signed = 0
        started = time.perf_counter()
        with Signer(store, materials, {name: issuer_id}, config.signing, processes=2) as signer:
            last = time.monotonic()

            def progress(done: int) -> None:
                nonlocal signed, last
                signed += done
                if time.monotonic() - last > 30:
                    last = time.monotonic()
                    log(f"signed {signed} certificates")

            rows = signer.sign_due(progress=progress)
        sign_s = time.perf_counter() - started
    finally:
        store.close()
    database = sqlite_path(config.database, config.base_dir)
    with sqlite3.connect(database) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    disk = database.stat().st_size
    per_certificate = 1 if sha256 == "on-request" else 2
    return {
        "certificates": certs,
        "recorded_per_s": round(certs / record_s),
        "signed_certificates": rows,
        "responses_per_s": round(rows * per_certificate / sign_s),
        "signed_certificates_per_s": round(rows / sign_s),
        "sign_seconds": round(sign_s),
        "openssl_sign_per_s": round(openssl),
        "pregen_openssl_ratio": round(rows * per_certificate / sign_s / openssl, 3),
        "bytes_on_disk": disk,
        "bytes_per_cert": round(disk / certs),
        "sha256": sha256,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", type=Path, help="a new directory for the deployment")
    parser.add_argument("--certs", type=int, required=True)
    parser.add_argument("--sha256", choices=["pregenerate", "on-request"], default="pregenerate")
    args = parser.parse_args()
    if args.certs < 1:
        parser.error("--certs must be at least 1")
    print(json.dumps(fill(args.directory, args.certs, args.sha256)))


if __name__ == "__main__":
    main()
