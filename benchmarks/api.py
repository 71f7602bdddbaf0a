"""Issuance API benchmarks (issue 12), on SQLite over real mutual TLS on loopback.

python -m benchmarks.api record [--certs 1600] [--clients 16]
    certificates recorded per second, each client a thread sending one PEM per request
python -m benchmarks.api bulk [--revocations 100000]
    revocations through the NDJSON bulk endpoint: time until all are acknowledged
    (committed), and the API process's peak RSS
python -m benchmarks.api authoritative [--certs 400] [--clients 4]
    ?wait=authoritative latency p50/p99 with `certstatus serve` signing beside it; each
    client alternates a recording without wait (the reference, measured in the same run)
python -m benchmarks.api mass [--revocations 100000]
    a mass revocation: that many certificates recorded and signed, then revoked through the
    bulk endpoint with `serve` signing, publishing CRLs and purging a counting CDN stand-in:
    time to acknowledge, time until the store holds a revoked response for every one
    (sampled meanwhile with real OCSP requests to the responder), the CRL republished, and
    the purge requests sent
python -m benchmarks.api flat [--revocations 1000000]
    one NDJSON stream of that many revocations; the API process's peak RSS (VmHWM) read as
    the acknowledged count passes 100 000, then each further 100 000: flat memory is a flat
    column
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from benchmarks.common import bulk_records
from certstatus.api.auth import spki_sha256
from certstatus.client import ApiClient
from certstatus.demo.apipki import ApiCA, write_certificate, write_secret_key
from certstatus.demo.ca import DemoCA, write_key, write_pem
from certstatus.ocsp.certid import HashAlgorithm, issuer_keys
from certstatus.ocsp.request import encode_request
from certstatus.ports import free_port
from certstatus.store import open_store

CONFIG = """\
database = "certstatus.db"
{signing}
[[issuers]]
name = "bench"
certificate = "issuer.pem"
responder_certificate = "responder.pem"
responder_key = "responder.key"
{issuer_signing}
[api]
listen = "127.0.0.1:{port}"
certificate = "api-server.pem"
private_key = "api-server.key"
client_ca = "api-ca.pem"
rate = 100000
burst = 100000
max_wait = 10

[[api.clients]]
name = "bench"
spki_sha256 = "{spki}"
permissions = ["record", "revoke", "read"]
{caches}"""

# `serve` with its signing roles beside it: signer, CRL builder (a short debounce, so the
# republication is seen within the run), purger
SIGNING = """
[responder]
listen = "127.0.0.1:{ocsp_port}"
run_signer = true

[signing]
workers = 2

[crl]
period = "1d"
validity = "7d"
debounce = "{debounce}"
jitter = "1h"
"""
ISSUER_SIGNING = """issuer_key = "issuer.key"
crl_url = "http://127.0.0.1:{ocsp_port}/crl/{{issuer}}/{{partition}}.crl"
"""
CACHES = """
[[caches]]
name = "cdn"
kind = "tag-api"
url = "{url}"
token_env = "BENCH_CDN_TOKEN"
"""
CDN_TOKEN = "bench-token"


class Stack:
    """The processes of a run: `certstatus api`, and for the signing modes `certstatus serve`
    (responder with the signer, CRL builder and purger beside it)."""

    def __init__(self, directory: Path, signing: bool, cdn_url: str | None = None) -> None:
        self.directory = directory
        self.ca = DemoCA.create("bench CA")
        responder, key = self.ca.responder()
        write_pem(directory / "issuer.pem", self.ca.certificate)
        assert self.ca.key is not None
        write_key(directory / "issuer.key", self.ca.key)
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
        self.port, self.ocsp_port = free_port(), free_port()
        self.config = directory / "certstatus.toml"
        self.config.write_text(
            CONFIG.format(
                port=self.port,
                spki=spki_sha256(client),
                signing=SIGNING.format(ocsp_port=self.ocsp_port, debounce="10s") if signing else "",
                issuer_signing=ISSUER_SIGNING.format(ocsp_port=self.ocsp_port) if signing else "",
                caches=CACHES.format(url=cdn_url) if cdn_url else "",
            )
        )
        self.processes: list[subprocess.Popen[bytes]] = []
        environment = {**os.environ, "BENCH_CDN_TOKEN": CDN_TOKEN}
        commands = [["api"], ["serve"]] if signing else [["api"]]
        for command in commands:
            self.processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "certstatus.cli",
                        *command,
                        "--config",
                        str(self.config),
                    ],
                    stderr=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    env=environment,
                )
            )
        self.api = ApiClient(
            f"https://127.0.0.1:{self.port}",
            directory / "client.pem",
            directory / "client.key",
            directory / "api-ca.pem",
        )
        self.ocsp_url = f"http://127.0.0.1:{self.ocsp_port}/"
        deadline = time.monotonic() + 60
        while True:
            try:
                self.api.openapi()
                if signing:
                    urllib.request.urlopen(self.ocsp_url + "readyz", timeout=1).close()
                break
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.2)

    @property
    def api_pid(self) -> int:
        return self.processes[0].pid

    def database(self) -> sqlite3.Connection:
        """A read connection of our own for progress counts (WAL: it blocks no writer)."""
        return sqlite3.connect(f"file:{self.directory / 'certstatus.db'}?mode=ro", uri=True)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def setup(directory: Path) -> tuple[DemoCA, ApiClient, subprocess.Popen[bytes], int]:
    stack = Stack(directory, signing=False)
    return stack.ca, stack.api, stack.processes[0], stack.port


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


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def authoritative(directory: Path, certs: int, clients: int) -> None:
    """Each client records its share one by one, alternating ?wait=authoritative with a plain
    recording (the reference): the wait's cost is the difference, in the same run."""
    stack = Stack(directory, signing=True)
    try:
        public = ec.generate_private_key(ec.SECP256R1()).public_key()
        leaves = [
            stack.ca.leaf(public, 0x100000 + n, "http://127.0.0.1/").public_bytes(Encoding.PEM)
            for n in range(certs)
        ]
        warm = stack.ca.leaf(public, 0xFFFFF, "http://127.0.0.1/").public_bytes(Encoding.PEM)
        warmed = stack.api.record(warm, "authoritative", "10s")  # the signer has started
        assert warmed["wait"]["satisfied"], warmed
        waited: list[float] = []
        plain: list[float] = []
        unsatisfied: list[dict[str, Any]] = []
        lock = threading.Lock()

        def send(share: list[bytes]) -> None:
            for index, pem in enumerate(share):
                wait = index % 2 == 0
                started = time.perf_counter()
                answer = stack.api.record(pem, "authoritative" if wait else None, "5s")
                elapsed = time.perf_counter() - started
                with lock:
                    (waited if wait else plain).append(elapsed)
                    if wait and not answer["wait"]["satisfied"]:
                        unsatisfied.append(answer["wait"])

        threads = [
            threading.Thread(target=send, args=(leaves[i::clients],)) for i in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(
            f"authoritative: {len(waited)} recordings with ?wait=authoritative and {len(plain)} "
            f"without, {clients} concurrent clients, signer inside `serve`\n"
            f"  wait=authoritative: p50 {statistics.median(waited) * 1000:.0f} ms, "
            f"p99 {percentile(waited, 0.99) * 1000:.0f} ms, max {max(waited) * 1000:.0f} ms; "
            f"timed out (202): {len(unsatisfied)}\n"
            f"  plain record (reference): p50 {statistics.median(plain) * 1000:.0f} ms, "
            f"p99 {percentile(plain, 0.99) * 1000:.0f} ms\n"
            f"  ratio of p50s (wait / plain): {statistics.median(waited) / statistics.median(plain):.2f}"
        )
    finally:
        stack.stop()


class CountingCdn:
    """The CDN stand-in of the tests (tests/cdn_standin.py, the tag-purge API's shape) with
    nothing behind it: it answers success and keeps every request it received."""

    def purge(self, keys: Sequence[str]) -> None:
        pass


REVOKED_SIGNED = (
    "SELECT count(*) FROM certificates c JOIN responses r "
    "ON r.issuer_id = c.issuer_id AND r.serial = c.serial "
    "WHERE c.revoked = 1 AND r.version >= c.version"
)
SIGNED = "SELECT count(*) FROM responses"
CRL = "SELECT crl_number, entries FROM crls WHERE crl_partition = 0"


def ocsp_revoked(url: str, keys: Any, serials: Sequence[int]) -> int:
    """How many of serials the running responder answers revoked (real GET requests)."""
    revoked = 0
    for serial in serials:
        request = encode_request(keys, serial)
        path = base64.urlsafe_b64encode(request).decode().rstrip("=")
        with urllib.request.urlopen(url + path, timeout=10) as answer:
            parsed = ocsp.load_der_ocsp_response(answer.read())
        if (
            parsed.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
            and parsed.certificate_status is ocsp.OCSPCertStatus.REVOKED
        ):
            revoked += 1
    return revoked


def until(database: sqlite3.Connection, sql: str, done: Any, limit: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        if done(database.execute(sql).fetchone()):
            return time.perf_counter()
        time.sleep(0.2)
    raise TimeoutError(f"{sql!r} not done in {limit} s")


def mass(directory: Path, count: int, cdn_configured: bool = True) -> None:
    from tests.cdn_standin import TagPurgeStandIn  # run with the tree's root on the path

    with TagPurgeStandIn(CDN_TOKEN, CountingCdn()) as cdn:
        stack = Stack(directory, signing=True, cdn_url=cdn.url if cdn_configured else None)
        try:
            _mass(stack, cdn, count)
        finally:
            stack.stop()


def _mass(stack: Stack, cdn: Any, count: int) -> None:
    store = open_store(str(stack.directory / "certstatus.db"))
    (issuer,) = store.issuers()
    records = bulk_records(issuer.id, count)
    started = time.perf_counter()
    for start in range(0, count, 10_000):
        store.add_certificates(records[start : start + 10_000], int(time.time()))
    database = stack.database()
    signed_at = until(database, SIGNED, lambda row: row[0] >= count, 600)
    print(
        f"mass: {count} certificates recorded and signed in {signed_at - started:.1f} s "
        "(the signer inside `serve`)"
    )
    time.sleep(12)  # past the CRL debounce, so the CRL before the event is the reference
    crl_before = database.execute(CRL).fetchone()
    purges_before = len(cdn.received)
    items = (
        {"issuer": "bench", "serial": f"{r.serial:x}", "reason": "keyCompromise"} for r in records
    )
    started = time.perf_counter()
    answer = stack.api.revoke_stream(items)
    acknowledged = time.perf_counter() - started
    assert answer["revoked"] == count, answer
    keys = issuer_keys(stack.ca.certificate)[HashAlgorithm.SHA1]
    rng = random.Random(2)
    samples: list[tuple[float, int, int]] = []
    while True:
        (done,) = database.execute(REVOKED_SIGNED).fetchone()
        sample = rng.sample(records, 50)
        samples.append(
            (
                time.perf_counter() - started,
                done,
                ocsp_revoked(stack.ocsp_url, keys, [r.serial for r in sample]),
            )
        )
        if done >= count or time.perf_counter() - started > 600:
            break
        time.sleep(1)
    all_revoked = time.perf_counter() - started
    final_sample = ocsp_revoked(stack.ocsp_url, keys, [r.serial for r in rng.sample(records, 500)])
    # the full check through the store: every response's version is the revoked row's
    serials = [r.serial for r in records]
    rows = store.certificates_many(issuer.id, serials)
    versions = store.response_versions(issuer.id, serials)
    stale = sum(1 for s in serials if not rows[s].revoked or versions.get(s, 0) < rows[s].version)
    print(
        f"mass: {count} revocations through NDJSON acknowledged in {acknowledged:.1f} s "
        f"({count / acknowledged:.0f}/s)\n"
        f"  every one held revoked (signed response at the revoked version) after "
        f"{all_revoked:.1f} s from the request's start; target 120 s\n"
        f"  progress (s, revoked-and-signed in the store, of 50 sampled OCSP GETs revoked): "
        + ", ".join(f"({t:.0f}, {d}, {o})" for t, d, o in samples[:: max(1, len(samples) // 8)])
        + f"\n  final: {final_sample}/500 sampled OCSP GETs to the responder revoked; "
        f"full store check: {count - stale}/{count} revoked at their current version",
        flush=True,
    )
    number, entries = crl_before or (0, 0)
    try:
        listed = until(database, CRL, lambda row: row is not None and row[1] >= count, 300)
        listed_at = f"{listed - started:.1f} s"
    except TimeoutError:
        listed_at = "not within 300 s more"
    crl_after = database.execute(CRL).fetchone()
    (rejected,) = database.execute("SELECT count(*) FROM crl_rejections").fetchone()
    time.sleep(12)  # two coalescing windows after the last change: every purge has gone
    purges = cdn.received[purges_before:]
    tags = sum(len(t) for _, t in purges)
    print(
        f"  CRL: number {number} ({entries} entries) -> {crl_after[0]} ({crl_after[1]} entries); "
        f"one listing every revocation {listed_at} after the request's start (checked once "
        f"every one was revoked; debounce 10 s); builds the gate rejected: {rejected}\n"
        f"  CDN purge requests: {len(purges)} ({tags} tags) for {count} revocations: "
        + ", ".join(sorted({str(t) for _, t in purges})[:6])
    )
    store.close()


def flat(directory: Path, count: int) -> None:
    step = max(count // 10, 1)
    stack = Stack(directory, signing=False)
    try:
        store = open_store(str(directory / "certstatus.db"))
        (issuer,) = store.issuers()
        records = bulk_records(issuer.id, count)
        for start in range(0, count, 10_000):
            store.add_certificates(records[start : start + 10_000], int(time.time()))
        store.close()
        database = stack.database()
        (base,) = database.execute("SELECT seq FROM audit_head").fetchone()
        readings: list[tuple[int, int]] = []
        finished = threading.Event()

        def watch() -> None:  # one audit entry per revocation: the head counts them cheaply
            database = stack.database()  # its own connection: sqlite3's are per thread
            next_mark = step
            while not finished.is_set() and next_mark <= count:
                (seq,) = database.execute("SELECT seq FROM audit_head").fetchone()
                if seq - base >= next_mark:
                    readings.append((seq - base, peak_rss_kb(stack.api_pid)))
                    next_mark = (seq - base) // step * step + step
                finished.wait(0.2)

        watcher = threading.Thread(target=watch)
        rss_before = peak_rss_kb(stack.api_pid)
        items = (
            {"issuer": "bench", "serial": f"{r.serial:x}", "reason": "keyCompromise"}
            for r in records
        )
        watcher.start()
        started = time.perf_counter()
        answer = stack.api.revoke_stream(items)
        elapsed = time.perf_counter() - started
        finished.set()
        watcher.join()
        assert answer["revoked"] == count, answer
        print(
            f"flat: {count} revocations in one NDJSON stream acknowledged in {elapsed:.1f} s "
            f"({count / elapsed:.0f}/s)\n"
            f"  API peak RSS (VmHWM) before the stream {rss_before / 1024:.0f} MiB; as the "
            "committed count passed: "
            + ", ".join(f"{n // 1000}k {kb / 1024:.0f} MiB" for n, kb in readings)
            + f"; at the end {peak_rss_kb(stack.api_pid) / 1024:.0f} MiB"
        )
    finally:
        stack.stop()


MODES = ("record", "bulk", "authoritative", "mass", "flat")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=MODES)
    parser.add_argument("--certs", type=int)
    parser.add_argument("--clients", type=int)
    parser.add_argument("--revocations", type=int)
    parser.add_argument(
        "--no-cdn", action="store_true", help="mass: no [[caches]] (the purger left idle)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="certstatus-api-bench-") as tmp:
        directory = Path(tmp)
        if args.what == "record":
            record(directory, args.certs or 1600, args.clients or 16)
        elif args.what == "bulk":
            bulk(directory, args.revocations or 100_000)
        elif args.what == "authoritative":
            authoritative(directory, args.certs or 400, args.clients or 4)
        elif args.what == "mass":
            mass(directory, args.revocations or 100_000, not args.no_cdn)
        else:
            flat(directory, args.revocations or 1_000_000)


if __name__ == "__main__":
    main()
