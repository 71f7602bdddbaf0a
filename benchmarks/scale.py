"""Scale: one deployment grown to N certificates, measured at each size on the way (issue 15).

At each size: real certificates recorded through `Ingest.add_files` (what `certstatus add` runs:
PEM parse, leaf checks, issuer signature verified, batches of 10 000), pregeneration by
`Signer` with 2 processes against `openssl speed -multi 2 ecdsap256` in the same run, bytes on
disk per certificate after a checkpoint, the periodic queries' times, and serving: `wrk -t2 -c64`
GET and POST for random serials against `certstatus serve` (2 workers, each of --servers) and nginx
serving the same response bytes (the GET reference for both methods), with the responder's RSS
and CPU microseconds per answer.

    .venv/bin/python -m benchmarks.scale --certs 100000 --engine sqlite|postgres \\
        [--sizes 1000,100000] [--json] [--duration 5] [--records-above 100000]

--records-above N records the sizes above N without X.509 certificates, as benchmarks.fill
does: issuing 10^7 real certificates here takes longer than the rest of the run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    leaf_pem_batches,
    make_deployment,
    openssl_speed,
    random_serials,
    record_serials,
)
from benchmarks.load import (
    measure,
    nginx,
    process_tree,
    responder_config,
    rss_bytes,
    same_bytes,
    wait_ready,
    write_samples,
)
from certstatus.config import load_config, load_issuer_material
from certstatus.demo.ca import DemoCA
from certstatus.ingest import Ingest
from certstatus.ports import free_port
from certstatus.signer import Signer
from certstatus.store import open_store
from certstatus.store.base import Priority


def log(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Deployment:
    config: Path
    ca: DemoCA
    disk_bytes: Callable[[], int]  # the database's size on disk, after a checkpoint


@contextmanager
def sqlite_deployment(directory: Path) -> Iterator[Deployment]:
    ca = DemoCA.create("scale CA")
    config = make_deployment(directory, server="granian", workers=2, ca=ca)
    database = directory / "certstatus.db"

    def disk_bytes() -> int:
        with sqlite3.connect(database) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return sum(
            p.stat().st_size
            for p in (database, Path(f"{database}-wal"), Path(f"{database}-shm"))
            if p.exists()
        )

    yield Deployment(config, ca, disk_bytes)


@contextmanager
def postgres_deployment(directory: Path, shared_buffers_mb: int) -> Iterator[Deployment]:
    """A primary without replicas: the responder reads the primary (the replica case is
    `benchmarks.postgres serving`)."""
    import psycopg

    from benchmarks.postgres import setup

    cluster, config = setup(directory, 0, shared_buffers_mb=shared_buffers_mb)
    try:
        ca = DemoCA.load(cluster.dir / "issuer.pem", cluster.dir / "issuer.key")
        url = load_config(config).database

        def disk_bytes() -> int:
            with psycopg.connect(url, autocommit=True) as db:
                db.execute("CHECKPOINT")
                row = db.execute("SELECT pg_database_size(current_database())").fetchone()
            assert row is not None
            return int(row[0])

        yield Deployment(config, ca, disk_bytes)
    finally:
        cluster.down()


def responses_per_row(store: Any, issuer_id: int, serial: int) -> int:
    """Signed responses a certificate's row holds: 2 (SHA-1 and SHA-256 CertIDs), or 1 where
    only the SHA-1 one is pregenerated. sign_due counts rows."""
    info = store.response_info(issuer_id, serial)
    assert info is not None, "pregeneration left a certificate unsigned"
    return 1 + bool(info.der_sha256)


def periodic_queries(store: Any, issuer_id: int, now: int) -> dict[str, float]:
    """Milliseconds per periodic query (median of 5): benchmarks.queries' set when that module
    exists, else the signer's due count, the monitor's freshness, the watchdog's new-serial
    page (100 serials recorded within the hour: the same work at every size) and the CRL
    builder's dirty partitions, timed here."""
    try:
        queries = importlib.import_module("benchmarks.queries")
    except ImportError:
        queries = None
    if queries is not None:  # it reports seconds
        seconds = queries.periodic_query_times(store, now)
        return {name: round(value * 1000, 3) for name, value in seconds.items()}
    calls: dict[str, Callable[[], object]] = {
        "due_count": lambda: store.due_count(now),
        "freshness": lambda: store.freshness(now),
        "new_certificates": lambda: store.new_certificates((now - 3600, 0, ""), 100),
        "crl_dirty_since": lambda: store.crl_dirty_since(issuer_id),
    }
    times = {}
    for name, call in calls.items():
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            call()
            runs.append(time.perf_counter() - started)
        times[name] = round(statistics.median(runs) * 1000, 3)
    return times


def serve(
    directory: Path,
    config: Path,
    store: Any,
    issuer: Any,
    issuer_id: int,
    serials: list[int],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """nginx GET, then certstatus GET and POST, each after a 1 s warm-up; CPU per answer and
    the responder's RSS after the runs."""
    directory.mkdir()
    directory.chmod(0o755)  # nginx workers run as an unprivileged user
    samples = write_samples(directory, store, issuer, issuer_id, serials, args.sample)
    results: dict[str, Any] = {}
    with nginx(directory, samples.root) as (nginx_url, nginx_pid):
        wait_ready(nginx_url + samples.first_path)
        measure(nginx_url, samples, 1, "GET", nginx_pid)
        reference = measure(nginx_url, samples, args.duration, "GET", nginx_pid)
        results["nginx_get"] = reference
        for n, server in enumerate(args.servers.split(",")):
            figures = serve_one(directory, config, server, nginx_url, samples, reference, args)
            if n == 0:  # the first server's figures at the top, as before
                results.update(figures)
            results.setdefault("servers", {})[server] = figures
    shutil.rmtree(samples.root)
    return results


def serve_one(
    directory: Path,
    config: Path,
    server: str,
    nginx_url: str,
    samples: Any,
    reference: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """GET and POST against `certstatus serve` with `server`, 2 workers."""
    port = free_port()
    served = responder_config(config, config.parent / f"serve-{port}.toml", port, server, 2)
    results: dict[str, Any] = {}
    with (directory / f"responder-{server}.log").open("wb") as log_file:
        responder = subprocess.Popen(
            [sys.executable, "-m", "certstatus.cli", "serve", "--config", str(served)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url + "/readyz", timeout=60)
            same_bytes(url, nginx_url, samples.first_path)
            for method in ("GET", "POST"):
                measure(url, samples, 1, method, responder.pid)
                ours = measure(url, samples, args.duration, method, responder.pid)
                ours["ratio_to_nginx_get"] = round(
                    ours["requests_per_s"] / reference["requests_per_s"], 3
                )
                results[method.lower()] = ours
            results["responder_rss_mb"] = round(rss_bytes(process_tree(responder.pid)) / 2**20, 1)
            results["responder_processes"] = len(process_tree(responder.pid))
        finally:
            responder.terminate()
            responder.wait(timeout=30)
    return results


def ingest_certificates(ingest: Ingest, ca: DemoCA, serials: list[int], work: Path) -> float:
    """Seconds `Ingest.add_files` took to record real certificates with these serials, issued
    beforehand (issuing is not timed)."""
    ingest_s = 0.0
    for chunk, pem in leaf_pem_batches(ca, serials):
        batch = work / "batch.pem"
        batch.write_bytes(pem)
        started = time.perf_counter()
        result = ingest.add_files([batch], int(time.time()))
        ingest_s += time.perf_counter() - started
        assert result.added == len(chunk), result
    return ingest_s


def record_without_x509(store: Any, issuer_id: int, serials: list[int]) -> float:
    """Seconds to record these serials without X.509 certificates (--records-above): issuing
    10^7 real certificates here takes longer than the rest of the run, and their checks are
    what the sizes below measure."""
    started = time.perf_counter()
    record_serials(store, issuer_id, serials, "benchmark:scale")
    return time.perf_counter() - started


def grow(deployment: Deployment, sizes: list[int], args: argparse.Namespace) -> dict[str, Any]:
    config = load_config(deployment.config)
    materials = load_issuer_material(config)
    store = open_store(config.database, config.base_dir)
    ingest = Ingest(store, materials, actor="benchmark:scale")
    name = ingest.issuer_names[0]
    issuer_id = ingest.issuer_id(name)
    serials: list[int] = []
    totals = {"ingested": 0, "ingest_s": 0.0, "responses": 0, "pregen_s": 0.0}
    per_size: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="scale-", dir=deployment.config.parent))
    work.chmod(0o755)  # nginx workers run as an unprivileged user
    try:
        for size in sizes:
            new = random_serials(size - len(serials), seed=size, avoid=set(serials))
            as_records = args.records_above is not None and size > args.records_above
            log(
                f"size {size}: {'recording' if as_records else 'issuing and recording'} "
                f"{len(new)} certificates"
            )
            if as_records:
                ingest_s = record_without_x509(store, issuer_id, new)
            else:
                ingest_s = ingest_certificates(ingest, deployment.ca, new, work)
            serials += new
            log(f"size {size}: recorded at {len(new) / ingest_s:.0f}/s; pregenerating")
            started = time.perf_counter()
            with Signer(store, materials, {name: issuer_id}, config.signing, processes=2) as signer:
                rows = signer.sign_due()
            pregen_s = time.perf_counter() - started
            responses = rows * responses_per_row(store, issuer_id, new[0])
            due = store.due_count(int(time.time()))
            assert due[Priority.NEW] == 0, due
            disk = deployment.disk_bytes()
            queries = periodic_queries(store, issuer_id, int(time.time()))
            log(f"size {size}: {responses} responses in {pregen_s:.1f}s; serving")
            serving = serve(
                work / f"serve-{size}",
                deployment.config,
                store,
                materials[0].certificate,
                issuer_id,
                serials,
                args,
            )
            if not as_records:  # only checked certificates count as ingest
                totals["ingested"] += len(new)
                totals["ingest_s"] += ingest_s
            totals["responses"] += responses
            totals["pregen_s"] += pregen_s
            per_size[str(size)] = {
                "certificates": size,
                "ingested": len(new),
                "recorded_as": "records" if as_records else "certificates",
                ("records_per_s" if as_records else "ingest_per_s"): round(len(new) / ingest_s),
                "pregen_responses": responses,
                "pregen_seconds": round(pregen_s, 2),
                "pregen_per_s": round(responses / pregen_s),
                "bytes_on_disk": disk,
                "bytes_per_cert": round(disk / size),
                "queries_ms": queries,
                **serving,
                "load_average": os.getloadavg(),
            }
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)
    return {"totals": totals, "per_size": per_size}


def spread_serials(store: Any, issuer_id: int, count: int, seed: int = 5) -> list[int]:
    """`count` recorded serials spread over the whole key space, each found by one index seek
    from a random point (a random sample of 10^7 rows would read the whole table)."""
    rng = random.Random(seed)
    found: set[int] = set()
    with store._reading() as db:
        for _ in range(count * 2):
            start = format(rng.getrandbits(127) | (1 << 64), "x")
            row = db.execute(
                store._sql(
                    "SELECT serial FROM certificates WHERE issuer_id = ? AND serial >= ? "
                    "ORDER BY serial LIMIT 1"
                ),
                (issuer_id, start),
            ).fetchone()
            if row is not None:
                found.add(int(row[0], 16))
            if len(found) >= count:
                break
    return sorted(found)


def measure_existing(directory: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Serving, disk and the periodic queries of a deployment built beforehand (e.g. 10^7
    certificates, whose ingest and signing are measured at smaller sizes): its config is
    DIR/certstatus.toml, every certificate signed."""
    config_path = directory / "certstatus.toml"
    config = load_config(config_path)
    materials = load_issuer_material(config)
    store = open_store(config.database, config.base_dir)
    try:
        [issuer] = store.issuers()
        counts = store.counts()
        serials = spread_serials(store, issuer.id, args.sample)
        log(f"existing deployment: {counts}; {len(serials)} serials sampled; serving")
        work = Path(tempfile.mkdtemp(prefix="scale-", dir="/tmp"))
        work.chmod(0o755)
        try:
            serving = serve(
                work / "serve",
                config_path,
                store,
                materials[0].certificate,
                issuer.id,
                serials,
                args,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        queries = periodic_queries(store, issuer.id, int(time.time()))
    finally:
        store.close()
    database = Path(config.base_dir or directory) / "certstatus.db"
    disk = sum(
        p.stat().st_size
        for p in (database, Path(f"{database}-wal"), Path(f"{database}-shm"))
        if p.exists()
    )
    return {
        "counts": counts,
        "bytes_on_disk": disk,
        "queries_ms": queries,
        **serving,
        "load_average": os.getloadavg(),
    }


def parse_sizes(certs: int, sizes: str | None) -> list[int]:
    chosen = sorted({int(s.replace("_", "")) for s in sizes.split(",")} if sizes else {certs})
    if chosen[-1] > certs or chosen[0] <= 0:
        raise SystemExit(f"--sizes must be positive and at most --certs ({certs})")
    return sorted(set(chosen) | {certs})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--certs", type=int, help="the final size")
    parser.add_argument(
        "--existing", type=Path, help="measure serving on a deployment built beforehand (SQLite)"
    )
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--sizes", help="sizes to measure on the way, e.g. 1000,100000")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument(
        "--servers",
        default="native",
        help="responder.server values to measure, e.g. native,granian",
    )
    parser.add_argument("--sample", type=int, default=20_000, help="serials wrk picks from")
    parser.add_argument("--openssl-seconds", type=int, default=3)
    parser.add_argument("--shared-buffers", type=int, default=256, help="MB, postgres")
    parser.add_argument(
        "--records-above",
        type=int,
        help="sizes above this are recorded without X.509 certificates (as benchmarks.fill "
        "does); their ingest rate is not the verified one and is left out of ingest_per_s",
    )
    args = parser.parse_args()
    if args.existing is not None:
        print(json.dumps(measure_existing(args.existing, args)))
        return
    if args.certs is None:
        parser.error("--certs is required (or --existing DIR)")
    sizes = parse_sizes(args.certs, args.sizes)
    missing = [tool for tool in ("wrk", "nginx", "openssl") if not shutil.which(tool)]
    if missing:
        sys.exit(f"needs {', '.join(missing)}: apt-get install -y wrk nginx openssl")
    started_load = os.getloadavg()
    openssl = openssl_speed("ecdsap256", 2, args.openssl_seconds)
    log(f"openssl speed -multi 2 ecdsap256: {openssl:.0f} signatures/s")
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        directory = Path(tmp)
        directory.chmod(0o755)  # nginx workers and the postgres user reach inside
        deployment = (
            sqlite_deployment(directory / "deployment")
            if args.engine == "sqlite"
            else postgres_deployment(directory / "deployment", args.shared_buffers)
        )
        with deployment as ready:
            grown = grow(ready, sizes, args)
    totals, per_size = grown["totals"], grown["per_size"]
    pregen_per_s = totals["responses"] / totals["pregen_s"]
    report = {
        "engine": args.engine,
        "certificates": args.certs,
        "sizes": sizes,
        "ingest_per_s": (
            round(totals["ingested"] / totals["ingest_s"]) if totals["ingest_s"] else None
        ),
        "pregen_per_s": round(pregen_per_s),
        "pregen_seconds": round(totals["pregen_s"], 2),
        "openssl_speed_sign_per_s": round(openssl),
        "pregen_openssl_ratio": round(pregen_per_s / openssl, 3),
        "bytes_per_cert": per_size[str(sizes[-1])]["bytes_per_cert"],
        "load_average_at_start": started_load,
        "per_size": per_size,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"{args.engine}, {args.certs} certificates (load average {started_load})")
    print(
        f"ingest {report['ingest_per_s']}/s; pregeneration {report['pregen_per_s']} responses/s "
        f"= {report['pregen_openssl_ratio']} of openssl ({report['openssl_speed_sign_per_s']}/s); "
        f"{report['bytes_per_cert']} bytes per certificate"
    )
    for size, row in per_size.items():
        get, post = row["get"], row["post"]
        print(
            f"{size:>10}: GET {get['requests_per_s']:.0f}/s ({get['cpu_us_per_answer']} us, "
            f"{get['ratio_to_nginx_get']} of nginx), POST {post['requests_per_s']:.0f}/s "
            f"({post['cpu_us_per_answer']} us, {post['ratio_to_nginx_get']}), nginx "
            f"{row['nginx_get']['requests_per_s']:.0f}/s ({row['nginx_get']['cpu_us_per_answer']}"
            f" us), RSS {row['responder_rss_mb']} MB, queries {row['queries_ms']} ms"
        )


if __name__ == "__main__":
    main()
