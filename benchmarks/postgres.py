"""Benchmarks on a real local PostgreSQL cluster (a primary and streaming replicas):

serving    wrk -t2 -c64 GETs and POSTs over 100 000 certificates from a responder reading a
           replica, against nginx's static GET of the same bytes, in alternating rounds
           (--rounds; median ratios), then the peer `openssl ocsp -multi 2` (benchmarks/peer.py);
latency    ingest -> response present on every replica, p50/p99, under a steady ingest load
           with the signer running;
signing    pregeneration by 2 signer processes sharing the work through SKIP LOCKED, against
           `openssl speed -multi 2`.

  .venv/bin/python -m benchmarks.postgres serving|latency|signing
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.common import bulk_records, openssl_speed
from benchmarks.load import (
    nginx,
    paired_rounds,
    responder_config,
    same_bytes,
    wait_ready,
    write_samples,
)
from benchmarks.peer import peer_figures, write_index
from certstatus.cluster.local import Cluster
from certstatus.cluster.setup import write_deployment
from certstatus.config import load_config, load_issuer_material
from certstatus.ingest import Ingest
from certstatus.monitor.heartbeat import HeartbeatWriter
from certstatus.ports import free_port
from certstatus.signer import Signer
from certstatus.store.base import CertificateRecord, Priority
from certstatus.store.postgres import PostgresStore

# WAL between checkpoints in the benchmarks' clusters: the rehearsal cluster's 64 MB, as in
# every figure in docs/benchmarks.md. `benchmarks.pregen --max-wal-mb` measures a larger one.
BENCHMARK_WAL_MB = 64


def setup(
    directory: Path,
    replicas: int,
    shared_buffers_mb: int = 32,
    max_wal_mb: int = BENCHMARK_WAL_MB,
) -> tuple[Cluster, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # the postgres user must reach the cluster inside
    cluster = Cluster.up(
        directory / "cluster",
        replicas=replicas,
        shared_buffers_mb=shared_buffers_mb,
        max_wal_mb=max_wal_mb,
    )
    return cluster, write_deployment(cluster)


def load(config_path: Path, count: int) -> tuple[PostgresStore, int, list[CertificateRecord]]:
    """Record `count` certificates on the primary, in batches of 10 000 (one statement each)."""
    config = load_config(config_path)
    primary = PostgresStore(config.database)
    issuer_id = Ingest(primary, load_issuer_material(config)).issuer_id("demo")
    records = bulk_records(issuer_id, count)
    for start in range(0, len(records), 10_000):
        primary.add_certificates(records[start : start + 10_000], int(time.time()))
    return primary, issuer_id, records


def _sign_all(config_path: Path, processes: int) -> None:
    config = load_config(config_path)
    materials = load_issuer_material(config)
    store = PostgresStore(config.database)
    ids = {"demo": Ingest(store, materials).issuer_id("demo")}
    with Signer(store, materials, ids, config.signing, processes=processes) as signer:
        signer.sign_due()
    store.close()


def serving(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        directory = Path(tmp)
        # a replica that keeps its responses in memory, as a production one is sized to:
        # 100 000 certificates make a ~200 MB responses table
        cluster, config_path = setup(directory, 1, shared_buffers_mb=args.shared_buffers)
        try:
            config = load_config(config_path)
            materials = load_issuer_material(config)
            primary, issuer_id, records = load(config_path, args.certs)
            _sign_all(config_path, 2)
            serials = [r.serial for r in records]
            samples = write_samples(
                directory, primary, materials[0].certificate, issuer_id, serials, args.sample
            )
            index = write_index(directory, primary, issuer_id, serials)
            replica = PostgresStore(cluster.replicas[0].url, read_only=True, name="replica")
            deadline = time.monotonic() + 60
            for serial in samples.serials[-50:]:
                while replica.response(issuer_id, serial) is None:
                    if time.monotonic() > deadline:
                        raise TimeoutError("replica did not catch up")
                    time.sleep(0.2)
            stop = threading.Event()
            beat = threading.Thread(target=HeartbeatWriter(primary).run, args=(stop,))
            beat.start()
            port = free_port()
            served = responder_config(
                config_path, config_path.parent / "serve.toml", port, workers=args.workers
            )
            log = directory / "responder.log"
            url = f"http://127.0.0.1:{port}"
            try:
                with nginx(directory, samples.root) as (nginx_url, nginx_pid):
                    responder = subprocess.Popen(
                        [sys.executable, "-m", "certstatus.cli", "serve", "--config", str(served)],
                        stdout=subprocess.DEVNULL,
                        stderr=log.open("wb"),
                    )
                    try:
                        wait_ready(nginx_url + samples.first_path)
                        try:
                            wait_ready(url + "/readyz")
                        except TimeoutError:
                            sys.stderr.write(log.read_text()[-3000:])
                            raise
                        same_bytes(url, nginx_url, samples.first_path)
                        measured = paired_rounds(
                            (nginx_url, nginx_pid),
                            (url, responder.pid),
                            samples,
                            args.duration,
                            args.rounds,
                        )
                        with urllib.request.urlopen(url + "/sources") as answer:
                            sources = json.loads(answer.read())
                    finally:
                        responder.terminate()
                        responder.wait(timeout=20)
            finally:
                stop.set()
                beat.join()
            peer: dict[str, Any] = (
                {"skipped": "--no-peer"}
                if args.no_peer
                else peer_figures(directory, config_path.parent, index, samples, args.duration)
            )
            ours = measured["rounds"][-1]
            for method in ("get", "post"):
                if method in peer:
                    measured[f"{method}_ratio_to_peer_last_round"] = round(
                        ours[method]["requests_per_s"] / peer[method]["requests_per_s"], 3
                    )
            return {
                "certificates": args.certs,
                "reference": "nginx serving the same bytes (static GET, for both methods)",
                **measured,
                "peer": peer,
                "peer_cfssl": "skipped: not installable offline",
                "answers_by_source": {s["name"]: s["answers"] for s in sources},
            }
        finally:
            cluster.down()


def latency(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        cluster, config_path = setup(Path(tmp), 2)
        signer = subprocess.Popen(
            [sys.executable, "-m", "certstatus.cli", "signer", "--config", str(config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            config = load_config(config_path)
            materials = load_issuer_material(config)
            primary = PostgresStore(config.database)
            ingest = Ingest(primary, materials)
            issuer_id = ingest.issuer_id("demo")
            replicas = [PostgresStore(n.url, read_only=True, name=n.name) for n in cluster.replicas]
            records = bulk_records(issuer_id, args.samples, seed=9)
            delays: list[float] = []
            for record in records:
                started = time.perf_counter()
                primary.add_certificates([record], int(time.time()))
                waiting = list(replicas)
                while waiting:
                    waiting = [r for r in waiting if r.response(issuer_id, record.serial) is None]
                    if time.perf_counter() - started > 30:
                        raise TimeoutError("not replicated in 30 s")
                    time.sleep(0.005)
                delays.append(time.perf_counter() - started)
                time.sleep(1 / args.rate)
            ordered = sorted(delays)
            return {
                "samples": len(delays),
                "ingest_rate_per_s": args.rate,
                "replicas": len(replicas),
                "p50_s": round(statistics.median(ordered), 3),
                "p99_s": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
                "max_s": round(ordered[-1], 3),
            }
        finally:
            signer.terminate()
            signer.wait(timeout=30)
            cluster.down()


def _one_signer(config_path: str, ready: multiprocessing.synchronize.Event) -> None:
    ready.wait()
    _sign_all(Path(config_path), 1)


def signing(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        cluster, config_path = setup(Path(tmp), 1)
        try:
            primary, _, _ = load(config_path, args.certs)
            openssl = openssl_speed("ecdsap256", 2)
            context = multiprocessing.get_context("spawn")
            ready = context.Event()
            workers = [
                context.Process(target=_one_signer, args=(str(config_path), ready))
                for _ in range(2)
            ]
            for worker in workers:
                worker.start()
            time.sleep(2)  # both processes started and imported before the clock
            started = time.perf_counter()
            ready.set()
            for worker in workers:
                worker.join()
            elapsed = time.perf_counter() - started
            due = primary.due_count(int(time.time()))
            assert due[Priority.NEW] == 0
            responses = 2 * args.certs
            return {
                "certificates": args.certs,
                "signer_processes": 2,
                "responses_per_s": round(responses / elapsed),
                "openssl_speed_sign_per_s": round(openssl),
                "ratio": round(responses / elapsed / openssl, 3),
            }
        finally:
            cluster.down()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("benchmark", choices=["serving", "latency", "signing"])
    parser.add_argument("--certs", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="nginx/responder pairs (serving)")
    parser.add_argument("--shared-buffers", type=int, default=256, help="MB, serving")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="ingests per second")
    parser.add_argument("--workers", type=int, default=2, help="responder processes")
    parser.add_argument("--no-peer", action="store_true", help="serving: skip openssl ocsp")
    args = parser.parse_args()
    run = {"serving": serving, "latency": latency, "signing": signing}[args.benchmark]
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
