"""Bulk ingest and end-to-end pregeneration on SQLite and PostgreSQL, for the scale harness.

ingest          `certstatus add` of one PEM file of N real leaf certificates (parse, leaf and
                issuer checks, every signature verified, stored with its audit entry), in
                certificates/s, against `openssl speed -multi 2` verify/s of the issuer's
                algorithm (the ceiling: one verification per certificate);
pregeneration   claim, sign both CertID responses, store, over N fresh certificates, in
                responses/s, against `openssl speed -multi 2 ecdsap256` sign/s.

    .venv/bin/python -m benchmarks.ingest [--certs 100000] [--engine sqlite|postgres|both]
        [--ca-key p256|rsa2048] [--skip-pregeneration]

The functions measure_ingest(config, n) and measure_pregeneration(config, n) work on either
engine (the config's database decides) and return a rate; the caller owns the deployment.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from benchmarks.common import bulk_records, openssl_speed
from certstatus.config import load_config, load_issuer_certificates, load_issuer_material
from certstatus.demo.ca import DemoCA, ca_builder, responder_builder, write_key, write_pem
from certstatus.ingest import Ingest
from certstatus.signer import Signer
from certstatus.store import open_store
from certstatus.store.base import Priority

CONFIG = """\
database = "{database}"

[signing]
workers = 2
batch_size = {batch}

[[issuers]]
name = "bench"
certificate = "issuer.pem"
responder_certificate = "responder.pem"
responder_key = "responder.key"
"""
CA_KEY = "ca.key"  # beside the config: signs the leaves this benchmark ingests


def make_deployment(
    directory: Path, database: str = "certstatus.db", ca_key: str = "p256", batch: int = 256
) -> Path:
    """A CA (P-256 or RSA-2048 key, kept in ca.key to sign leaves), a P-256 delegated
    responder, and a config on the database given (a path or a postgresql:// URL)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    key = (
        ec.generate_private_key(ec.SECP256R1())
        if ca_key == "p256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench CA {ca_key}")])
    certificate = ca_builder(name, key.public_key(), now).sign(key, hashes.SHA256())
    ca = DemoCA("bench CA", None, certificate)
    responder_key = ec.generate_private_key(ec.SECP256R1())
    responder = responder_builder(
        ca, responder_key, now - dt.timedelta(minutes=5), now + dt.timedelta(days=365)
    ).sign(key, hashes.SHA256())
    write_pem(directory / "issuer.pem", certificate)
    write_pem(directory / "responder.pem", responder)
    write_key(directory / "responder.key", responder_key)
    write_key(directory / CA_KEY, key)  # type: ignore[arg-type]
    config = directory / "certstatus.toml"
    config.write_text(CONFIG.format(database=database, batch=batch))
    return config


def _leaves(ca_dir: str, first: int, count: int) -> bytes:
    """count leaves with serials from first on, PEM, signed by the CA in ca_dir (a worker)."""
    directory = Path(ca_dir)
    key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    issuer = x509.load_pem_x509_certificate((directory / "issuer.pem").read_bytes())
    ca = DemoCA("bench CA", key, issuer)  # type: ignore[arg-type]
    subject_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    now = dt.datetime.now(dt.UTC)
    return b"".join(
        ca.leaf(subject_key, serial, "http://ocsp.invalid/", now=now).public_bytes(
            serialization.Encoding.PEM
        )
        for serial in range(first, first + count)
    )


def write_certificates(config_path: Path, count: int, path: Path, seed: int = 1) -> Path:
    """A PEM file of count leaves issued by the benchmark CA beside config_path (not timed)."""
    first = (seed << 100) | (1 << 64)
    step = 5_000
    with ProcessPoolExecutor(
        os.cpu_count() or 1, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        parts = pool.map(
            _leaves,
            [str(config_path.parent)] * len(range(0, count, step)),
            [first + start for start in range(0, count, step)],
            [min(step, count - start) for start in range(0, count, step)],
        )
        with path.open("wb") as out:
            for part in parts:
                out.write(part)
    return path


def measure_ingest(config_path: Path, n: int, certificates: Path | None = None) -> float:
    """Certificates/s of `certstatus add` (Ingest.add_files) of n leaves into the config's
    database: read, checked, every signature verified, recorded with audit entries."""
    if certificates is None:
        certificates = write_certificates(config_path, n, config_path.parent / f"leaves-{n}.pem")
    config = load_config(config_path)
    store = open_store(config.database, config.base_dir)
    try:
        with Ingest(store, load_issuer_certificates(config), actor="bench") as ingest:
            started = time.perf_counter()
            result = ingest.add_files([certificates], int(time.time()))
            elapsed = time.perf_counter() - started
    finally:
        store.close()
    if result.added != n:
        raise RuntimeError(f"expected {n} certificates added, got {result.added}")
    return n / elapsed


def measure_pregeneration(config_path: Path, n: int, processes: int = 2) -> float:
    """Responses/s (two per certificate) of Signer.sign_due over n fresh certificates recorded
    in the config's database: claim, sign, store, end to end."""
    record_fresh(config_path, n)
    return time_signing(config_path, n, processes)


def record_fresh(config_path: Path, n: int) -> None:
    """n certificates due for their first responses (records only: no X.509 to check)."""
    config = load_config(config_path)
    store = open_store(config.database, config.base_dir)
    try:
        issuer_id = Ingest(store, load_issuer_certificates(config)).issuer_id("bench")
        now = int(time.time())
        records = bulk_records(issuer_id, n, seed=7)
        for start in range(0, n, 10_000):
            store.add_certificates(records[start : start + 10_000], now)
    finally:
        store.close()


def time_signing(config_path: Path, n: int, processes: int = 2) -> float:
    """Responses/s of one Signer.sign_due pass that must sign n due certificates."""
    config = load_config(config_path)
    materials = load_issuer_material(config)
    store = open_store(config.database, config.base_dir)
    try:
        issuer_id = Ingest(store, materials).issuer_id("bench")
        with Signer(
            store, materials, {"bench": issuer_id}, config.signing, processes=processes
        ) as signer:
            signer.probe()  # start the pool and open the keys before the clock
            started = time.perf_counter()
            stored = signer.sign_due()
            elapsed = time.perf_counter() - started
        if stored != n or store.due_count(int(time.time()))[Priority.NEW]:
            raise RuntimeError(f"expected {n} certificates signed, got {stored}")
    finally:
        store.close()
    return 2 * n / elapsed


def _verify_speed(ca_key: str) -> float:
    """`openssl speed -multi 2` verifications/s for the issuer's algorithm."""
    algorithm = "ecdsap256" if ca_key == "p256" else "rsa2048"
    out = subprocess.run(
        ["openssl", "speed", "-mr", "-multi", "2", "-seconds", "5", algorithm],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = [x for x in out.splitlines() if x.startswith("+F")][-1]
    return float(line.split(":")[4])


def run_engine(engine: str, directory: Path, args: argparse.Namespace) -> dict[str, object]:
    """Both measurements on one engine, each on a fresh database."""
    cluster = None
    try:
        if engine == "postgres":
            from benchmarks.postgres import setup

            cluster, _ = setup(directory, 0, shared_buffers_mb=256)
            database = cluster.writer_url
        else:
            database = str(directory / "certstatus.db")
        config = make_deployment(directory / "ingest", database, args.ca_key)
        leaves = write_certificates(config, args.certs, directory / "leaves.pem")
        out: dict[str, object] = {"ingest_per_s": round(measure_ingest(config, args.certs, leaves))}
        if not args.skip_pregeneration:
            if engine == "postgres":
                assert cluster is not None
                from certstatus.store.postgres import PostgresStore

                with PostgresStore(database)._writing() as db:  # a fresh queue
                    db.execute("TRUNCATE certificates, responses, audit CASCADE")
                    db.execute("UPDATE audit_head SET seq = 0, hash = %s", ("0" * 64,))
            else:
                Path(database).unlink()
                for suffix in ("-wal", "-shm"):
                    Path(database + suffix).unlink(missing_ok=True)
            out["pregen_per_s"] = round(measure_pregeneration(config, args.certs))
        return out
    finally:
        if cluster is not None:
            cluster.down()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--certs", type=int, default=100_000)
    parser.add_argument("--engine", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--ca-key", choices=["p256", "rsa2048"], default="p256")
    parser.add_argument("--ingest-certs", type=int, help="certificates to ingest (--certs)")
    parser.add_argument("--skip-pregeneration", action="store_true")
    args = parser.parse_args()
    engines = ["sqlite", "postgres"] if args.engine == "both" else [args.engine]
    report: dict[str, object] = {"certificates": args.certs, "ca_key": args.ca_key}
    report["load_before"] = os.getloadavg()[0]
    report["openssl_verify_per_s"] = round(_verify_speed(args.ca_key))
    report["openssl_sign_per_s"] = round(openssl_speed("ecdsap256", 2))
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        Path(tmp).chmod(0o755)  # the postgres user must reach the cluster inside
        for engine in engines:
            figures = run_engine(engine, Path(tmp) / engine, args)
            figures["ingest_verify_ratio"] = round(
                figures["ingest_per_s"] / report["openssl_verify_per_s"],  # type: ignore[operator]
                3,
            )
            if "pregen_per_s" in figures:
                figures["pregen_openssl_ratio"] = round(
                    figures["pregen_per_s"] / report["openssl_sign_per_s"],  # type: ignore[operator]
                    3,
                )
            report[engine] = figures
            print(engine, json.dumps(figures), file=sys.stderr, flush=True)
    report["load_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
