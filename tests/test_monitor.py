"""The monitor (the outside view, F1-F6): answer checks, the watchdog against a real served
responder, findings and the Alertmanager webhook, the status page, and its configuration."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from certstatus.config import ConfigError, load_config
from certstatus.monitor import page
from certstatus.monitor.answers import check_answer
from certstatus.monitor.findings import AlertmanagerWebhook, Findings
from certstatus.monitor.service import Monitor
from certstatus.monitor.targets import Target
from certstatus.monitor.watchdog import Watchdog, WatchPolicy
from certstatus.ocsp.certid import HashAlgorithm
from tests.conftest import Deployment, free_port, make_deployment, serving
from tests.test_purger import Clock

HEADERS = {
    "content-type": "application/ocsp-response",
    "cache-control": "max-age=3600, public, no-transform, must-revalidate",
}


@pytest.fixture
def signed(deployment: Deployment):
    store = deployment.store()
    good, bad = deployment.good_and_revoked(store)
    return deployment, store, good, bad


def test_check_answer_accepts_a_correct_answer_and_names_each_problem(signed) -> None:
    deployment, store, good, bad = signed
    issuer = deployment.ca.certificate
    now = time.time()
    der = store.response(1, good.serial_number, HashAlgorithm.SHA256).der

    def check(body=der, serial=good.serial_number, expected="good", headers=HEADERS, at=now):
        return check_answer(200, headers, body, issuer, serial, HashAlgorithm.SHA256, expected, at)

    assert check().correct
    assert check(expected="revoked").problems == ["says good, the primary records revoked"]
    assert "CertID does not match the request" in check(serial=good.serial_number + 1).problems
    assert "expired (nextUpdate passed or missing)" in check(at=now + 30 * 86400).problems
    no_cache = {"content-type": "application/ocsp-response", "cache-control": "no-store"}
    assert "authoritative answer without max-age/public (R12)" in check(headers=no_cache).problems
    too_long = dict(HEADERS, **{"cache-control": "max-age=99999999, public"})
    assert "cacheable past nextUpdate (R12)" in check(headers=too_long).problems
    other = make_deployment(deployment.dir.parent / "other")  # a different CA's responder
    assert check_answer(
        200, HEADERS, der, other.ca.certificate, good.serial_number, HashAlgorithm.SHA256,
        "good", now,
    ).problems[:1] == ["CertID does not match the request"]  # fmt: skip
    from cryptography.x509 import ocsp

    signature = ocsp.load_der_ocsp_response(der).signature
    tampered = bytearray(der)
    tampered[der.index(signature) + len(signature) // 2] ^= 0x01
    assert "signature does not verify" in check(body=bytes(tampered)).problems
    revoked = store.response(1, bad.serial_number, HashAlgorithm.SHA256).der
    assert check(body=revoked, serial=bad.serial_number, expected="revoked").correct
    assert check_answer(503, {}, b"", issuer, 1, HashAlgorithm.SHA1, None, now).kind == "http-503"


@pytest.mark.integration
def test_watchdog_follows_new_serials_until_authoritative_on_every_target(signed) -> None:
    deployment, store, _, _ = signed
    dead = Target("dead", f"http://127.0.0.1:{free_port()}/")
    live = Target("origin", deployment.url)
    clock = Clock(time.time())
    findings = Findings(clock=clock)
    policy = WatchPolicy(warn_after=4, critical_after=8, checkpoints=(1, 2))
    with serving(deployment):
        watchdog = Watchdog(
            store, {1: deployment.ca.certificate}, [live, dead], findings, policy, clock
        )
        fresh = deployment.leaf()
        deployment.ingest(store).add_certificates([(fresh, "new")], int(clock.now))
        assert watchdog.poll_new() == 3  # the fixture's two and this one
        with deployment.signer(store) as signer:
            signer.sign_due()
        clock.now += 1
        watchdog.check_due()
        watchdog.evaluate()
        key = (1, fresh.serial_number)
        assert watchdog.tracked[key].pending == {"dead"}  # answered by the live responder
        assert watchdog.tracked[key].last == {"origin": "good", "dead": "unreachable"}
        assert findings.active == {}
        clock.now += 4
        watchdog.check_due()
        watchdog.evaluate()
        [warning] = findings.active.values()
        assert (warning.kind, warning.subject, warning.severity) == (
            "NotAuthoritative", "dead", "warning",
        )  # fmt: skip
        clock.now += 4
        watchdog.check_due()
        watchdog.evaluate()
        assert findings.active[("NotAuthoritative", "dead")].severity == "critical"
        assert (
            "Baseline Requirements breach" in findings.active[("NotAuthoritative", "dead")].summary
        )
        watchdog.targets = [live]  # the dead target is removed from service
        for tracked in watchdog.tracked.values():
            tracked.pending.discard("dead")
        clock.now += 2
        watchdog.check_due()
        watchdog.evaluate()
        assert findings.active == {}
        assert [f.kind for f in findings.history] == ["NotAuthoritative"]
        assert watchdog.time_to_authoritative()["origin"]


def test_sampler_flags_a_known_serial_the_target_does_not_answer(signed) -> None:
    deployment, store, _, _ = signed
    findings = Findings()
    wrong = Target("elsewhere", f"http://127.0.0.1:{free_port()}/")
    watchdog = Watchdog(
        store, {1: deployment.ca.certificate}, [wrong], findings, WatchPolicy(sample_size=5)
    )
    watchdog.sample_known()
    [finding] = findings.active.values()
    assert finding.kind == "KnownSerialNotAuthoritative" and "unreachable" in finding.summary


def test_watchdog_asks_with_sha1_only_when_sha256_is_signed_on_request(
    deployment, monkeypatch
) -> None:
    """When SHA-256 responses are signed only on request, a SHA-256 check would make the
    signers sign every new certificate's (and meet tryLater first): the watchdog checks with
    SHA-1 CertIDs only, following the database's response format within FORMAT_TTL."""
    import types

    from cryptography.x509 import ocsp

    from certstatus.monitor import watchdog as watchdog_module
    from certstatus.store.base import AuditContext, ResponseFormat

    sent: list[bytes] = []

    def fetch(target, der: bytes):
        sent.append(der)
        return types.SimpleNamespace(status=0, headers={}, body=b"")

    monkeypatch.setattr(watchdog_module, "ocsp_get", fetch)
    monkeypatch.setattr(watchdog_module, "ocsp_post", fetch)
    store = deployment.store()
    clock = Clock(time.time())
    watchdog = Watchdog(
        store, {1: deployment.ca.certificate}, [], Findings(clock=clock), WatchPolicy(), clock
    )
    target = Target("origin", deployment.url)

    def checked() -> set[str]:
        sent.clear()
        for _ in range(40):
            watchdog.ask(target, 1, 0x1234, None)
        return {ocsp.load_der_ocsp_request(der).hash_algorithm.name for der in sent}

    try:
        assert checked() == {"sha1", "sha256"}
        operator = AuditContext("cli:test")
        store.set_response_format(ResponseFormat(True, True), operator, int(clock.now))
        assert checked() == {"sha1", "sha256"}  # read again only after FORMAT_TTL
        clock.now += watchdog_module.FORMAT_TTL
        assert checked() == {"sha1"}
    finally:
        watchdog.close()


class Receiver:
    """An Alertmanager-shaped receiver recording every POST to /api/v2/alerts."""

    def __init__(self) -> None:
        self.posts: list[list[dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.posts.append(json.loads(body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/v2/alerts"


def test_findings_reach_an_alertmanager_webhook_and_resolve() -> None:
    receiver = Receiver()
    clock = Clock(1_800_000_000)
    findings = Findings(clock=clock)
    webhook = AlertmanagerWebhook(receiver.url, "http://monitor/", resend=60)
    findings.observe({"ReplicaStale"}, [("ReplicaStale", "r1", "critical", "r1 is 30s stale")])
    webhook.push(findings, clock.now)
    webhook.push(findings, clock.now + 1)  # unchanged and recent: not resent
    assert len(receiver.posts) == 1
    [alert] = receiver.posts[0]
    assert alert["labels"] == {
        "alertname": "CertstatusReplicaStale",
        "severity": "critical",
        "subject": "r1",
        "source": "certstatus-monitor",
    }
    assert alert["startsAt"] == "2027-01-15T08:00:00Z" and "endsAt" not in alert
    clock.now += 10
    findings.observe({"ReplicaStale"}, [])
    webhook.push(findings, clock.now)
    [resolved] = receiver.posts[1]
    assert resolved["endsAt"] == "2027-01-15T08:00:10Z"
    receiver.server.shutdown()


def test_status_page_marks_broken_replicas_and_findings() -> None:
    state = {
        "now": 1_800_000_000,
        "findings": [
            {
                "kind": "SlotLost",
                "subject": "r1",
                "severity": "critical",
                "summary": "r1's slot lost its WAL",
                "since": 1_800_000_000,
                "cleared": None,
            }
        ],
        "cleared": [],
        "replicas": [
            {
                "name": "r1",
                "site": "a",
                "staleness_s": 40.0,
                "wal_status": "lost",
                "safe_wal_size": None,
                "bytes_behind": 9e8,
                "broken": True,
            },
            {
                "name": "r2",
                "site": "b",
                "staleness_s": 0.2,
                "wal_status": "reserved",
                "safe_wal_size": 1e9,
                "bytes_behind": 0,
                "broken": False,
            },
        ],
        "targets": [{"name": "cdn", "kind": "cdn", "url": "http://x/", "ready": None}],
        "time_to_authoritative": {"cdn": [0.4, 0.5, 1.2]},
        "crls": [],
    }
    html = page.render(state)
    assert "<tr class='broken' data-replica='r1'>" in html
    assert "<tr class='ok' data-replica='r2'>" in html
    assert "id='overall'>CRITICAL" in html and "r1&#x27;s slot lost its WAL" in html
    assert "n=3 p50=0.50s" in html and "http-equiv='refresh'" in html
    assert "<script" not in html


def test_monitor_configuration_errors_name_the_key(deployment: Deployment) -> None:
    text = deployment.config_path.read_text()
    deployment.config_path.write_text(
        text
        + '\n[monitor]\nlisten = "nowhere"\nwarn_after = "20m"\ncritical_after = "30m"\n'
        + 'checkpoints = ["soon"]\npost_fraction = 2\nwebhook = "am:9093"\n'
        + '[[monitor.targets]]\nname = "cdn"\nurl = "ftp://x"\nkind = "edge"\n'
    )
    with pytest.raises(ConfigError) as raised:
        load_config(deployment.config_path)
    message = str(raised.value)
    for key in (
        "monitor.listen", "monitor.critical_after", "monitor.checkpoints", "monitor.post_fraction",
        "monitor.webhook", "monitor.targets[0].url", "monitor.targets[0].kind",
    ):  # fmt: skip
        assert key in message


@pytest.mark.integration
def test_monitor_service_serves_status_metrics_and_watches(signed, tmp_path: Path) -> None:
    """The whole service on SQLite: a new serial is checked against the served responder and
    its time to authoritative shows on /status.json, /metrics and the page."""
    deployment, store, _, _ = signed
    port = free_port()
    text = deployment.config_path.read_text()
    deployment.config_path.write_text(
        text + f'\n[monitor]\nlisten = "127.0.0.1:{port}"\ncheckpoints = ["1s", "2s"]\n'
        'sample_every = "1s"\ncrl_every = "1s"\n'
    )
    import urllib.request

    deployment.crl_service(store).build_due(force=True)
    with serving(deployment):
        monitor = Monitor(deployment.config)
        monitor.start()
        try:
            fresh = deployment.leaf()
            deployment.ingest(store).add_certificates([(fresh, "new")], int(time.time()))
            with deployment.signer(store) as signer:
                signer.sign_due()
            deadline = time.monotonic() + 15
            while True:
                with urllib.request.urlopen(monitor.url + "status.json") as answer:
                    state = json.load(answer)
                if state["time_to_authoritative"].get("origin") and state["crls"]:
                    break
                assert time.monotonic() < deadline, state
                time.sleep(0.2)
            assert state["targets"][0]["ready"] is True
            assert state["crls"][0]["ok"], state["crls"]
            with urllib.request.urlopen(monitor.url + "metrics") as answer:
                metrics = answer.read().decode()
            assert (
                'certstatus_monitor_time_to_authoritative_seconds_count{target="origin"}' in metrics
            )
            assert 'certstatus_monitor_target_ready{target="origin"} 1.0' in metrics
            with urllib.request.urlopen(monitor.url) as answer:
                assert "all checks pass" in answer.read().decode()
        finally:
            monitor.stop()


def test_watchdog_reads_through_a_bulk_second_and_late_commits(deployment: Deployment) -> None:
    """More new serials in one second than a page are all tracked; a transaction stamped a
    second earlier but committed after the poll is still found by the next one."""
    store = deployment.store()
    clock = Clock(time.time())
    watchdog = Watchdog(
        store, {1: deployment.ca.certificate}, [Target("t", "http://127.0.0.1:9/")],
        Findings(clock=clock), WatchPolicy(), clock,
    )  # fmt: skip
    ingest = deployment.ingest(store)
    now = int(clock.now)
    ingest.add_certificates([(deployment.leaf(), "bulk") for _ in range(7)], now)
    assert watchdog.poll_new(page=3) == 7
    assert watchdog.poll_new(page=3) == 0  # nothing twice
    late = deployment.leaf()
    ingest.add_certificates([(late, "late")], now - 1)
    assert watchdog.poll_new(page=3) == 1
    assert (1, late.serial_number) in watchdog.tracked


def test_monitor_on_a_taken_port_says_which_key(deployment: Deployment) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = deployment.config_path.read_text()
        deployment.config_path.write_text(text + f'\n[monitor]\nlisten = "127.0.0.1:{port}"\n')
        monitor = Monitor(deployment.config)
        with pytest.raises(ConfigError, match=r"monitor\.listen: cannot listen on"):
            monitor.start()
        monitor.stop()
        done = subprocess.run(
            [sys.executable, "-m", "certstatus.cli", "monitor", "--config",
             str(deployment.config_path)],
            check=False, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: {deployment.config_path.resolve()}: monitor.listen: cannot")


def test_crl_checks_from_outside_name_each_problem(deployment: Deployment) -> None:
    """CRLs fetched over HTTP as a relying party would (R16, R17): a good one passes; one
    whose number went back, one expired, one without CRLNumber and one signed by another key
    are each reported."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from certstatus.crl.layout import CrlLayout
    from certstatus.monitor.crls import CrlWatch, WatchedIssuer

    served: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def do_GET(self) -> None:
            body = served.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    ca = deployment.ca
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def crl(number: int | None, next_update: dt.datetime, key=None) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.certificate.subject)
            .last_update(now - dt.timedelta(minutes=1))
            .next_update(next_update)
        )
        if number is not None:
            builder = builder.add_extension(x509.CRLNumber(number), critical=False)
        from cryptography.hazmat.primitives.serialization import Encoding

        return builder.sign(key or ca.key, hashes.SHA256()).public_bytes(Encoding.DER)

    store = deployment.store()
    deployment.ingest(store)  # registers the issuer
    layout = CrlLayout("demo", f"http://127.0.0.1:{port}/{{issuer}}/{{partition}}.crl")
    watch = CrlWatch(store, [WatchedIssuer(1, "demo", ca.certificate, layout)], Findings(), 86400)
    url = layout.url(0)
    week = now + dt.timedelta(days=7)
    try:
        served["/demo/0.crl"] = crl(5, week)
        watch.check()
        assert watch.states[url].ok, watch.states[url].problems
        cases = {
            "CRLNumber went back from 5 to 3 (R17)": crl(3, week),
            "expired: nextUpdate has passed (R16)": crl(6, now - dt.timedelta(seconds=5)),
            "no CRLNumber extension (R17)": crl(None, week),
            "signature does not verify with the issuer's key": crl(
                7, week, ec.generate_private_key(ec.SECP256R1())
            ),
        }
        for problem, body in cases.items():
            served["/demo/0.crl"] = body
            watch.check()
            assert problem in watch.states[url].problems, watch.states[url].problems
            assert ("CrlProblem", url) in watch.findings.active
    finally:
        server.shutdown()


# start-up order and grace (services start in parallel; nothing never-seen pages at once)


def test_an_issuer_registered_after_the_monitor_started_is_watched_from_then_on(
    tmp_path: Path,
) -> None:
    """The book asks the database again until the issuer is there; until then, and past the
    grace, the issuer is a finding: warning, then critical."""
    from certstatus.monitor.issuers import ConfiguredIssuer, IssuerBook

    deployment = make_deployment(tmp_path / "ca")
    other = make_deployment(tmp_path / "other")
    clock = Clock(1_800_000_000)
    findings = Findings(clock=clock)
    book = IssuerBook(
        [
            ConfiguredIssuer("demo", deployment.ca.certificate),
            ConfiguredIssuer("other", other.ca.certificate),
        ],
        findings,
        grace=10,
        critical_after=60,
        clock=clock,
    )
    reads: list[int] = []

    def recorded() -> list:
        reads.append(1)
        return store.issuers()

    store = deployment.store()
    assert store.issuers() == []  # the monitor started first
    book.refresh(recorded)
    assert findings.active == {} and not book.complete  # within the grace: starting
    clock.now += 11
    book.refresh(recorded)
    assert {k: f.severity for k, f in findings.active.items()} == {
        ("IssuerNotWatched", "demo"): "warning",
        ("IssuerNotWatched", "other"): "warning",
    }
    deployment.ingest(store)  # `serve` or the first `add` registers the issuer
    assert book.refresh(recorded) == ["demo"]
    [demo_id] = book.certificates
    assert book.certificates[demo_id] == deployment.ca.certificate
    assert [i.name for i in book.crl_issuers] == []  # the fixture's issuer has no CRL layout
    assert set(findings.active) == {("IssuerNotWatched", "other")}
    clock.now += 60
    before = len(reads)
    book.refresh(recorded)
    assert len(reads) == before + 1  # still asking: "other" is missing
    assert findings.active[("IssuerNotWatched", "other")].severity == "critical"
    assert "not in the database yet" in findings.active[("IssuerNotWatched", "other")].summary
    assert book.unwatched() == [{"name": "other", "problem": "is not in the database yet"}]


def test_an_issuer_in_the_database_with_another_certificate_is_named_as_such(
    tmp_path: Path,
) -> None:
    from certstatus.monitor.issuers import ConfiguredIssuer, IssuerBook

    deployment = make_deployment(tmp_path / "ca")
    impostor = make_deployment(tmp_path / "other")
    clock = Clock(1_800_000_000)
    findings = Findings(clock=clock)
    book = IssuerBook([ConfiguredIssuer("demo", impostor.ca.certificate)], findings, 0, 60, clock)
    store = deployment.store()
    deployment.ingest(store)
    assert book.refresh(store.issuers) == []
    [finding] = findings.active.values()
    assert "another certificate" in finding.summary and finding.subject == "demo"


def test_the_watchdog_asks_for_issuers_when_a_new_serial_names_an_unknown_one(signed) -> None:
    deployment, store, _, _ = signed
    issuers: dict = {}
    asked: list[int] = []

    def find() -> None:
        asked.append(1)
        issuers[1] = deployment.ca.certificate

    watchdog = Watchdog(
        store, issuers, [Target("origin", deployment.url)], Findings(), WatchPolicy(),
        find_issuers=find,
    )  # fmt: skip
    assert watchdog.poll_new() == 2  # the fixture's two serials, once the issuer was found
    assert asked == [1]
    assert watchdog.poll_new() == 0 and asked == [1]  # nothing unknown: no more lookups


def test_an_unreachable_primary_is_starting_during_the_grace_then_critical() -> None:
    from certstatus.monitor.replication import ReplicationProbe
    from certstatus.store.postgres import PostgresStore

    clock = Clock(1_800_000_000)
    findings = Findings(clock=clock)
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/certstatus"
    primary = PostgresStore(nowhere, read_only=True, timeout=1)
    probe = ReplicationProbe(primary, [], findings, 5.0, grace=10, clock=clock)
    try:
        probe.probe()
        assert findings.active == {} and probe.primary_state == "unreachable"
        clock.now += 10
        probe.probe()
        assert findings.active[("PrimaryUnreachable", "primary")].severity == "critical"
    finally:
        probe.close()
        primary.close()


def test_grace_for_the_heartbeat_counts_from_the_primary_first_answering() -> None:
    from certstatus.monitor.replication import StartupGrace

    grace = StartupGrace(10, now=100)
    assert grace.for_primary(105) and not grace.for_primary(110)
    assert grace.for_dependents(109) and not grace.for_dependents(110)
    grace.primary_answered(130)  # the database came up late: its heartbeat gets its own grace
    grace.primary_answered(135)  # only the first answer counts
    assert not grace.for_primary(131)  # seen once: no grace for the primary any more
    assert grace.for_dependents(139) and not grace.for_dependents(140)


def test_status_json_is_plain_json_whatever_postgresql_returns() -> None:
    from decimal import Decimal

    from certstatus.monitor.replication import plain
    from certstatus.monitor.service import jsonable

    state = {
        "replicas": [
            {"safe_wal_size": Decimal("33554432"), "bytes_behind": Decimal("0"),
             "staleness_s": float("inf"), "ratio": Decimal("0.5")},
        ],
        "primary": {"heartbeat_age_s": None},
    }  # fmt: skip
    text = json.dumps(jsonable(state), allow_nan=False)
    assert json.loads(text)["replicas"][0] == {
        "safe_wal_size": 33554432, "bytes_behind": 0, "staleness_s": None, "ratio": 0.5,
    }  # fmt: skip
    assert type(plain(Decimal("7"))) is int and plain("x") == "x"


def test_slot_findings_stand_while_the_primary_cannot_be_asked() -> None:
    """A primary that stops answering makes slots unknown, not lost: no "no replication slot"
    claim, and a slot found lost before stays reported until the primary answers again."""
    from certstatus.monitor.replication import ReplicationProbe
    from certstatus.store.postgres import PostgresStore

    clock = Clock(1_800_000_000)
    findings = Findings(clock=clock)
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/certstatus"
    primary = PostgresStore(nowhere, read_only=True, timeout=1)
    probe = ReplicationProbe(primary, [], findings, 5.0, grace=0, clock=clock)
    findings.observe({"SlotLost"}, [("SlotLost", "a1", "critical", "a1's slot lost its WAL")])
    try:
        probe.probe()
        assert set(findings.active) == {("PrimaryUnreachable", "primary"), ("SlotLost", "a1")}
    finally:
        probe.close()
        primary.close()


def test_an_origin_not_ready_says_why_and_only_after_the_grace(deployment: Deployment) -> None:
    """Started before the responders, the monitor does not raise ResponderNotReady during its
    start-up grace; after it, the finding says what actually failed, not a fixed guess."""
    port = free_port()
    text = deployment.config_path.read_text()
    deployment.config_path.write_text(
        text + f'\n[monitor]\nlisten = "127.0.0.1:{free_port()}"\nstartup_grace = "10s"\n'
        f'[[monitor.targets]]\nname = "web1"\nurl = "http://127.0.0.1:{port}/"\n'
    )
    clock = Clock(time.time())
    monitor = Monitor(deployment.config, clock=clock)
    try:
        monitor.readiness_step()
        assert monitor.ready == {"web1": False} and monitor.findings.active == {}
        clock.now += 10
        monitor.readiness_step()
        [finding] = monitor.findings.active.values()
        assert finding.kind == "ResponderNotReady"
        assert finding.summary == (
            f"web1 does not answer at http://127.0.0.1:{port}/readyz: Connection refused"
        )
    finally:
        monitor.stop()
