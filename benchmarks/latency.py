"""Ingest → authoritative answer: time from recording a certificate (or a revocation) to the
running responder answering it good (or revoked), with the signer inside `certstatus serve`.
The issue asks for new and revoked certificates signed within a second of ingest.

    .venv/bin/python -m benchmarks.latency [--samples 50]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from benchmarks.load import wait_ready
from certstatus.config import load_config, load_issuer_material
from certstatus.demo.ca import DemoCA, write_key, write_pem
from certstatus.ingest import Ingest
from certstatus.ocsp.certid import HashAlgorithm, issuer_keys
from certstatus.ocsp.request import encode_request
from certstatus.ports import free_port
from certstatus.store import open_store

CONFIG = """\
database = "certstatus.db"
[responder]
listen = "127.0.0.1:{port}"
run_signer = true
[[issuers]]
name = "demo"
certificate = "issuer.pem"
responder_certificate = "responder.pem"
responder_key = "responder.key"
"""


def status(url: str, issuer, serial: int) -> ocsp.OCSPCertStatus | None:
    request = encode_request(issuer_keys(issuer)[HashAlgorithm.SHA1], serial)
    with urllib.request.urlopen(url + base64.b64encode(request).decode(), timeout=5) as answer:
        parsed = ocsp.load_der_ocsp_response(answer.read())
    if parsed.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return None
    return parsed.certificate_status


def until(url: str, issuer, serial: int, wanted: ocsp.OCSPCertStatus, start: float) -> float:
    while time.perf_counter() - start < 30:
        if status(url, issuer, serial) is wanted:
            return time.perf_counter() - start
        time.sleep(0.01)
    raise TimeoutError(f"serial {serial:x} not {wanted} after 30 s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        ca = DemoCA.create()
        responder, key = ca.responder()
        write_pem(directory / "issuer.pem", ca.certificate)
        write_pem(directory / "responder.pem", responder)
        write_key(directory / "responder.key", key)
        port = free_port()
        (directory / "certstatus.toml").write_text(CONFIG.format(port=port))
        url = f"http://127.0.0.1:{port}/"
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "certstatus.cli",
                "serve",
                "--config",
                str(directory / "certstatus.toml"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(url + "readyz")
            config = load_config(directory / "certstatus.toml")
            ingest = Ingest(
                open_store(config.database, config.base_dir), load_issuer_material(config)
            )
            leaf_key = ec.generate_private_key(ec.SECP256R1()).public_key()
            new, revoked = [], []
            for n in range(args.samples):
                leaf = ca.leaf(leaf_key, 0x10_0000 + n, url)
                start = time.perf_counter()
                ingest.add_certificates([(leaf, "bench")], int(time.time()))
                new.append(
                    until(url, ca.certificate, leaf.serial_number, ocsp.OCSPCertStatus.GOOD, start)
                )
                start = time.perf_counter()
                ingest.revoke("demo", leaf.serial_number, "keyCompromise", int(time.time()))
                revoked.append(
                    until(
                        url, ca.certificate, leaf.serial_number, ocsp.OCSPCertStatus.REVOKED, start
                    )
                )
                time.sleep(0.05)
        finally:
            server.terminate()
            server.wait(timeout=20)
    report = {
        name: {
            "p50_s": round(statistics.median(values), 3),
            "p99_s": round(percentile(values, 0.99), 3),
            "max_s": round(max(values), 3),
        }
        for name, values in (("ingest_to_good", new), ("revoke_to_revoked", revoked))
    }
    print(json.dumps({"samples": args.samples, **report}, indent=2))


if __name__ == "__main__":
    main()
