"""What synchronous acknowledgement (R26) costs per write, on a real Patroni cluster.

Records certificates one per transaction (as `certstatus add` and the ingest API do for a
single certificate) and in batches of 100, through the same PostgresStore the CA uses, on the
same cluster in two modes, alternated --pairs times: acknowledged once a synchronous standby
has the WAL (the default), and with synchronous_commit = local for the session (acknowledged
once flushed on the leader only: what the cluster did before issue 14). Prints records/s and
p50/p99 latency of every run and the medians of each mode.

  .venv/bin/python -m benchmarks.syncack [--writes 600] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import bulk_records
from certstatus.cluster.ha import HaCluster
from certstatus.store.postgres import PostgresStore


def _store(url: str, synchronous: bool) -> PostgresStore:
    store = PostgresStore(url, name="bench")
    if not synchronous:  # the same store, its sessions committing on the leader only
        store._pool.close()
        store._connect_kwargs["options"] += " -c synchronous_commit=local"
        store._pool = store._new_pool()
    return store


def measure(url: str, synchronous: bool, writes: int, issuer_id: int, seed: int) -> dict[str, Any]:
    store = _store(url, synchronous)
    try:
        records = bulk_records(issuer_id, writes + 100 * 50, seed=seed)
        for record in records[:20]:  # warm the pool
            store.add_certificates([record], int(time.time()))
        latencies = []
        started = time.perf_counter()
        for record in records[20:writes]:
            t = time.perf_counter()
            store.add_certificates([record], int(time.time()))
            latencies.append(time.perf_counter() - t)
        single = len(latencies) / (time.perf_counter() - started)
        batches = records[writes:]
        started = time.perf_counter()
        for i in range(0, len(batches), 100):
            store.add_certificates(batches[i : i + 100], int(time.time()))
        batched = len(batches) / (time.perf_counter() - started)
    finally:
        store.close()
    latencies.sort()
    return {
        "acknowledged": "on a synchronous standby" if synchronous else "on the leader only",
        "single_records_per_s": round(single),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
        "batched_records_per_s": round(batched),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=600)
    parser.add_argument("--pairs", type=int, default=3, help="alternated runs of each mode")
    parser.add_argument("--keep", type=Path)
    args = parser.parse_args()
    directory = args.keep or Path(tempfile.mkdtemp(prefix="certstatus-syncack-"))
    directory.chmod(0o755)  # the postgres user runs the nodes inside it
    cluster = HaCluster.up_ha(directory / "cluster", replicas=2, sites="a:1,b:1")
    try:
        setup = PostgresStore(cluster.writer_url, name="setup")
        issuer_id = setup.ensure_issuer("bench", b"bench issuer")
        setup.close()
        modes = [True, False] * args.pairs  # alternated: the machine's load changes
        results = [
            measure(cluster.writer_url, synchronous, args.writes, issuer_id, seed)
            for seed, synchronous in enumerate(modes)
        ]
    finally:
        cluster.down()
        if args.keep is None:
            shutil.rmtree(directory, ignore_errors=True)
    summary = {}
    for mode in ("on a synchronous standby", "on the leader only"):
        runs = [r for r in results if r["acknowledged"] == mode]
        summary[mode] = {
            k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "acknowledged"
        }
    print(json.dumps({"runs": results, "medians": summary}, indent=2))


if __name__ == "__main__":
    main()
