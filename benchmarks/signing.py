"""Signing throughput: OCSP responses signed per second on all cores, against `openssl speed
-multi N` in the same run (R22). Two figures:

- pipeline: build + sign responses in N worker processes (what the signer's pool does), no DB;
- end to end: `Signer.sign_due` over a SQLite store of fresh certificates (claim, sign, store).

Each certificate gets two responses (SHA-1 and SHA-256 CertIDs), and both are counted.

    .venv/bin/python -m benchmarks.signing [--count 40000] [--processes 2] [--key p256|rsa2048]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.common import bulk_records, make_deployment, openssl_speed
from certstatus.config import load_config, load_issuer_material
from certstatus.ingest import Ingest
from certstatus.signer import Signer
from certstatus.signer.worker import IssuerSpec, init_worker, sign_jobs
from certstatus.store import open_store


def pipeline(config_path: Path, count: int, processes: int, batch: int = 256) -> float:
    config = load_config(config_path)
    [material] = load_issuer_material(config)
    from cryptography.hazmat.primitives.serialization import Encoding

    spec = IssuerSpec(
        1,
        material.certificate.public_bytes(Encoding.DER),
        material.responder_certificate.public_bytes(Encoding.DER),
        material.key_ref,
    )
    now = int(time.time())
    jobs = [
        (
            1,
            (1 << 100) + n,
            n % 50 == 0,
            now - 5 if n % 50 == 0 else None,
            1 if n % 50 == 0 else None,
            now - 3600,
            now + 7 * 86400,
            now,
            True,  # both CertIDs
        )
        for n in range(count)
    ]
    batches = [jobs[i : i + batch] for i in range(0, count, batch)]
    with ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=init_worker,
        initargs=([spec],),
    ) as pool:
        list(pool.map(sign_jobs, batches[:processes]))  # warm up every worker
        start = time.perf_counter()
        signed = sum(len(result) for result in pool.map(sign_jobs, batches))
        elapsed = time.perf_counter() - start
    return 2 * signed / elapsed


def end_to_end(config_path: Path, count: int, processes: int) -> float:
    config = load_config(config_path)
    materials = load_issuer_material(config)
    store = open_store(config.database, config.base_dir)
    ingest = Ingest(store, materials)
    issuer_id = ingest.issuer_id("bench")
    store.add_certificates(bulk_records(issuer_id, count), int(time.time()))
    with Signer(
        store, materials, {"bench": issuer_id}, config.signing, processes=processes
    ) as signer:
        signer._submit([]).result()  # start the pool before the clock
        start = time.perf_counter()
        stored = signer.sign_due()
        elapsed = time.perf_counter() - start
    assert stored == count
    return 2 * stored / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=40_000, help="certificates per run")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--key", choices=["p256", "rsa2048"], default="p256")
    args = parser.parse_args()
    algorithm = "ecdsap256" if args.key == "p256" else "rsa2048"
    count = args.count if args.key == "p256" else min(args.count, 4_000)
    with tempfile.TemporaryDirectory() as tmp:
        config = make_deployment(Path(tmp), args.key, signers=args.processes)
        openssl = openssl_speed(algorithm, args.processes)
        ours = pipeline(config, count, args.processes)
        e2e = end_to_end(config, count, args.processes)
    report = {
        "key": args.key,
        "processes": args.processes,
        "openssl_speed_sign_per_s": round(openssl),
        "pipeline_responses_per_s": round(ours),
        "pipeline_ratio": round(ours / openssl, 3),
        "end_to_end_sqlite_responses_per_s": round(e2e),
        "end_to_end_ratio": round(e2e / openssl, 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
