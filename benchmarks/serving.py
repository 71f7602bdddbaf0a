"""Serving throughput from SQLite: `wrk -t2 -c64` GETs and POSTs for random serials out of
100 000 certificates, against the responder, against nginx serving the same response bytes as
static files at the same paths (the reference for both methods), and against a peer,
`openssl ocsp -multi 2` signing every answer live with the same responder key (see
benchmarks/peer.py; it needs root for its network namespace, and --no-peer skips it). One run,
one machine; CPU microseconds per answer from /proc beside each figure.

    .venv/bin/python -m benchmarks.serving [--certs 100000] [--duration 10] \\
        [--servers uvicorn:2,granian:2,native:2] [--no-peer]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import bulk_records, make_deployment
from benchmarks.load import (
    Samples,
    measure,
    nginx,
    responder_config,
    same_bytes,
    wait_ready,
    write_samples,
)
from benchmarks.peer import peer_figures, write_index
from certstatus.config import load_config, load_issuer_material
from certstatus.ingest import Ingest
from certstatus.ports import free_port
from certstatus.signer import Signer
from certstatus.store import open_store


def prepare(directory: Path, certs: int, sample: int) -> tuple[Path, Samples, Path]:
    """Record and sign `certs` certificates; write request samples and openssl's index.txt."""
    config_path = make_deployment(directory)
    config = load_config(config_path)
    materials = load_issuer_material(config)
    store = open_store(config.database, config.base_dir)
    issuer_id = Ingest(store, materials).issuer_id("bench")
    records = bulk_records(issuer_id, certs)
    store.add_certificates(records, int(time.time()))
    started = time.perf_counter()
    with Signer(store, materials, {"bench": issuer_id}, config.signing, processes=2) as signer:
        signer.sign_due()
    print(f"signed {certs} certificates in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    serials = [r.serial for r in records]
    samples = write_samples(directory, store, materials[0].certificate, issuer_id, serials, sample)
    index = write_index(directory, store, issuer_id, serials)
    store.close()
    return config_path, samples, index


def methods(
    url: str,
    samples: Samples,
    duration: int,
    pid: int,
    prefix: tuple[str, ...] = (),
    close: bool = False,
) -> dict[str, Any]:
    """GET then POST, each after a 2 s warm-up."""
    results = {}
    for method in ("GET", "POST"):
        measure(url, samples, 2, method, pid, prefix, close)
        results[method.lower()] = measure(url, samples, duration, method, pid, prefix, close)
    return results


def ratios(results: dict[str, Any], nginx_get: float, peer: dict[str, Any]) -> dict[str, Any]:
    """Each method's req/s over nginx's static GET and over the peer's same method."""
    out = dict(results)
    for method in ("get", "post"):
        rps = results[method]["requests_per_s"]
        out[f"{method}_ratio_to_nginx_get"] = round(rps / nginx_get, 3)
        if method in peer:
            out[f"{method}_ratio_to_peer"] = round(rps / peer[method]["requests_per_s"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--certs", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--servers", default="uvicorn:2,granian:2,native:1,native:2")
    parser.add_argument("--no-peer", action="store_true", help="skip openssl ocsp")
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("nginx"):
        sys.exit("needs wrk and nginx: apt-get install -y wrk nginx")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        directory.chmod(0o755)  # nginx workers run as an unprivileged user
        config_path, samples, index = prepare(directory, args.certs, args.sample)
        with nginx(directory, samples.root) as (nginx_url, nginx_pid):
            wait_ready(nginx_url + samples.first_path)
            measure(nginx_url, samples, 2, "GET", nginx_pid)  # warm up
            reference = measure(nginx_url, samples, args.duration, "GET", nginx_pid)
            for spec in args.servers.split(","):
                server, workers = spec.split(":")
                port = free_port()
                served = responder_config(
                    config_path, directory / f"serve-{port}.toml", port, server, int(workers)
                )
                responder = subprocess.Popen(
                    [sys.executable, "-m", "certstatus.cli", "serve", "--config", str(served)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                url = f"http://127.0.0.1:{port}"
                try:
                    wait_ready(url + "/readyz")
                    same_bytes(url, nginx_url, samples.first_path)
                    results[spec] = methods(url, samples, args.duration, responder.pid)
                finally:
                    responder.terminate()
                    responder.wait(timeout=20)
        peer = (
            {"skipped": "--no-peer"}
            if args.no_peer
            else peer_figures(directory, directory, index, samples, args.duration)
        )
    nginx_get = reference["requests_per_s"]
    report = {
        "certificates": args.certs,
        "connections": 64,
        "reference": {"nginx:2 static GET": reference},
        "peer": peer,
        "peer_cfssl": "skipped: not installable offline",
        "results": {name: ratios(values, nginx_get, peer) for name, values in results.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
