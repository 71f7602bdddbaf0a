"""`certstatus import crl` (issue 12's migration path): the revocations another system's CRL lists
are recorded through the rules of `revoke --from` (R7 reasons, only forward, not before
notBefore) and audit-logged as import-crl (R23); serials nobody recorded are reported, never
invented (F2); a CRL of another issuer or one altered after signing is refused with one line and
nothing written; importing the same CRL again changes nothing. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from certstatus import der
from certstatus.crl.reading import CrlReadError, read_crl
from certstatus.demo.ca import DemoCA
from certstatus.ingest.api import IngestError
from certstatus.ingest.crlimport import import_crl


def cli(deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "certstatus.cli", "import", "crl", "--config",
         str(deployment.config_path), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def make_crl(
    ca: DemoCA,
    entries: list[tuple[int, int, x509.ReasonFlags | None]],
    number: int = 7,
    extra: x509.ExtensionType | None = None,
) -> x509.CertificateRevocationList:
    """A CRL as another system would publish it: (serial, revocationDate, reason or None)."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now - dt.timedelta(minutes=1))
        .next_update(now + dt.timedelta(days=1))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    if extra is not None:
        builder = builder.add_extension(extra, critical=True)
    for serial, when, reason in entries:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(dt.datetime.fromtimestamp(when, dt.UTC))
        )
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    assert ca.key is not None
    return builder.sign(ca.key, hashes.SHA256())


def written(store) -> tuple:
    """Everything an import could change: the rows' revocation state and the audit head."""
    counts = store.counts()
    return counts, store.audit_head()


def test_import_revokes_listed_reports_unknown_and_is_idempotent(engine, tmp_path: Path) -> None:
    store = engine.store()
    ingest = engine.ingest(store)
    issuer_id = ingest.issuer_id("demo")
    compromised, unspecified, already = engine.leaf(), engine.leaf(), engine.leaf()
    ingest.add_certificates(
        [(c, "c") for c in (compromised, unspecified, already)], int(time.time())
    )
    when = int(time.time()) - 60
    ingest.revoke("demo", already.serial_number, "superseded", int(time.time()), when)
    unknown = [0xDEAD0001, 0xDEAD0002]
    crl = make_crl(
        engine.ca,
        [
            (compromised.serial_number, when - 30, x509.ReasonFlags.key_compromise),
            (unknown[0], when, x509.ReasonFlags.superseded),
            (unspecified.serial_number, when, None),
            (already.serial_number, when, x509.ReasonFlags.superseded),
            (unknown[1], when, None),
        ],
    )
    pem = tmp_path / "last.crl.pem"
    pem.write_bytes(crl.public_bytes(Encoding.PEM))
    before = store.counts()

    done = cli(engine, "--issuer", "demo", str(pem))
    assert done.returncode == 0, done.stderr
    assert "CRL number 7 of 'demo'" in done.stdout
    assert done.stdout.rstrip().endswith("5 entries; revoked 2, unchanged 1, not recorded 2")
    assert done.stderr.strip() == (
        f"2 serials on the CRL are not recorded here and were not revoked ({unknown[0]:x}, "
        f"{unknown[1]:x}); add their certificates, then import the CRL again"
    )
    rows = store.certificates_many(issuer_id, [c.serial_number for c in (compromised, unspecified)])
    assert (rows[compromised.serial_number].reason, rows[compromised.serial_number].revoked_at) == (
        1,
        when - 30,
    )
    assert rows[unspecified.serial_number].revoked
    assert (rows[unspecified.serial_number].reason, rows[unspecified.serial_number].revoked_at) == (
        0,
        when,
    )
    assert store.certificates_many(issuer_id, unknown) == {}  # never invented
    assert store.counts()["certificates"] == before["certificates"]
    entries = store.audit_entries(0, 0, 100)
    imported = [e for e in entries if e.action == "import-crl"]
    assert sorted(e.serial for e in imported) == sorted(
        f"{c.serial_number:x}" for c in (compromised, unspecified)
    )
    assert all(e.actor.startswith("cli:") and e.request_id == "crl demo number 7" for e in imported)

    head = store.audit_head()
    derfile = tmp_path / "last.crl"
    derfile.write_bytes(crl.public_bytes(Encoding.DER))
    again = cli(engine, "--issuer", "demo", str(derfile))  # DER, the same CRL: nothing changes
    assert again.returncode == 0, again.stderr
    assert "revoked 0, unchanged 3, not recorded 2" in again.stdout
    assert store.audit_head() == head


def test_foreign_tampered_and_unreadable_crls_are_refused_with_nothing_written(
    engine, tmp_path: Path
) -> None:
    store = engine.store()
    ingest = engine.ingest(store)
    leaf = engine.leaf()
    ingest.add_certificates([(leaf, "l")], int(time.time()))
    when = int(time.time()) - 60
    listed = [(leaf.serial_number, when, x509.ReasonFlags.key_compromise)]
    state = written(store)

    def refused(name: str, data: bytes, *args: str) -> str:
        path = tmp_path / name
        path.write_bytes(data)
        result = cli(engine, *(args or ("--issuer", "demo")), str(path))
        assert result.returncode == 2, result
        assert result.stdout == "" and len(result.stderr.splitlines()) == 1, result.stderr
        assert written(store) == state
        return result.stderr.strip()

    other = DemoCA.create("another CA")
    assert "is issued by CN=another CA" in refused(
        "other.crl", make_crl(other, listed).public_bytes(Encoding.DER)
    )
    same_name = DemoCA.create()  # the demo CA's name, another key
    assert "signature does not verify with issuer 'demo'" in refused(
        "impostor.crl", make_crl(same_name, listed).public_bytes(Encoding.PEM)
    )
    genuine = make_crl(engine.ca, listed).public_bytes(Encoding.DER)
    serial = der.integer(leaf.serial_number)
    tampered = genuine.replace(serial, serial[:-1] + bytes([serial[-1] ^ 1]), 1)
    assert tampered != genuine
    message = refused("tampered.crl", tampered)
    assert message == (
        f"error: {tmp_path / 'tampered.crl'}: its signature does not verify with issuer 'demo''s "
        "certificate (altered, or signed by another key); nothing recorded"
    )
    assert "is not a PEM or DER CRL" in refused("garbage.crl", b"\x30\x03\x02\x01\x01")
    assert "unknown issuer 'nobody'" in refused("genuine.crl", genuine, "--issuer", "nobody")
    delta = make_crl(engine.ca, listed, extra=x509.DeltaCRLIndicator(6)).public_bytes(Encoding.DER)
    assert "is a delta CRL" in refused("delta.crl", delta)
    hold = make_crl(
        engine.ca,
        [
            *listed,
            (0x1, when, None),
            (leaf.serial_number + 1, when, None),
            (leaf.serial_number, when, x509.ReasonFlags.certificate_hold),
        ],
    )
    message = refused("hold.crl", hold.public_bytes(Encoding.DER))
    assert "'certificateHold' is not allowed for subscriber certificates (R7)" in message
    assert "entry 4" in message and message.endswith("nothing recorded")


def test_rules_refuse_the_whole_import_before_any_chunk_is_written(engine) -> None:
    """A refusal in a later chunk (a regression of a recorded revocation, a time before
    notBefore) leaves earlier chunks unwritten: every entry is checked first."""
    store = engine.store()
    ingest = engine.ingest(store)
    leaves = [engine.leaf() for _ in range(5)]
    ingest.add_certificates([(c, "c") for c in leaves], int(time.time()))
    now = int(time.time())
    when = now - 60
    ingest.revoke("demo", leaves[4].serial_number, "keyCompromise", now, when)
    good = [(c.serial_number, when, x509.ReasonFlags.superseded) for c in leaves[:4]]
    state = written(store)

    regress = make_crl(
        engine.ca, [*good, (leaves[4].serial_number, when, x509.ReasonFlags.superseded)]
    )
    with pytest.raises(IngestError) as refused:
        import_crl(
            ingest,
            "demo",
            read_crl(regress.public_bytes(Encoding.DER), engine.ca.certificate, "demo"),
            now,
            chunk=2,
        )
    assert str(refused.value) == (
        f"entry 5: serial {leaves[4].serial_number:x}: already revoked (keyCompromise); a revoked "
        "certificate's reason may only be changed to keyCompromise; nothing recorded"
    )
    assert written(store) == state

    early = make_crl(engine.ca, [*good, (leaves[3].serial_number, now - 3600, None)])
    listing = read_crl(early.public_bytes(Encoding.DER), engine.ca.certificate, "demo")
    with pytest.raises(IngestError, match=r"entry 5: serial .*before the certificate's notBefore"):
        import_crl(ingest, "demo", listing, now, chunk=2)
    assert written(store) == state

    fine = read_crl(
        make_crl(engine.ca, good).public_bytes(Encoding.DER), engine.ca.certificate, "demo"
    )
    result = import_crl(ingest, "demo", fine, now, chunk=2)
    assert (result.listed, result.revoked, result.unchanged, result.unknown) == (4, 4, 0, 0)


def test_an_indirect_crl_entry_is_refused() -> None:
    ca = DemoCA.create()
    now = dt.datetime.now(dt.UTC)
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(5)
        .revocation_date(now)
        .add_extension(
            x509.CertificateIssuer(
                [x509.DirectoryName(DemoCA.create("other").certificate.subject)]
            ),
            critical=True,
        )
        .build()
    )
    assert ca.key is not None
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=1))
        .add_revoked_certificate(entry)
        .sign(ca.key, hashes.SHA256())
    )
    listing = read_crl(crl.public_bytes(Encoding.DER), ca.certificate, "demo")
    assert listing.number is None and len(listing) == 1
    with pytest.raises(CrlReadError, match=r"entry 1 .*indirect CRL"):
        list(listing.entries())
