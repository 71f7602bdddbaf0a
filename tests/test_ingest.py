"""Ingest: certificates and precertificates are recorded (R5/F2); every bad input is refused
with a clear message and nothing is written; revocation only moves forward."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certstatus.demo.ca import DemoCA
from certstatus.ingest.api import IngestError, parse_serial
from certstatus.store.base import Priority
from tests.conftest import fresh_now

NOW = int(time.time())


_now_at_test_start = fresh_now()


@pytest.fixture(autouse=True)
def _now() -> None:
    """NOW as each test starts: a leaf is minted with notBefore five minutes back, and a
    revocation before notBefore is refused, so a NOW taken at import goes stale in a long run."""
    global NOW  # noqa: PLW0603
    NOW = int(time.time())


def snapshot(store) -> tuple:
    db = store._connect()
    return (
        db.execute("SELECT * FROM certificates ORDER BY serial").fetchall(),
        db.execute("SELECT * FROM responses ORDER BY serial").fetchall(),
    )


def test_add_certificate_and_precertificate_r5_f2(deployment) -> None:
    store = deployment.store()
    ingest = deployment.ingest(store)
    cert, precert = deployment.leaf(), deployment.leaf(precertificate=True)
    result = ingest.add_files([deployment.write_leaf(cert), deployment.write_leaf(precert)], NOW)
    assert (result.added, result.existing) == (2, 0)
    issuer_id = ingest.issuer_id("demo")
    row = store.certificate(issuer_id, precert.serial_number)
    assert row is not None and row.kind == "precert" and not row.revoked
    assert row.priority is Priority.NEW and row.due_at == NOW - NOW % 60  # its minute's start
    assert store.certificate(issuer_id, cert.serial_number).kind == "cert"


def test_readding_is_harmless_and_final_cert_upgrades_precert(deployment) -> None:
    store = deployment.store()
    ingest = deployment.ingest(store)
    serial = 0x7777
    precert = deployment.leaf(precertificate=True, serial=serial)
    ingest.add_certificates([(precert, "p")], NOW)
    before = snapshot(store)
    assert ingest.add_certificates([(precert, "p")], NOW + 5).existing == 1
    assert snapshot(store) == before
    final = deployment.leaf(serial=serial)
    ingest.add_certificates([(final, "f")], NOW + 10)
    row = store.certificate(ingest.issuer_id("demo"), serial)
    assert row.kind == "cert" and row.version == 1


def test_der_and_multi_pem_files(deployment) -> None:
    ingest = deployment.ingest()
    a, b, c = deployment.leaf(), deployment.leaf(), deployment.leaf()
    der_file = deployment.dir / "a.der"
    der_file.write_bytes(a.public_bytes(Encoding.DER))
    bundle = deployment.dir / "bundle.pem"
    bundle.write_bytes(b.public_bytes(Encoding.PEM) + c.public_bytes(Encoding.PEM))
    assert ingest.add_files([der_file, bundle], NOW).added == 3


def _refused(deployment, files, message: str) -> None:
    store = deployment.store()
    ingest = deployment.ingest(store)
    good = deployment.write_leaf(deployment.leaf())
    before = snapshot(store)
    with pytest.raises(IngestError, match=message):
        ingest.add_files([good, *files], NOW)
    assert snapshot(store) == before  # the good file in the same batch was not written either


def test_unknown_issuer_refused(deployment) -> None:
    stranger = DemoCA.create("stranger CA")
    leaf = stranger.leaf(deployment.leaf_key, 99, deployment.url)
    _refused(deployment, [deployment.write_leaf(leaf)], "not a configured issuer")


def test_bad_signature_refused(deployment) -> None:
    impostor = DemoCA.create()  # same subject name, different key
    leaf = impostor.leaf(deployment.leaf_key, 98, deployment.url)
    _refused(deployment, [deployment.write_leaf(leaf)], "signature does not verify")


def test_malformed_file_refused(deployment) -> None:
    bad = deployment.dir / "junk.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    _refused(deployment, [bad], "not a PEM or DER certificate")
    garbage = deployment.dir / "junk.der"
    garbage.write_bytes(b"\x30\x03\x02\x01\x01")
    _refused(deployment, [garbage], "not a PEM or DER certificate")


def test_missing_file_refused(deployment) -> None:
    _refused(deployment, [deployment.dir / "absent.pem"], "cannot read")


@pytest.mark.parametrize(
    "reason", ["certificateHold", "cACompromise", "removeFromCRL", "6", "2", "nonsense"]
)
def test_revocation_reason_outside_r7_refused(deployment, reason: str) -> None:
    store = deployment.store()
    ingest = deployment.ingest(store)
    leaf = deployment.leaf()
    ingest.add_certificates([(leaf, "l")], NOW)
    before = snapshot(store)
    with pytest.raises(IngestError, match="R7"):
        ingest.revoke("demo", leaf.serial_number, reason, NOW)
    assert snapshot(store) == before


def test_revoking_unknown_serial_or_issuer_refused(deployment) -> None:
    store = deployment.store()
    ingest = deployment.ingest(store)
    before = snapshot(store)
    with pytest.raises(IngestError, match="not known"):
        ingest.revoke("demo", 0xDEAD, "superseded", NOW)
    with pytest.raises(IngestError, match="unknown issuer"):
        ingest.revoke("other", 0xDEAD, "superseded", NOW)
    assert snapshot(store) == before


def test_revocation_moves_only_forward(deployment) -> None:
    store = deployment.store()
    ingest = deployment.ingest(store)
    leaf = deployment.leaf()
    ingest.add_certificates([(leaf, "l")], NOW)
    row = ingest.revoke("demo", leaf.serial_number, "superseded", NOW + 10)
    assert row.revoked and row.reason == 4 and row.revoked_at == NOW + 10 and row.version == 2
    assert row.priority is Priority.REVOKED
    for reason in ("superseded", "cessationOfOperation", "unspecified"):
        with pytest.raises(IngestError, match="already revoked"):
            ingest.revoke("demo", leaf.serial_number, reason, NOW + 20)
    # a later-learned key compromise may raise the reason (and keeps the earlier time)
    row = ingest.revoke("demo", leaf.serial_number, "keyCompromise", NOW + 30)
    assert row.reason == 1 and row.revoked_at == NOW + 10 and row.version == 3
    with pytest.raises(IngestError, match="already revoked"):
        ingest.revoke("demo", leaf.serial_number, "keyCompromise", NOW + 40)


def test_future_revocation_time_refused(deployment) -> None:
    ingest = deployment.ingest()
    leaf = deployment.leaf()
    ingest.add_certificates([(leaf, "l")], NOW)
    with pytest.raises(IngestError, match="future"):
        ingest.revoke("demo", leaf.serial_number, "superseded", NOW, time=NOW + 3600)


def test_serial_spellings() -> None:
    assert parse_serial("0x0A:bc") == 0xABC
    assert parse_serial("00ff") == 0xFF
    for bad in ("", "xyz", "-1", "1" * 50):
        with pytest.raises(IngestError):
            parse_serial(bad)


def test_keycompromise_time_moves_only_earlier(deployment) -> None:
    """A compromise found to have begun earlier than first recorded moves the time back; the
    same or a later time is refused, and nothing changes. (Times stay after the leaf's
    notBefore, 5 minutes back: an earlier one is refused on its own.)"""
    store = deployment.store()
    ingest = deployment.ingest(store)
    leaf = deployment.leaf()
    now = int(time.time())
    ingest.add_certificates([(leaf, "l")], now)
    ingest.revoke("demo", leaf.serial_number, "keyCompromise", now, time=now - 100)
    row = ingest.revoke("demo", leaf.serial_number, "keyCompromise", now, time=now - 200)
    assert row.revoked_at == now - 200 and row.reason == 1 and row.version == 3
    before = snapshot(store)
    for later in (now - 200, now - 150):
        with pytest.raises(IngestError, match="only move it earlier"):
            ingest.revoke("demo", leaf.serial_number, "keyCompromise", now, time=later)
    assert snapshot(store) == before


def test_ca_and_responder_certificates_are_not_recorded(deployment) -> None:
    store = deployment.store()
    ingest = deployment.ingest(store)
    before = snapshot(store)
    for name, why in (("issuer.pem", "CA certificate"), ("responder.pem", "OCSP responder")):
        with pytest.raises(IngestError, match=why):
            ingest.add_files([deployment.write_leaf(deployment.leaf()), deployment.dir / name], NOW)
    assert snapshot(store) == before
