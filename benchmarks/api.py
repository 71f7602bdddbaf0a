"""Issuance API benchmarks (issue 12), on SQLite over real mutual TLS on loopback.

  python -m benchmarks.api record [--certs 1600] [--clients 16]
      certificates recorded per second, each client a thread sending one PEM per request
  python -m benchmarks.api bulk [--revocations 100000]
      revocations through the NDJSON bulk endpoint: time until all are acknowledged
      (committed), and the API process's peak RSS

Not measured here yet: ?wait=authoritative latency with a signer, time until every bulk
revocation is answered revoked by the responder, and the 1 000 000-line run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from benchmarks.common import bulk_records
from certstatus.api.auth import spki_sha256
from certstatus.client import ApiClient
from certstatus.demo.apipki import ApiCA, write_certificate, write_secret_key
from certstatus.demo.ca import DemoCA, write_key, write_pem
from certstatus.ports import free_port
from certstatus.store import open_store

CONFIG = """\
database = "certstatus.db"

[[issuers]]
name = "bench"
certificate = "issuer.pem"
responder_certificate = "responder.pem"
responder_key = "responder.key"

[api]
listen = "127.0.0.1:{port}"
certificate = "api-server.pem"
private_key = "api-server.key"
client_ca = "api-ca.pem"
rate = 100000
burst = 100000

[[api.clients]]
name = "bench"
spki_sha256 = "{spki}"
permissions = ["record", "revoke", "read"]
"""


def setup(directory: Path) -> tuple[DemoCA, ApiClient, subprocess.Popen[bytes], int]:
    ca = DemoCA.create("bench CA")
    responder, key = ca.responder()
    write_pem(directory / "issuer.pem", ca.certificate)
    write_pem(directory / "responder.pem", responder)
    write_key(directory / "responder.key", key)
    api_ca = ApiCA.create()
    server, server_key = api_ca.server(["127.0.0.1"])
    client, client_key = api_ca.client("bench")
    write_certificate(directory / "api-ca.pem", api_ca.certificate)
    write_certificate(directory / "api-server.pem", server)
    write_secret_key(directory / "api-server.key", server_key)
    write_certificate(directory / "client.pem", client)
    write_secret_key(directory / "client.key", client_key)
    port = free_port()
    config = directory / "certstatus.toml"
    config.write_text(CONFIG.format(port=port, spki=spki_sha256(client)))
    process = subprocess.Popen(
        [sys.executable, "-m", "certstatus.cli", "api", "--config", str(config)],
        stderr=subprocess.DEVNULL,
    )
    api = ApiClient(
        f"https://127.0.0.1:{port}",
        directory / "client.pem",
        directory / "client.key",
        directory / "api-ca.pem",
    )
    for _ in range(100):
        try:
            api.openapi()
            break
        except Exception:
            time.sleep(0.1)
    return ca, api, process, port


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def record(directory: Path, certs: int, clients: int) -> None:
    ca, api, process, _ = setup(directory)
    try:
        public = ec.generate_private_key(ec.SECP256R1()).public_key()
        leaves = [
            ca.leaf(public, 0x100000 + n, "http://127.0.0.1/").public_bytes(Encoding.PEM)
            for n in range(certs)
        ]
        shares = [leaves[i::clients] for i in range(clients)]

        def send(share: list[bytes]) -> None:
            for pem in share:
                api.record(pem)

        threads = [threading.Thread(target=send, args=(s,)) for s in shares]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        print(
            f"record: {certs} certificates, {clients} concurrent clients, {elapsed:.2f} s, "
            f"{certs / elapsed:.0f} certificates/s"
        )
    finally:
        process.terminate()
        process.wait()


def bulk(directory: Path, count: int) -> None:
    _, api, process, _ = setup(directory)
    try:
        store = open_store(str(directory / "certstatus.db"))
        (issuer,) = store.issuers()
        records = bulk_records(issuer.id, count)
        for start in range(0, count, 10_000):
            store.add_certificates(records[start : start + 10_000], int(time.time()))
        items = (
            {"issuer": "bench", "serial": f"{r.serial:x}", "reason": "keyCompromise"}
            for r in records
        )
        started = time.perf_counter()
        answer = api.revoke_stream(items)
        elapsed = time.perf_counter() - started
        assert answer["revoked"] == count, answer
        print(
            f"bulk: {count} revocations acknowledged in {elapsed:.1f} s "
            f"({count / elapsed:.0f}/s); API peak RSS {peak_rss_kb(process.pid) / 1024:.0f} MiB"
        )
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["record", "bulk"])
    parser.add_argument("--certs", type=int, default=1600)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--revocations", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="certstatus-api-bench-") as tmp:
        if args.what == "record":
            record(Path(tmp), args.certs, args.clients)
        else:
            bulk(Path(tmp), args.revocations)


if __name__ == "__main__":
    main()
