"""CI smoke run of the scale benchmark (issue 15): `python -m benchmarks.scale --json` end to end on
SQLite at a small N (real certificates through ingest, pregeneration, nginx and the responder
under wrk), checking the report's shape and that its figures are sane. Its speed is not judged
here: figures are measured by the benchmark itself, as ratios, on a quiet machine. Also: the
serving benchmarks' peer (openssl ocsp) is given the store's statuses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.peer import write_index
from cryptography.hazmat.primitives.serialization import Encoding

from certstatus.demo.ca import DemoCA
from certstatus.store.base import CertificateRecord, RevocationRequest
from certstatus.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[1]
CERTS = 2000


def run_benchmark(module: str, *args: str, timeout: float = 120) -> dict:
    """`python -m benchmarks.<module> ARGS` against this tree; its one JSON object."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    run = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)  # one JSON object, nothing else on stdout


@pytest.mark.integration
@pytest.mark.skipif(
    not (shutil.which("wrk") and shutil.which("nginx")), reason="needs wrk and nginx"
)
def test_scale_benchmark_reports_every_figure_with_sane_values() -> None:
    report = run_benchmark(
        "scale",
        "--certs",
        str(CERTS),
        "--engine",
        "sqlite",
        "--json",
        "--duration",
        "1",
        "--sample",
        "500",
        "--openssl-seconds",
        "1",
        "--servers",
        "granian,native",
        "--sizes",
        str(CERTS // 2),
        "--records-above",
        str(CERTS // 2),
    )

    assert report["engine"] == "sqlite" and report["sizes"] == [CERTS // 2, CERTS]
    # the first half ingested as real certificates, the rest recorded without X.509 (the
    # way to 10^7): only the checked ones count as ingest
    first, last = report["per_size"][str(CERTS // 2)], report["per_size"][str(CERTS)]
    assert first["recorded_as"] == "certificates" and last["recorded_as"] == "records"
    assert report["ingest_per_s"] == first["ingest_per_s"] > 0
    assert "ingest_per_s" not in last and last["records_per_s"] > 0
    assert report["pregen_per_s"] > 0
    assert report["openssl_speed_sign_per_s"] > 0
    # pregeneration signs with the same primitive on the same cores: it cannot beat openssl
    # by much, and a ratio of 0 would mean nothing was timed
    assert 0 < report["pregen_openssl_ratio"] < 1.5
    # two P-256 responses (~0.3 KB each, the responder certificate stored once) plus the row
    # and indexes; a small file has overhead, but more than 8 KiB per certificate would be a
    # regression worth a look, and under 600 bytes a response would be missing
    assert 600 < report["bytes_per_cert"] < 8192

    size = report["per_size"][str(CERTS)]
    assert size["ingested"] == CERTS // 2
    assert size["pregen_responses"] in (CERTS // 2, CERTS)  # SHA-1 only, or both CertIDs
    assert size["responder_rss_mb"] > 10
    assert size["queries_ms"], "the periodic queries were not timed"
    # milliseconds: no query returns from a database in under a microsecond
    assert all(ms > 0.001 for ms in size["queries_ms"].values()), size["queries_ms"]
    for name in ("nginx_get", "get", "post"):
        figures = size[name]
        assert figures["requests_per_s"] > 0, name
        assert figures["non_2xx"] == 0, name  # every sampled serial answered 200
        assert figures["cpu_us_per_answer"] > 0, name
    for name in ("get", "post"):
        assert 0 < size[name]["ratio_to_nginx_get"] < 5, name
    assert set(size["servers"]) == {"granian", "native"}
    assert size["servers"]["granian"]["get"] == size["get"]  # the first, also at the top
    for server, figures in size["servers"].items():
        for name in ("get", "post"):
            assert figures[name]["non_2xx"] == 0, (server, name)
            assert 0 < figures[name]["ratio_to_nginx_get"] < 5, (server, name)


@pytest.mark.integration
@pytest.mark.parametrize("sha256, per_certificate", [("pregenerate", 2), ("on-request", 1)])
def test_pregen_benchmark_splits_cpu_per_response_by_process(sha256, per_certificate) -> None:
    """benchmarks.pregen (issue 15 item 4) at a small N on SQLite: every certificate signed
    under both CertIDs (or SHA-1 alone: on-request SHA-256), CPU attributed to the signer and
    to its signing pool (the database runs inside the signer on SQLite), next to openssl."""
    # /proc counts CPU in 10 ms ticks: at 300 certificates the signer's whole share was one
    # tick or none once signing got cheaper; 3 000 give it several
    report = run_benchmark(
        "pregen", "--certs", "3000", "--openssl-seconds", "1", "--sha256", sha256, timeout=90
    )
    [round_] = report["rounds"]
    assert round_["responses"] == 3000 * per_certificate and round_["responses_per_s"] > 0
    assert round_["certificates_per_s"] * per_certificate == pytest.approx(
        round_["responses_per_s"], abs=per_certificate
    )
    assert 0 < round_["openssl_ratio"] < 1.5  # the same primitive on the same cores
    cpu = round_["cpu_us_per_response"]
    assert cpu["signer"] > 0 and cpu["pool"] > 0  # the pool, not the signer, signed
    assert cpu["server"] == 0  # no database server on SQLite
    assert cpu["total"] == pytest.approx(cpu["signer"] + cpu["pool"], abs=0.2)


def test_the_peer_index_holds_the_stores_statuses(tmp_path: Path) -> None:
    """openssl's index.txt, written from the store, answers what certstatus answers: V for a
    good serial, R with the time and reason for a revoked one, serials as whole upper-case hex
    bytes (openssl looks a request's serial up in that spelling)."""
    store = SqliteStore(tmp_path / "s.db")
    ca = DemoCA.create()
    issuer_id = store.ensure_issuer("ca", ca.certificate.public_bytes(Encoding.DER))
    now = 1_780_000_000
    good, revoked = 0xABC, 0x1_0000_0000_0000_0001
    store.add_certificates(
        [
            CertificateRecord(issuer_id, s, "cert", now + 86400, 0, now - 60)
            for s in (good, revoked)
        ],
        now,
    )
    store.revoke_many([RevocationRequest(issuer_id, revoked, now - 10, 1, True)], now)
    index = write_index(tmp_path, store, issuer_id, [good, revoked])
    store.close()

    lines = [line.split("\t") for line in index.read_text().splitlines()]
    assert lines[0][:4] == ["V", "260529202640Z", "", "0ABC"]
    assert lines[1][:4] == [
        "R",
        "260529202640Z",
        "260528202630Z,keyCompromise",
        "010000000000000001",
    ]
    assert (tmp_path / "index.txt.attr").read_text() == "unique_subject = no\n"


@pytest.mark.integration
def test_signing_benchmark_runs_and_reports_its_ratios() -> None:
    """benchmarks.signing (R22) at a small count: it builds signing jobs itself, so a change
    to their shape must keep it running (docs/benchmarks.md cites its figures)."""
    report = run_benchmark("signing", "--count", "200")
    for name in ("pipeline", "end_to_end"):
        assert 0 < report[f"{name}_ratio"] < 1.5, name  # the same primitive as openssl's


def test_fill_benchmark_builds_a_signed_deployment_in_key_order(tmp_path: Path) -> None:
    """benchmarks.fill (what `scale --existing` measures at 10^7): every certificate recorded,
    in the stored key's order, and signed."""
    import sqlite3

    report = run_benchmark("fill", str(tmp_path / "filled"), "--certs", "600")
    assert report["certificates"] == report["signed_certificates"] == 600
    assert report["responses_per_s"] > 0 and 200 < report["bytes_per_cert"] < 20_000
    assert report["openssl_sign_per_s"] > 0  # issue 15 item 4: the ceiling, in the same run
    ratio = report["responses_per_s"] / report["openssl_sign_per_s"]
    assert report["pregen_openssl_ratio"] == round(ratio, 3)
    with sqlite3.connect(tmp_path / "filled" / "certstatus.db") as db:
        [(responses,)] = db.execute("SELECT count(*) FROM responses WHERE length(der_sha1) > 0")
        recorded = db.execute(  # the audit log keeps the order they were recorded in
            "SELECT serial, actor FROM audit WHERE serial IS NOT NULL ORDER BY seq"
        ).fetchall()
    assert responses == 600
    serials = [serial for serial, _ in recorded]
    assert len(serials) == 600 and serials == sorted(serials)
    assert {actor for _, actor in recorded} == {"benchmark:fill"}


def test_refresh_benchmark_signs_a_spread_sixteenth_again(tmp_path: Path) -> None:
    """benchmarks.refresh (issue 15 item 4): the certificates whose serial ends in the digit
    are made due and signed again, those only, and nothing is due after the pass."""
    import sqlite3

    run_benchmark("fill", str(tmp_path / "filled"), "--certs", "400")
    database = tmp_path / "filled" / "certstatus.db"
    with sqlite3.connect(database) as db:
        [(ending,)] = db.execute(
            "SELECT count(*) FROM certificates WHERE substr(serial, -1) = 'a'"
        ).fetchall()
        before = dict(db.execute("SELECT serial, der_sha1 FROM responses").fetchall())
    report = run_benchmark("refresh", str(tmp_path / "filled"), "--digit", "a")
    assert ending > 0 and report["due"] == report["stored"] == ending
    assert report["certificates_per_s"] > 0 and report["signer_cpu_us_per_certificate"] > 0
    with sqlite3.connect(database) as db:
        after = dict(db.execute("SELECT serial, der_sha1 FROM responses").fetchall())
        [(still_due,)] = db.execute(
            "SELECT count(*) FROM certificates WHERE due_at <= strftime('%s', 'now')"
        ).fetchall()
    assert still_due == 0
    resigned = {s for s in after if after[s] != before[s]}  # ECDSA: a new signature each time
    assert resigned == {s for s in after if s.endswith("a")}
