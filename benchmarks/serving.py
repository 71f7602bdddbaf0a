"""Serving throughput: `wrk -t2 -c64` GETs for random serials out of 100 000 certificates,
against the responder and against nginx serving the same response bytes as static files at the
same paths, in one run on the same machine. Requests use URL-safe base64 (which the responder
decodes per R14) so that every path is also a plain file name for nginx.

    .venv/bin/python -m benchmarks.serving [--certs 100000] [--duration 10] \\
        [--servers uvicorn:1,uvicorn:2,granian:2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.common import bulk_records, make_deployment
from certstatus.config import load_config, load_issuer_material
from certstatus.ingest import Ingest
from certstatus.ocsp.certid import HashAlgorithm, issuer_keys
from certstatus.ocsp.request import encode_request, get_path
from certstatus.ports import free_port
from certstatus.signer import Signer
from certstatus.store import open_store

HERE = Path(__file__).parent
NGINX_CONF = """\
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  default_type application/ocsp-response;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    location / {{ add_header Cache-Control "max-age=3600, public, no-transform, must-revalidate"; }}
  }}
}}
"""


def prepare(directory: Path, certs: int, sample: int) -> tuple[Path, Path, Path]:
    """Ingest and sign `certs` certificates; write `sample` request paths and their responses."""
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
    keys = issuer_keys(materials[0].certificate)[HashAlgorithm.SHA1]
    root = directory / "static"
    root.mkdir()
    paths = []
    for record in random.Random(3).sample(records, sample):
        path = get_path(encode_request(keys, record.serial))
        stored = store.response(issuer_id, record.serial)
        assert stored is not None
        (root / path.lstrip("/")).write_bytes(stored.der)
        paths.append(path)
    listing = directory / "paths.txt"
    listing.write_text("\n".join(paths) + "\n")
    store.close()
    return config_path, root, listing


def wrk(url: str, listing: Path, duration: int, connections: int = 64) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(HERE / "paths.lua"),
            url,
            "--",
            str(listing),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_s": rps,
        "p99_ms": float(p99.group(1)) * scale,
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def paired_rounds(
    reference_url: str, url: str, listing: Path, duration: int, rounds: int
) -> dict[str, object]:
    """Reference and ours measured back to back, `rounds` times: on a shared, noisy machine a
    ratio taken within one pair is steadier than two long runs minutes apart. Reports every
    pair and the median ratio."""
    wrk(reference_url, listing, 2)
    wrk(url, listing, 2)
    pairs = []
    for _ in range(rounds):
        reference = wrk(reference_url, listing, duration)
        ours = wrk(url, listing, duration)
        ratio = round(ours["requests_per_s"] / reference["requests_per_s"], 3)
        pairs.append({"reference": reference, "ours": ours, "ratio": ratio})
    return {
        "rounds": pairs,
        "ratio_median": statistics.median(p["ratio"] for p in pairs),  # type: ignore[misc]
        "ours_p99_ms_median": statistics.median(p["ours"]["p99_ms"] for p in pairs),  # type: ignore[index]
    }


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def same_bytes(a: str, b: str, path: str) -> None:
    with urllib.request.urlopen(a + path) as one, urllib.request.urlopen(b + path) as two:
        assert one.read() == two.read(), "responder and nginx must serve the same bytes"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--certs", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--servers", default="uvicorn:1,uvicorn:2,granian:1,granian:2")
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("nginx"):
        sys.exit("needs wrk and nginx: apt-get install -y wrk nginx")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        directory.chmod(0o755)  # nginx workers run as an unprivileged user
        config_path, root, listing = prepare(directory, args.certs, args.sample)
        first_path = listing.read_text().split("\n", 1)[0]

        nginx_port = free_port()
        (directory / "nginx.conf").write_text(
            NGINX_CONF.format(workers=2, dir=directory, port=nginx_port, root=root)
        )
        nginx = subprocess.Popen(["nginx", "-c", str(directory / "nginx.conf")])
        nginx_url = f"http://127.0.0.1:{nginx_port}"
        try:
            wait_ready(nginx_url + first_path)
            wrk(nginx_url, listing, 2)  # warm up
            results["nginx:2"] = wrk(nginx_url, listing, args.duration)
            for spec in args.servers.split(","):
                server, workers = spec.split(":")
                port = free_port()
                text = config_path.read_text()
                text = re.sub(r'listen = ".*"', f'listen = "127.0.0.1:{port}"', text)
                text = re.sub(r'server = ".*"', f'server = "{server}"', text)
                text = re.sub(
                    r"(\[responder\][^\[]*?)workers = \d+", rf"\g<1>workers = {workers}", text
                )
                config_path.write_text(text)
                responder = subprocess.Popen(
                    [sys.executable, "-m", "certstatus.cli", "serve", "--config", str(config_path)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env={**os.environ},
                )
                url = f"http://127.0.0.1:{port}"
                try:
                    wait_ready(url + "/readyz")
                    same_bytes(url, nginx_url, first_path)
                    wrk(url, listing, 2)
                    results[spec] = wrk(url, listing, args.duration)
                finally:
                    responder.terminate()
                    responder.wait(timeout=20)
        finally:
            nginx.terminate()
            nginx.wait(timeout=10)
    reference = results["nginx:2"]["requests_per_s"]
    report = {
        name: {**values, "ratio_to_nginx": round(values["requests_per_s"] / reference, 3)}
        for name, values in results.items()
    }
    print(json.dumps({"certificates": args.certs, "connections": 64, "results": report}, indent=2))


if __name__ == "__main__":
    main()
