"""Benchmarks on a real local PostgreSQL cluster (a primary and streaming replicas):

serving    wrk -t2 -c64 GETs over 100 000 certificates from a responder reading a replica,
           against nginx serving the same bytes, in alternating pairs (--rounds; median ratio);
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
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks.common import bulk_records, openssl_speed
from benchmarks.serving import NGINX_CONF, free_port, paired_rounds, same_bytes, wait_ready
from certstatus.cluster.local import Cluster
from certstatus.cluster.setup import write_deployment
from certstatus.config import load_config, load_issuer_material
from certstatus.ingest import Ingest
from certstatus.monitor.heartbeat import HeartbeatWriter
from certstatus.ocsp.certid import HashAlgorithm, issuer_keys
from certstatus.ocsp.request import encode_request, get_path
from certstatus.signer import Signer
from certstatus.store.base import CertificateRecord, Priority
from certstatus.store.postgres import PostgresStore


def setup(directory: Path, replicas: int, shared_buffers_mb: int = 32) -> tuple[Cluster, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # the postgres user must reach the cluster inside
    cluster = Cluster.up(
        directory / "cluster", replicas=replicas, shared_buffers_mb=shared_buffers_mb
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
        # a replica that keeps its responses in memory, as a production one is sized to:
        # 100 000 certificates make a ~200 MB responses table
        cluster, config_path = setup(Path(tmp), 1, shared_buffers_mb=args.shared_buffers)
        try:
            config = load_config(config_path)
            materials = load_issuer_material(config)
            primary, issuer_id, records = load(config_path, args.certs)
            _sign_all(config_path, 2)
            replica = PostgresStore(cluster.replicas[0].url, read_only=True, name="replica")
            keys = issuer_keys(materials[0].certificate)[HashAlgorithm.SHA1]
            root = Path(tmp) / "static"
            root.mkdir()
            paths = []
            sample = random.Random(3).sample(records, args.sample)
            deadline = time.monotonic() + 60
            while replica.response(issuer_id, sample[-1].serial) is None:
                if time.monotonic() > deadline:
                    raise TimeoutError("replica did not catch up")
                time.sleep(0.2)
            for record in sample:
                path = get_path(encode_request(keys, record.serial))
                stored = primary.response(issuer_id, record.serial)
                assert stored is not None
                (root / path.lstrip("/")).write_bytes(stored.der)
                paths.append(path)
            listing = Path(tmp) / "paths.txt"
            listing.write_text("\n".join(paths) + "\n")
            stop = threading.Event()
            beat = threading.Thread(target=HeartbeatWriter(primary).run, args=(stop,))
            beat.start()
            port, nginx_port = free_port(), free_port()
            text = re.sub(
                r'listen = ".*"', f'listen = "127.0.0.1:{port}"', config_path.read_text(), count=1
            )
            text = text.replace(
                "run_signer = true", f"run_signer = false\nworkers = {args.workers}"
            )
            served_config = config_path.parent / "serve.toml"
            served_config.write_text(text)
            (Path(tmp) / "nginx.conf").write_text(
                NGINX_CONF.format(workers=2, dir=tmp, port=nginx_port, root=root)
            )
            nginx = subprocess.Popen(["nginx", "-c", str(Path(tmp) / "nginx.conf")])
            responder = subprocess.Popen(
                [sys.executable, "-m", "certstatus.cli", "serve", "--config", str(served_config)],
                stdout=subprocess.DEVNULL,
                stderr=(Path(tmp) / "responder.log").open("wb"),
            )
            url, nginx_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{nginx_port}"
            try:
                wait_ready(nginx_url + paths[0])
                try:
                    wait_ready(url + "/readyz")
                except TimeoutError:
                    sys.stderr.write((Path(tmp) / "responder.log").read_text()[-3000:])
                    raise
                same_bytes(url, nginx_url, paths[0])
                measured = paired_rounds(nginx_url, url, listing, args.duration, args.rounds)
                with urllib.request.urlopen(url + "/sources") as answer:
                    sources = json.loads(answer.read())
            finally:
                responder.terminate()
                nginx.terminate()
                responder.wait(timeout=20)
                nginx.wait(timeout=10)
                stop.set()
                beat.join()
            return {
                "certificates": args.certs,
                "reference": "nginx serving the same bytes",
                **measured,
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
    args = parser.parse_args()
    run = {"serving": serving, "latency": latency, "signing": signing}[args.benchmark]
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
