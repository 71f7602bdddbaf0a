"""Where a pregenerated response's CPU goes (issue 15 item 4), next to `openssl speed`.

Each round records N fresh certificates, then times one `Signer.sign_due` pass with 2 signing
processes (the pool is started and the key opened before the clock), and reports per response
(two per certificate: the SHA-1 and SHA-256 CertIDs; one with `--sha256 on-request`, which
signs only the SHA-1 one, as `certstatus response-format --sha256 on-request` makes signers do):

- responses/s, wall clock;
- CPU (utime + stime from /proc) of the signer's own process (claim, plan, store; on SQLite
  this includes the database engine), of its signing pool (DER and the ECDSA signature), and on
  PostgreSQL of the server's processes (the backend running the claims and stores, the
  checkpointer, the WAL writer);
- certificates/s, wall clock (what on-request signing changes);
- `openssl speed -multi 2 -seconds 3 ecdsap256` sign/s measured just before the round, and
  the ratio of responses/s to it (the ceiling is 1: one signature per response).

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.pregen [--engine sqlite|postgres]
        [--certs 20000] [--rounds 1] [--batch 256] [--openssl-seconds 3]
        [--sha256 pregenerate|on-request] [--max-wal-mb 64]

The machine is shared: compare CPU per response and ratios, and alternate runs when comparing
two trees (`PYTHONPATH=<other tree>/src:.` runs this harness against other code).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.common import bulk_records, make_deployment, open_bench, openssl_speed, set_sha256
from benchmarks.load import cpu_seconds, process_tree
from certstatus.signer import Signer
from certstatus.store.base import Priority


@contextmanager
def deployment(
    engine: str, directory: Path, max_wal_mb: int = 64
) -> Iterator[tuple[Path, list[int]]]:
    """A config for the engine, and the pids whose CPU counts as the database server's."""
    if engine == "sqlite":
        yield make_deployment(directory), []
        return
    from benchmarks.postgres import setup

    cluster, config = setup(directory, 0, shared_buffers_mb=256, max_wal_mb=max_wal_mb)
    try:
        [pidfile] = list(directory.rglob("postmaster.pid"))
        yield config, [int(pidfile.read_text().split()[0])]
    finally:
        cluster.down()


def server_cpu(postmasters: list[int]) -> float:
    return sum(cpu_seconds(process_tree(pid)) for pid in postmasters)


def one_round(
    config_path: Path,
    postmasters: list[int],
    certs: int,
    batch: int,
    seed: int,
    openssl_seconds: int = 3,
    sha256: str = "pregenerate",
) -> dict[str, Any]:
    config, materials, store, name, issuer_id = open_bench(config_path)
    try:
        records = bulk_records(issuer_id, certs, seed=seed)
        for start in range(0, certs, 10_000):
            store.add_certificates(records[start : start + 10_000], int(time.time()))
        signing = dataclasses.replace(config.signing, batch_size=batch)
        set_sha256(store, sha256, "benchmark")
        openssl = openssl_speed("ecdsap256", 2, openssl_seconds)
        load = os.getloadavg()[0]
        with Signer(store, materials, {name: issuer_id}, signing, processes=2) as signer:
            signer.probe()  # opens the key
            # the pool spawns a process per task submitted while none is idle: start both
            # before the clock, or one's start-up (~0.4 s of imports) is counted as signing
            warm = [signer._executor().submit(time.sleep, 0.3) for _ in range(2)]
            for future in warm:
                future.result()
            own = os.getpid()
            # the 2 signing processes (and multiprocessing's idle resource tracker)
            pool = [pid for pid in process_tree(own) if pid != own]
            before = (cpu_seconds([own]), cpu_seconds(pool), server_cpu(postmasters))
            started = time.perf_counter()
            stored = signer.sign_due()
            elapsed = time.perf_counter() - started
            after = (cpu_seconds([own]), cpu_seconds(pool), server_cpu(postmasters))
        if stored != certs or store.due_count(int(time.time()))[Priority.NEW]:
            raise RuntimeError(f"expected {certs} certificates signed, got {stored}")
    finally:
        store.close()
    responses = (2 if sha256 == "pregenerate" else 1) * certs
    signer_us, pool_us, server_us = (
        round((b - a) / responses * 1e6, 1) for a, b in zip(before, after, strict=True)
    )
    return {
        "responses": responses,
        "responses_per_s": round(responses / elapsed),
        "certificates_per_s": round(certs / elapsed),
        "openssl_sign_per_s": round(openssl),
        "openssl_ratio": round(responses / elapsed / openssl, 3),
        "cpu_us_per_response": {
            "signer": signer_us,
            "pool": pool_us,
            "server": server_us,
            "total": round(signer_us + pool_us + server_us, 1),
        },
        "load_average": round(load, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--certs", type=int, default=20_000, help="certificates per round")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256, help="[signing] batch_size")
    parser.add_argument("--openssl-seconds", type=int, default=3)
    parser.add_argument(
        "--sha256", choices=["pregenerate", "on-request"], default="pregenerate",
        help="`certstatus response-format --sha256`",
    )  # fmt: skip
    parser.add_argument(
        "--max-wal-mb", type=int, default=64,
        help="PostgreSQL's max_wal_size (64: the rehearsal cluster's; PostgreSQL's own is 1024)",
    )  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        Path(tmp).chmod(0o755)  # the postgres user reaches the cluster inside
        directory = Path(tmp) / args.engine
        with deployment(args.engine, directory, args.max_wal_mb) as (config, postmasters):
            rounds = [
                one_round(
                    config,
                    postmasters,
                    args.certs,
                    args.batch,
                    100 + n,
                    args.openssl_seconds,
                    args.sha256,
                )
                for n in range(args.rounds)
            ]
    print(
        json.dumps(
            {
                "engine": args.engine,
                "certs": args.certs,
                "sha256": args.sha256,
                **({"max_wal_mb": args.max_wal_mb} if args.engine == "postgres" else {}),
                "rounds": rounds,
            }
        )
    )


if __name__ == "__main__":
    main()
