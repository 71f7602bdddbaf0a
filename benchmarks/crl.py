"""CRL build at scale: one CRL with N revoked entries, built, gated and published through
CrlService, twice (the second build's gate carries the first CRL's N entries), with the peak
resident memory of the process that did it.

Each size gets a fresh database and its own build process, so a size's peak (VmHWM from
/proc/self/status) is its own and not the largest size's. The process's resident memory
before the first build (interpreter, imports, the open store) is reported too.

    .venv/bin/python -m benchmarks.crl [--entries 100000 1000000] [--engine sqlite|postgres]
                                       [--cryptography]

On PostgreSQL a local primary is started (certstatus.cluster.local, loopback only) and each
size gets a database of its own on it.

--cryptography also times `cryptography`'s CertificateRevocationListBuilder on a tenth of the
largest size for comparison (it is not used).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from certstatus.config import load_config, load_issuer_material
from certstatus.crlbuilder import CrlService
from certstatus.demo.ca import DemoCA, write_key, write_pem
from certstatus.ingest import Ingest
from certstatus.store import open_store

CONFIG = """\
database = "{database}"
[[issuers]]
name = "bench"
certificate = "issuer.pem"
responder_certificate = "responder.pem"
responder_key = "responder.key"
issuer_key = "issuer.key"
crl_url = "http://crl.example.com/{issuer}/{partition}.crl"
"""


def setup(directory: Path, entries: int, database: str = "certstatus.db") -> None:
    """A deployment whose one issuer has `entries` revoked certificates, 17 to 32 hex digits
    long (so text order and numeric order differ), all recorded an hour ago."""
    ca = DemoCA.create("bench CA")
    responder, key = ca.responder()
    write_pem(directory / "issuer.pem", ca.certificate)
    write_key(directory / "issuer.key", ca.key)
    write_pem(directory / "responder.pem", responder)
    write_key(directory / "responder.key", key)
    (directory / "certstatus.toml").write_text(CONFIG.replace("{database}", database))
    config = load_config(directory / "certstatus.toml")
    materials = load_issuer_material(config)
    store = open_store(config.database, config.base_dir)
    issuer_id = Ingest(store, materials).issuer_id("bench")
    rng = random.Random(1)
    now = int(time.time())
    reasons = [0, 1, 3, 4, 5, 9]
    rows = (
        (
            issuer_id,
            format(rng.getrandbits(127) | 1 << 64, "x"),
            now + 90 * 86400,
            now,
            now - rng.randrange(86400 * 80),
            reasons[n % len(reasons)],
            now - 3600,
        )
        for n in range(entries)
    )
    columns = (
        "issuer_id, serial, kind, not_after, ingested_at, revoked, revoked_at, reason, "
        "revoked_recorded_at, due_at"
    )
    # bulk setup only: a million revocations through revoke() is not the point
    if database.startswith("postgresql://"):
        import psycopg  # here, not at the top: a SQLite build process never loads it

        with (
            psycopg.connect(database) as conn,
            conn.cursor().copy(
                f"COPY certificates ({columns}) FROM STDIN"  # type: ignore[arg-type]
            ) as copy,
        ):
            for issuer, serial, not_after, ingested, at, reason, recorded in rows:
                copy.write_row(
                    (issuer, serial, "cert", not_after, ingested, 1, at, reason, recorded, None)
                )
        with psycopg.connect(database, autocommit=True) as conn:
            # what autovacuum would do soon after a bulk load: without statistics the builder's
            # ordered walk was planned as a sort, whose first fetch outran statement_timeout
            conn.execute("ANALYZE certificates")
    else:
        db = store._connect()  # type: ignore[attr-defined]
        db.execute("BEGIN")
        db.executemany(
            f"INSERT INTO certificates ({columns}) VALUES (?, ?, 'cert', ?, ?, 1, ?, ?, ?, NULL)",
            rows,
        )
        db.execute("COMMIT")
    store.close()


def _memory_kib(field: str) -> int:
    """A line of /proc/self/status (VmRSS now, VmHWM the peak so far), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def build_twice(directory: Path, entries: int) -> dict[str, object]:
    """Runs in its own process (--build): the first build has no previous CRL, the second
    gates against the first's entries."""
    config = load_config(directory / "certstatus.toml")
    materials = load_issuer_material(config)
    store = open_store(config.database, config.base_dir)
    [issuer] = store.issuers()
    service = CrlService(store, [(issuer.id, materials[0])], config.crl)
    report: dict[str, object] = {"entries": entries, "rss_before_mib": _memory_kib("VmRSS") // 1024}
    start = time.perf_counter()
    first = service.build_due(force=True)[0]
    report["first_build_s"] = round(time.perf_counter() - start, 2)
    assert first.published and first.entries == entries, first
    start = time.perf_counter()
    second = service.build_due(force=True)[0]
    report["rebuild_with_previous_s"] = round(time.perf_counter() - start, 2)
    assert second.published and second.entries == entries, second
    report["peak_rss_mib"] = _memory_kib("VmHWM") // 1024
    current = store.current_crl(issuer.id, 0)
    assert current is not None
    report["crl_bytes"] = len(current.der)
    return report


def measure(entries: int, database: str = "certstatus.db") -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        setup(Path(tmp), entries, database)
        setup_s = round(time.perf_counter() - start, 1)
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.crl", "--build", tmp, "--entries", str(entries)],
            capture_output=True,
            text=True,
            env=os.environ,
            check=False,
        )
        if child.returncode != 0:
            raise SystemExit(f"build of {entries} entries failed:\n{child.stderr}")
        report: dict[str, object] = json.loads(child.stdout)
        report["setup_s"] = setup_s
        return report


def on_postgres(sizes: list[int]) -> list[dict[str, object]]:
    """Each size on a fresh database of one local PostgreSQL primary."""
    import psycopg

    from certstatus.cluster.local import Cluster

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o755)  # the postgres user must reach the cluster inside
        cluster = Cluster.up(Path(tmp) / "cluster", replicas=0)
        try:
            admin = cluster.primary.url.rsplit("/", 1)[0]
            reports = []
            for n, entries in enumerate(sizes):
                with psycopg.connect(admin + "/postgres", autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE crl_bench_{n}".encode())
                reports.append(measure(entries, f"{admin}/crl_bench_{n}"))
            return reports
        finally:
            cluster.down()


def cryptography_builder(ca: DemoCA, entries: int) -> float:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=7))
    )
    start = time.perf_counter()
    for n in range(entries):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number((1 << 64) + n)
            .revocation_date(now)
            .build()
        )
    builder.sign(ca.key, hashes.SHA256())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--cryptography", action="store_true")
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)  # the per-size child
    args = parser.parse_args()
    if args.build is not None:
        print(json.dumps(build_twice(args.build, args.entries[0])))
        return
    sizes = on_postgres(args.entries) if args.engine == "postgres" else map(measure, args.entries)
    report: dict[str, object] = {"engine": args.engine, "sizes": list(sizes)}
    if args.cryptography:
        tenth = max(args.entries) // 10
        elapsed = cryptography_builder(DemoCA.create("bench CA"), tenth)
        report["cryptography_builder"] = {
            "entries": tenth,
            "seconds": round(elapsed, 2),
            "extrapolated_full_s": round(elapsed * 10, 1),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
