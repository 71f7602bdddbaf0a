"""CRLs (R15-R20, F5, F6): profile (pkilint, openssl), partitions that never move, numbers that
only grow, the pre-publish gate against every kind of bad CRL, R18 retention, serving, export,
disclosure, and the OCSP/CRL agreement check. Tests taking `engine` run on SQLite and on
PostgreSQL (tests/conftest.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certstatus.crl.builder import CrlSigner
from certstatus.crl.gate import crl_serials
from certstatus.crl.schedule import CrlPolicy, due_reason
from certstatus.crlbuilder.agreement import check_agreement
from certstatus.demo.ca import DemoCA, write_pem
from certstatus.keys.pem import key_from_private
from certstatus.ocsp.reasons import ALLOWED
from tests.conftest import Deployment, fresh_now, make_deployment, serving

NOW = int(time.time())
DAY = 86400
LINT_CRL = Path(sys.executable).with_name("lint_crl")
OPENSSL = shutil.which("openssl") or "openssl"


_now_at_test_start = fresh_now()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def populate(deployment: Deployment, store, count: int = 12, revoke_every: int = 3):
    """Certificates with every allowed reason among the revoked ones; returns (leaves, revoked)."""
    ingest = deployment.ingest(store)
    leaves = [deployment.leaf() for _ in range(count)]
    ingest.add_certificates([(leaf, "t") for leaf in leaves], NOW)
    reasons = list(ALLOWED)
    revoked = {}
    for n, leaf in enumerate(leaves[::revoke_every]):
        reason = reasons[n % len(reasons)]
        # distinct times, after the leaf's notBefore (an earlier one is refused)
        when = int(leaf.not_valid_before_utc.timestamp()) + 60 + n
        ingest.revoke("demo", leaf.serial_number, reason, NOW, time=when)
        revoked[leaf.serial_number] = ALLOWED[reason]
    return leaves, revoked


def published_serials(service, issuer) -> dict[int, set[int]]:
    return {
        p: crl_serials(service.store.current_crl(issuer.id, p).der)
        for p in service.partitions(issuer)
    }


@pytest.mark.parametrize("partitions", [1, 3])
def test_crls_pass_pkilint_and_openssl_r15_r17_r19(tmp_path, partitions: int) -> None:
    deployment = make_deployment(tmp_path / "ca", partitions=partitions)
    store = deployment.store()
    _, revoked = populate(deployment, store, count=30)
    service = deployment.crl_service(store, Clock(NOW))
    results = service.build_due()
    assert [r.published for r in results] == [True] * partitions
    [issuer] = service.issuers
    for partition in service.partitions(issuer):
        der = store.current_crl(issuer.id, partition).der
        path = tmp_path / f"{partition}.crl"
        path.write_bytes(der)
        lint = subprocess.run(
            [
                str(LINT_CRL),
                "lint",
                "-t",
                "CRL",
                "-p",
                "BR",
                "-s",
                "ERROR",
                "-f",
                "JSON",
                str(path),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert json.loads(lint.stdout)["results"] == [], lint.stdout
        verify = subprocess.run(
            [
                OPENSSL,
                "crl",
                "-inform",
                "DER",
                "-in",
                str(path),
                "-CAfile",
                str(deployment.dir / "issuer.pem"),
                "-noout",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert "verify OK" in verify.stdout + verify.stderr
        crl = x509.load_der_x509_crl(der)
        idp = [e for e in crl.extensions if isinstance(e.value, x509.IssuingDistributionPoint)]
        if partitions == 1:
            assert idp == []  # a single full CRL carries no IDP (R19)
        else:
            assert idp[0].critical
            assert idp[0].value.full_name[0].value == issuer.layout.url(partition)
        assert crl.issuer.public_bytes() == deployment.ca.certificate.subject.public_bytes()
        for entry in crl:
            reason = [e for e in entry.extensions if isinstance(e.value, x509.CRLReason)]
            assert bool(reason) == (revoked[entry.serial_number] != 0)  # unspecified omitted
    union = set().union(*published_serials(service, issuer).values())
    assert union == set(revoked)  # R19: the partitions together are the full set


def test_the_lint_can_fail(tmp_path) -> None:
    """pkilint does catch a CRL valid for more than 10 days (so the lint above means something)."""
    ca = DemoCA.create()
    signer = CrlSigner(ca.certificate, key_from_private(ca.key))
    der = signer.sign([], 1, NOW, NOW + 10 * DAY, None)
    longer = der.replace(*_next_update_bytes(NOW + 10 * DAY, NOW + 12 * DAY))
    path = tmp_path / "long.crl"
    path.write_bytes(longer)
    lint = subprocess.run(
        [str(LINT_CRL), "lint", "-t", "CRL", "-p", "BR", "-s", "ERROR", "-f", "JSON", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    codes = [
        f["code"] for r in json.loads(lint.stdout)["results"] for f in r["finding_descriptions"]
    ]
    assert "cabf.crl_invalid_validity_period" in codes


def _next_update_bytes(old: int, new: int) -> tuple[bytes, bytes]:
    from certstatus import der

    return der.x509_time(old), der.x509_time(new)


@pytest.mark.integration
def test_openssl_verify_with_served_crl(tmp_path) -> None:
    """`openssl verify -crl_check` with the CRL fetched from the running responder rejects a
    revoked certificate and accepts a good one (R15)."""
    deployment = make_deployment(tmp_path / "ca", partitions=2)
    store = deployment.store()
    ingest = deployment.ingest(store)
    [issuer] = deployment.crl_service(store).issuers
    layout = issuer.layout
    certs = []
    for serial in (0x51000, 0x51001, 0x51002, 0x51003):
        url = layout.url(layout.partition_for_serial(serial))
        certs.append(deployment.ca.leaf(deployment.leaf_key, serial, deployment.url, crl_url=url))
    ingest.add_certificates([(c, "t") for c in certs], NOW)
    ingest.revoke("demo", 0x51000, "keyCompromise", NOW)
    deployment.crl_service(store).build_due()
    with serving(deployment):
        for cert, expected in ((certs[0], "revoked"), (certs[2], "OK")):
            url = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
            crl_url = url.value[0].full_name[0].value
            with urllib.request.urlopen(crl_url, timeout=5) as answer:
                assert answer.headers["Content-Type"] == "application/pkix-crl"
                (tmp_path / "served.crl").write_bytes(answer.read())
            subprocess.run(
                [
                    OPENSSL,
                    "crl",
                    "-inform",
                    "DER",
                    "-in",
                    str(tmp_path / "served.crl"),
                    "-out",
                    str(tmp_path / "served.pem"),
                ],
                check=True,
            )
            write_pem(tmp_path / "leaf.pem", cert)
            verify = subprocess.run(
                [
                    OPENSSL,
                    "verify",
                    "-crl_check",
                    "-CAfile",
                    str(deployment.dir / "issuer.pem"),
                    "-CRLfile",
                    str(tmp_path / "served.pem"),
                    str(tmp_path / "leaf.pem"),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            text = verify.stdout + verify.stderr
            if expected == "revoked":
                assert verify.returncode != 0 and "certificate revoked" in text
            else:
                assert verify.returncode == 0, text


def test_partitions_never_move_when_the_count_changes_r19(tmp_path) -> None:
    deployment = make_deployment(tmp_path / "ca", partitions=2)
    store = deployment.store()
    ingest = deployment.ingest(store)
    old = [deployment.leaf() for _ in range(20)]
    ingest.add_certificates([(c, "old") for c in old], NOW)
    issuer_id = ingest.issuer_id("demo")
    before = {
        c.serial_number: store.certificate(issuer_id, c.serial_number).crl_partition for c in old
    }
    assert set(before.values()) == {0, 1}
    # the operator moves to 5 partitions; existing rows keep theirs, new ones use the new count
    config = deployment.config_path.read_text().replace("crl_partitions = 2", "crl_partitions = 5")
    deployment.config_path.write_text(config)
    ingest = deployment.ingest(store)
    new = [deployment.leaf() for _ in range(40)]
    ingest.add_certificates([(c, "new") for c in new], NOW)
    after = {
        c.serial_number: store.certificate(issuer_id, c.serial_number).crl_partition for c in old
    }
    assert after == before
    assert {store.certificate(issuer_id, c.serial_number).crl_partition for c in new} == set(
        range(5)
    )
    # and back down to 1: partitions still holding certificates stay published
    deployment.config_path.write_text(config.replace("crl_partitions = 5", "crl_partitions = 1"))
    service = deployment.crl_service(store)
    for leaf in old[:6] + new[:6]:
        deployment.ingest(store).revoke("demo", leaf.serial_number, "superseded", NOW)
    service.build_due()
    [issuer] = service.issuers
    assert service.partitions(issuer) == [0, 1, 2, 3, 4]
    union = set().union(*published_serials(service, issuer).values())
    assert union == {c.serial_number for c in old[:6] + new[:6]}


def test_cdp_decides_the_partition_and_foreign_cdp_is_refused(tmp_path) -> None:
    from certstatus.ingest import IngestError

    deployment = make_deployment(tmp_path / "ca", partitions=4)
    store = deployment.store()
    ingest = deployment.ingest(store)
    [issuer] = deployment.crl_service(store).issuers
    named = deployment.ca.leaf(
        deployment.leaf_key, 0x700, deployment.url, crl_url=issuer.layout.url(3)
    )  # 0x700 % 4 == 0, CDP says 3
    ingest.add_certificates([(named, "t")], NOW)
    assert store.certificate(ingest.issuer_id("demo"), 0x700).crl_partition == 3
    foreign = deployment.ca.leaf(
        deployment.leaf_key, 0x701, deployment.url, crl_url="http://elsewhere.example/x.crl"
    )
    with pytest.raises(IngestError, match="not a URL of issuer"):
        ingest.add_certificates([(foreign, "t")], NOW)
    assert store.certificate(ingest.issuer_id("demo"), 0x701) is None


def test_numbers_increase_across_a_restart_r17(engine) -> None:
    store = engine.store()
    populate(engine, store)
    clock = Clock(NOW)
    first = engine.crl_service(store, clock).build_due(force=True)[0]
    store.close()
    reopened = engine.store()  # a restarted builder
    clock.now += 10
    second = engine.crl_service(reopened, clock).build_due(force=True)[0]
    assert first.published and second.published
    assert second.number > first.number
    [issuer] = engine.crl_service(reopened).issuers
    crl = x509.load_der_x509_crl(reopened.current_crl(issuer.id, 0).der)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == second.number


def test_two_builders_racing_never_regress_or_duplicate_r17(engine) -> None:
    store = engine.store()
    populate(engine, store)
    issuer_id = engine.ingest(store).issuer_id("demo")
    published: list[int] = []
    observed: dict[str, list[int]] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def builder(name: str) -> None:
        try:
            own = engine.store()  # its own connection, like another process
            service = engine.crl_service(own)
            seen = observed.setdefault(name, [])
            for _ in range(15):
                for result in service.build_due(force=True):
                    if result.published:
                        with lock:
                            published.append(result.number)
                    seen.append(own.current_crl(issuer_id, 0).number)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=builder, args=(f"b{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(published) == len(set(published)) > 0  # no number published twice
    assert store.current_crl(issuer_id, 0).number == max(published)
    for seen in observed.values():  # what each builder reads never goes backwards
        assert seen == sorted(seen) and len(seen) == 15
    assert store.crl_rejection_count() == 0


def test_a_builder_overtaken_by_another_is_superseded_not_rejected_r17(engine) -> None:
    """Builder A reserves a number, B reserves the next and publishes while A signs: A's CRL
    is late, not bad. It is not published and not recorded as a gate rejection (which would
    alert); seen in CI under load with two builders racing."""
    store = engine.store()
    populate(engine, store)
    clock = Clock(NOW)
    late = engine.crl_service(store, clock)
    other = engine.crl_service(engine.store(), clock)
    [issuer] = late.issuers

    def overtaken(*args):
        [ahead] = other.build_due(force=True)
        assert ahead.published
        return issuer.signer.sign(*args)

    result = late.build(issuer, 0, "test", sign=overtaken)
    assert not result.published and result.rejections == ()
    assert store.crl_rejection_count() == 0
    assert store.current_crl(issuer.id, 0).number == result.number + 1


def test_a_crl_number_counter_gone_back_is_refused_by_the_gate_r17(engine) -> None:
    """A higher number on an older published CRL is not a race: the number counter went back
    (a restored database). The gate refuses the build, and the refusal is recorded."""
    store = engine.store()
    populate(engine, store)
    clock = Clock(NOW)
    service = engine.crl_service(store, clock)
    for _ in range(3):
        assert service.build_due(force=True)[0].published
        clock.now += 60
    [issuer] = service.issuers
    with store._writing() as db:
        db.execute(store._sql("UPDATE crl_state SET next_number = 2"))
    result = service.build(issuer, 0, "test")
    assert not result.published and result.number == 2
    assert [r.code for r in result.rejections] == ["number"]
    assert store.crl_rejection_count() == 1
    assert store.current_crl(issuer.id, 0).number == 3


class BadSigner:
    """Builds deliberately broken CRLs for the gate tests."""

    def __init__(self, deployment: Deployment, issuer) -> None:
        self.good = issuer.signer
        self.issuer = issuer
        self.deployment = deployment

    def other_key(self, entries, number, this_update, next_update, idp):
        impostor = DemoCA.create()  # same subject name, different key
        return CrlSigner(impostor.certificate, key_from_private(impostor.key)).sign(
            entries, number, this_update, next_update, idp
        )

    def other_issuer_name(self, entries, number, this_update, next_update, idp):
        stranger = DemoCA.create("a different CA")
        signer = CrlSigner(stranger.certificate, self.good.key)
        return signer.sign(entries, number, this_update, next_update, idp)

    def wrong_aki(self, entries, number, this_update, next_update, idp):
        signer = CrlSigner(self.deployment.ca.certificate, self.good.key)
        signer._aki = self._aki_of(DemoCA.create().certificate)
        return signer.sign(entries, number, this_update, next_update, idp)

    @staticmethod
    def _aki_of(certificate):
        return CrlSigner(certificate, None)._aki  # type: ignore[arg-type]

    def wrong_idp(self, entries, number, this_update, next_update, idp):
        return self.good.sign(
            entries, number, this_update, next_update, "http://wrong.example/crl/demo/0.crl"
        )

    def old_number(self, entries, number, this_update, next_update, idp):
        return self.good.sign(entries, 1, this_update, next_update, idp)

    def drop_first(self, entries, number, this_update, next_update, idp):
        return self.good.sign(
            sorted(entries, key=lambda e: e.serial)[1:], number, this_update, next_update, idp
        )


@pytest.mark.integration
@pytest.mark.parametrize(
    ("method", "code"),
    [
        ("other_key", "signature"),
        ("other_issuer_name", "issuer"),
        ("wrong_aki", "aki"),
        ("wrong_idp", "idp"),
        ("old_number", "number"),
        ("drop_first", "dropped"),
    ],
)
def test_gate_rejects_bad_crls_and_old_one_stays_served_f5(tmp_path, method, code) -> None:
    deployment = make_deployment(tmp_path / "ca", partitions=2)
    store = deployment.store()
    populate(deployment, store, count=40)
    clock = Clock(NOW)
    service = deployment.crl_service(store, clock)
    assert all(r.published for r in service.build_due())
    [issuer] = service.issuers
    before = store.current_crl(issuer.id, 0)
    clock.now += 60
    result = service.build(issuer, 0, "test", sign=getattr(BadSigner(deployment, issuer), method))
    assert not result.published
    assert code in [r.code for r in result.rejections], result.rejections
    assert store.current_crl(issuer.id, 0) == before
    assert store.crl_rejection_count() >= 1
    with (
        serving(deployment),
        urllib.request.urlopen(deployment.url + "crl/demo/0.crl", timeout=5) as answer,
    ):
        assert answer.read() == before.der


def test_gate_requires_revocations_older_than_the_debounce_f5(engine) -> None:
    store = engine.store()
    leaves, _ = populate(engine, store)
    clock = Clock(NOW)
    service = engine.crl_service(store, clock)
    service.build_due()
    [issuer] = service.issuers
    late = leaves[1]  # not revoked by populate
    engine.ingest(store).revoke("demo", late.serial_number, "keyCompromise", NOW)
    clock.now = NOW + 10 * 60  # past the 5-minute debounce
    good = issuer.signer

    def forgets(entries, *rest):
        return good.sign([e for e in entries if e.serial != late.serial_number], *rest)

    result = service.build(issuer, 0, "test", sign=forgets)
    assert not result.published and "missing" in [r.code for r in result.rejections]
    assert service.build(issuer, 0, "test").published  # the honest build goes through


def test_a_full_crl_with_idp_is_rejected_r19(deployment) -> None:
    store = deployment.store()
    populate(deployment, store)
    service = deployment.crl_service(store)
    [issuer] = service.issuers

    def with_idp(entries, number, this_update, next_update, idp):
        assert idp is None
        return issuer.signer.sign(entries, number, this_update, next_update, issuer.layout.url(0))

    result = service.build(issuer, 0, "test", sign=with_idp)
    assert [r.code for r in result.rejections] == ["idp"]


def test_entries_stay_until_notafter_plus_one_period_r18(engine) -> None:
    store = engine.store()
    ingest = engine.ingest(store)
    short = engine.ca.leaf(engine.leaf_key, 0x1818, engine.url, days=2)
    ingest.add_certificates([(short, "t")], NOW)
    ingest.revoke("demo", 0x1818, "superseded", NOW)
    clock = Clock(NOW)
    service = engine.crl_service(store, clock)
    [issuer] = service.issuers
    not_after = int(short.not_valid_after_utc.timestamp())
    for moment, listed in (
        (NOW, True),
        (not_after + 60, True),
        (not_after + DAY - 60, True),
        (not_after + DAY + 60, False),
    ):
        clock.now = moment
        result = service.build(issuer, 0, "test")
        assert result.published, result.rejections  # dropping after R18 passes the gate
        assert (0x1818 in crl_serials(store.current_crl(issuer.id, 0).der)) is listed


def test_schedule_r16() -> None:
    policy = CrlPolicy(period=DAY, validity=7 * DAY, debounce=300, jitter=3600)
    assert policy.problems() == []
    assert due_reason(NOW, policy, None, None, None) == "none published"
    assert due_reason(NOW, policy, NOW + 100, NOW + 7 * DAY, None) is None
    assert due_reason(NOW, policy, NOW - 1, NOW + 7 * DAY, None) == "scheduled"
    assert due_reason(NOW, policy, NOW + DAY, NOW + 7 * DAY, NOW - 100) is None  # debouncing
    assert due_reason(NOW, policy, NOW + DAY, NOW + 7 * DAY, NOW - 300) == "revocation"
    assert due_reason(NOW, policy, NOW + DAY, NOW + 1800, None) == "expiring"
    for bad, key in (
        (CrlPolicy(validity=11 * DAY), "validity"),
        (CrlPolicy(period=8 * DAY), "period"),
        (CrlPolicy(debounce=2 * DAY), "debounce"),
        (CrlPolicy(period=DAY, jitter=DAY), "jitter"),
    ):
        assert key in [k for k, _ in bad.problems()]


def test_a_revocation_makes_the_crl_due_after_the_debounce(engine) -> None:
    store = engine.store()
    leaves, _ = populate(engine, store)
    clock = Clock(NOW)
    service = engine.crl_service(store, clock)
    service.build_due()
    assert service.due(NOW) == []
    engine.ingest(store).revoke("demo", leaves[1].serial_number, "superseded", NOW)
    assert service.due(NOW + 60) == []
    assert [why for _, _, why in service.due(NOW + 301)] == ["revocation"]
    clock.now = NOW + 301
    service.build_due()
    assert service.due(NOW + 400) == []


@pytest.mark.integration
def test_served_crl_headers_and_304(deployment) -> None:
    store = deployment.store()
    populate(deployment, store)
    deployment.crl_service(store).build_due()
    with serving(deployment):
        url = deployment.url + "crl/demo/0.crl"
        with urllib.request.urlopen(url, timeout=5) as answer:
            headers = answer.headers
            body = answer.read()
        current = store.current_crl(1, 0)
        assert body == current.der
        assert headers["Content-Type"] == "application/pkix-crl"
        age = int(headers["Cache-Control"].split(",")[0].removeprefix("max-age="))
        assert 0 < age <= current.next_build_at - time.time() + 1
        request = urllib.request.Request(url, headers={"If-None-Match": headers["ETag"]})
        with pytest.raises(urllib.error.HTTPError) as not_modified:
            urllib.request.urlopen(request, timeout=5)
        assert not_modified.value.code == 304
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(deployment.url + "crl/demo/7.crl", timeout=5)
        assert missing.value.code == 404


def test_export_and_disclosure_r20(tmp_path) -> None:
    deployment = make_deployment(tmp_path / "ca", partitions=3)
    store = deployment.store()
    populate(deployment, store, count=30)
    deployment.crl_service(store).build_due()
    cli = [sys.executable, "-m", "certstatus.cli"]
    cfg = ["--config", str(deployment.config_path)]
    exported = subprocess.run(
        [*cli, "crl", "export", *cfg, str(tmp_path / "www")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert exported.returncode == 0, exported.stderr
    for partition in range(3):
        path = tmp_path / "www" / "crl" / "demo" / f"{partition}.crl"
        assert path.read_bytes() == store.current_crl(1, partition).der
    disclosed = subprocess.run(
        [*cli, "crl", "disclosure", *cfg, "--issuer", "demo"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(disclosed.stdout) == [
        f"http://127.0.0.1:{deployment.port}/crl/demo/{p}.crl" for p in range(3)
    ]
    built = subprocess.run(
        [*cli, "crl", "build", *cfg], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0 and built.stdout.count("published") == 3


def test_agreement_between_ocsp_and_crls_f6(engine) -> None:
    store = engine.store()
    leaves, _ = populate(engine, store)
    with engine.signer(store) as signer:
        signer.sign_due()
    service = engine.crl_service(store)
    service.build_due()
    assert check_agreement(service, NOW) == []
    # a revocation the CRL and OCSP have not caught up with yet is reported, then resolved
    engine.ingest(store).revoke("demo", leaves[1].serial_number, "keyCompromise", NOW)
    problems = check_agreement(service, NOW)
    assert any("OCSP says not revoked" in p for p in problems)
    assert any("CRL says not revoked" in p for p in problems)
    with engine.signer(store) as signer:
        signer.sign_due()
    service.build_due(force=True)
    assert check_agreement(service, NOW) == []


def test_agreement_flags_an_unrevoked_serial_on_a_crl_f6(engine) -> None:
    store = engine.store()
    leaves, _ = populate(engine, store)
    service = engine.crl_service(store)
    [issuer] = service.issuers
    from certstatus.status import RevokedEntry as Entry
    from certstatus.store.base import StoredCrl

    bogus = issuer.signer.sign([Entry(leaves[1].serial_number, NOW, 4)], 99, NOW, NOW + DAY, None)
    store.publish_crl(StoredCrl(issuer.id, 0, 99, NOW, NOW + DAY, NOW + DAY, 1, bogus), NOW)
    assert any("never revoked" in p for p in check_agreement(service, NOW))


def test_crl_config_errors_name_their_keys(tmp_path) -> None:
    from certstatus.config import ConfigError, load_config

    deployment = make_deployment(tmp_path / "ca")
    text = deployment.config_path.read_text()
    for old, new, key in (
        ('period = "1d"', 'period = "8d"', "crl.period"),
        ("crl_partitions = 1", "crl_partitions = 0", "issuers[0].crl_partitions"),
        ("/crl/{issuer}/{partition}.crl", "/crl/{issuer}/all.crl", "issuers[0].crl_url"),
    ):
        deployment.config_path.write_text(text.replace(old, new))
        with pytest.raises(ConfigError) as error:
            load_config(deployment.config_path)
        assert f": {key}: " in str(error.value), str(error.value)
    # the CA key is the CRL builder's business: a web node's configuration may leave it out
    # (R25), the signing roles refuse to start without it
    from certstatus.config import load_issuer_certificates, load_issuer_material

    deployment.config_path.write_text(text.replace('issuer_key = "issuer.key"\n', ""))
    assert load_issuer_certificates(load_config(deployment.config_path))
    with pytest.raises(ConfigError, match=r": issuers\[0\]\.issuer_key: required with crl_url"):
        load_issuer_material(load_config(deployment.config_path))
    other = ec.generate_private_key(ec.SECP256R1())
    from certstatus.demo.ca import write_key

    write_key(deployment.dir / "issuer.key", other)
    deployment.config_path.write_text(text)
    with pytest.raises(ConfigError, match=r"issuer_key.*is not the key"):
        load_issuer_material(load_config(deployment.config_path))


def test_x509_time_matches_strftime() -> None:
    """The arithmetic UTCTime encoder (a measured hot path) agrees with time.strftime, and
    switches to GeneralizedTime from 2050 (RFC 5280 5.1.2.4)."""
    import random

    from certstatus import der

    end = 2_524_608_000
    for moment in [
        0,
        86399,
        951_782_400,
        end - 1,
        end,
        4_102_444_800,
        *random.Random(1).sample(range(end), 5000),
    ]:
        if moment < end:
            expected = der.tlv(
                der.UTC_TIME, time.strftime("%y%m%d%H%M%SZ", time.gmtime(moment)).encode()
            )
        else:
            expected = der.generalized_time(moment)
        assert der.x509_time(moment) == expected, moment
