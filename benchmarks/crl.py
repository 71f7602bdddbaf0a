"""CRL build at scale: one CRL with N revoked entries (default 1 000 000), built, gated and
published through CrlService, timed by phase, with peak memory; and `cryptography`'s
CertificateRevocationListBuilder on a tenth of the entries for comparison (it is not used).

    .venv/bin/python -m benchmarks.crl [--entries 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import resource
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from certstatus.config import load_config, load_issuer_material
from certstatus.crl.gate import GateInput, check
from certstatus.crlbuilder import CrlService
from certstatus.demo.ca import DemoCA, write_key, write_pem
from certstatus.ingest import Ingest
from certstatus.store import open_store

CONFIG = """\
database = "certstatus.db"
[[issuers]]
name = "bench"
certificate = "issuer.pem"
responder_certificate = "responder.pem"
responder_key = "responder.key"
issuer_key = "issuer.key"
crl_url = "http://crl.example.com/{issuer}/{partition}.crl"
"""


def setup(directory: Path, entries: int) -> tuple[CrlService, int]:
    ca = DemoCA.create("bench CA")
    responder, key = ca.responder()
    write_pem(directory / "issuer.pem", ca.certificate)
    write_key(directory / "issuer.key", ca.key)
    write_pem(directory / "responder.pem", responder)
    write_key(directory / "responder.key", key)
    (directory / "certstatus.toml").write_text(CONFIG)
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
    db = (
        store._connect()
    )  # bulk setup only: a million revocations through revoke() is not the point
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO certificates (issuer_id, serial, kind, not_after, ingested_at, revoked, "
        "revoked_at, reason, revoked_recorded_at, due_at) VALUES (?, ?, 'cert', ?, ?, 1, ?, ?, ?, "
        "NULL)",
        rows,
    )
    db.execute("COMMIT")
    return CrlService(store, [(issuer_id, materials[0])], config.crl), issuer_id


def phases(service: CrlService) -> dict[str, float]:
    """The steps of CrlService.build, timed one by one (same calls, same order)."""
    [issuer] = service.issuers
    store = service.store
    now = int(time.time())
    timings = {}
    start = time.perf_counter()
    entries = store.revoked_entries(issuer.id, 0, service.policy.r18_cutoff(now))
    timings["read_s"] = time.perf_counter() - start
    start = time.perf_counter()
    der = issuer.signer.sign(entries, 10**6, now, now + 7 * 86400, None)
    timings["encode_and_sign_s"] = time.perf_counter() - start
    start = time.perf_counter()
    previous = store.current_crl(issuer.id, 0)
    carried = service._carried(issuer.id, previous, 0, {e.serial for e in entries})
    problems = check(
        der, GateInput(issuer.material.certificate, None, None, frozenset(carried), frozenset())
    )
    timings["gate_s"] = time.perf_counter() - start
    assert problems == [], problems
    timings["crl_bytes"] = len(der)
    return timings


def cryptography_builder(ca_material, entries: int) -> float:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_material.certificate.subject)
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
    builder.sign(ca_material.issuer_key.private_key, hashes.SHA256())  # type: ignore[attr-defined]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        service, _ = setup(Path(tmp), args.entries)
        report: dict[str, object] = {"entries": args.entries}
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        first = service.build_due(force=True)[0]
        report["first_build_s"] = round(time.perf_counter() - start, 2)
        assert first.published and first.entries == args.entries
        start = time.perf_counter()
        second = service.build_due(force=True)[0]  # gate now carries a million previous entries
        report["rebuild_with_previous_s"] = round(time.perf_counter() - start, 2)
        assert second.published
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        report["peak_rss_above_setup_mib"] = round((peak - baseline) / 1024)
        report["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        report["phases"] = {k: round(v, 2) for k, v in phases(service).items()}
        tenth = args.entries // 10
        elapsed = cryptography_builder(service.issuers[0].material, tenth)
        report["cryptography_builder"] = {
            "entries": tenth,
            "seconds": round(elapsed, 2),
            "extrapolated_full_s": round(elapsed * 10, 1),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
