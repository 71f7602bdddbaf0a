"""Each responder certificate is stored once, not in every response (schema 10): the store
keeps a response without its trailing `certs` field and appends it on reading, so what is
served is byte for byte the response the signer made, and verifies as a relying party checks
it (R6). Tests taking `engine` run on SQLite and on PostgreSQL (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from certstatus.ocsp.certid import HashAlgorithm
from certstatus.ocsp.response import certs_field
from certstatus.store import responsecerts
from certstatus.store.base import ResponseFormat, SignedResponse, StoreError, serial_key

ON = '{"certs_stored_once":true,"sha256_on_request":false}'
OFF = '{"certs_stored_once":false,"sha256_on_request":false}'


def _signed(engine, count: int):
    store = engine.store()
    ingest = engine.ingest(store)
    leaves = [engine.leaf() for _ in range(count)]
    ingest.add_certificates([(leaf, "t") for leaf in leaves], int(time.time()))
    with engine.signer(store) as signer:
        assert signer.sign_due() == count
    return store, ingest.issuer_id("demo"), [leaf.serial_number for leaf in leaves]


def _rows(store, issuer_id: int, serial: int) -> tuple[bytes, bytes, int]:
    with store._reading() as db:
        sha1, sha256, certs_id = db.execute(
            store._sql(
                "SELECT der_sha1, der_sha256, certs_id FROM responses "
                "WHERE issuer_id = ? AND serial = ?"
            ),
            (issuer_id, serial_key(serial)),
        ).fetchone()
    return bytes(sha1), bytes(sha256), certs_id


def _forget_cached_certs(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a new process: nothing read from response_certs yet."""
    monkeypatch.setattr(responsecerts.CERTS, "_known", {responsecerts.WHOLE: b""})


def test_a_response_is_stored_without_its_responder_certificate_and_served_whole_r6(
    engine, monkeypatch
) -> None:
    store, issuer_id, serials = _signed(engine, 3)
    responder = x509.load_pem_x509_certificate((engine.dir / "responder.pem").read_bytes())
    certs = certs_field(engine.ca.certificate, responder)
    with store._reading() as db:
        kept = db.execute("SELECT id, der FROM response_certs").fetchall()
    assert [(i, bytes(d)) for i, d in kept] == [(responsecerts.certs_id(certs), certs)]
    _forget_cached_certs(monkeypatch)
    for serial in serials:
        sha1, sha256, certs_id = _rows(store, issuer_id, serial)
        assert certs_id == responsecerts.certs_id(certs)
        for algorithm, stored in ((HashAlgorithm.SHA1, sha1), (HashAlgorithm.SHA256, sha256)):
            assert len(stored) < len(certs)  # the certificate was most of every row
            served = store.response(issuer_id, serial, algorithm)
            assert served is not None and served.der == stored + certs
            response = ocsp.load_der_ocsp_response(served.der)
            assert response.certificates == [responder]
            responder.public_key().verify(
                response.signature,
                response.tbs_response_bytes,
                ec.ECDSA(response.signature_hash_algorithm),
            )
            assert response.serial_number == serial
        info = store.response_info(issuer_id, serial)
        assert info.der_sha1 == sha1 + certs and info.der_sha256 == sha256 + certs


def test_rows_stored_whole_before_schema_10_are_served_as_they_are(engine) -> None:
    store, issuer_id, [serial, other] = _signed(engine, 2)
    whole = store.response(issuer_id, serial).der
    with store._writing() as db:
        db.execute(
            store._sql(
                "UPDATE responses SET der_sha1 = ?, certs_id = 0 WHERE issuer_id = ? AND serial = ?"
            ),
            (whole, issuer_id, serial_key(serial)),
        )
    assert store.response(issuer_id, serial).der == whole
    assert store.response(issuer_id, other).der != whole  # the others are still completed


def test_each_response_keeps_the_certificate_it_was_stored_with(engine, monkeypatch) -> None:
    """Across a responder rotation, rows signed before and after it coexist: each is completed
    with its own `certs`, named by the bytes' hash; on PostgreSQL also by the responder's
    batched lookups (store/pglookup.py, and store/pgloop.py from an event loop), which read
    what they have not seen in the same exchange."""
    store, issuer_id, [first, second] = _signed(engine, 2)
    now = int(time.time())
    old, new = b"\xa0\x03\x30\x01\x00", b"\xa0\x04\x30\x02\x00\x00"
    versions = store.response_versions(issuer_id, [first, second])
    store.store_signed(
        [
            SignedResponse(issuer_id, first, versions[first], b"a1", b"a256", now, now + 9, now + 5, old),
            SignedResponse(issuer_id, second, versions[second], b"b1", b"b256", now, now + 9, now + 5, new),
        ],
        now,
    )  # fmt: skip
    assert store.response(issuer_id, first).der == b"a1" + old
    assert store.response(issuer_id, second, HashAlgorithm.SHA256).der == b"b256" + new
    # storing the same certs again (a retried batch, a second signer) adds no row
    store.store_signed(
        [SignedResponse(issuer_id, first, versions[first], b"c1", b"c256", now, now + 9, now + 5, old)],
        now,
    )  # fmt: skip
    with store._reading() as db:
        (count,) = db.execute("SELECT count(*) FROM response_certs").fetchone()
    assert count == 3  # the real responder's, old and new
    if engine.engine == "postgres":
        keys = [
            (issuer_id, first, HashAlgorithm.SHA1),
            (issuer_id, second, HashAlgorithm.SHA256),
            (issuer_id, first, HashAlgorithm.SHA256),
        ]
        expected = [b"c1" + old, b"b256" + new, b"c256" + old]
        _forget_cached_certs(monkeypatch)
        assert [r.der for r in store.responses(keys)] == expected
        _forget_cached_certs(monkeypatch)
        store.loop_reader.connect()
        assert [r.der for r in asyncio.run(store.loop_reader.responses(keys))] == expected


def test_a_response_whose_certificate_row_is_gone_is_an_error_not_a_cut_answer(
    engine, monkeypatch
) -> None:
    store, issuer_id, [serial] = _signed(engine, 1)
    with store._writing() as db:
        db.execute("DELETE FROM response_certs")
    _forget_cached_certs(monkeypatch)
    with pytest.raises(StoreError, match="response_certs has no row matching id"):
        store.response(issuer_id, serial)
    if engine.engine == "postgres":
        keys = [(issuer_id, serial, HashAlgorithm.SHA1)]
        with pytest.raises(StoreError, match="response_certs has no row matching id"):
            store.responses(keys)
        reader = store.loop_reader
        reader.connect()
        with pytest.raises(StoreError, match="response_certs has no row matching id"):
            asyncio.run(reader.responses(keys))
        assert not reader.ready  # the loop's connection is dropped, as on any failure


# Schema 11: cut rows only once the operator says no earlier reader is left
# (`certstatus responder-cert store-once on`).


def _at_schema(engine, last: int) -> None:
    """Create the engine's database as a release that knew schemas up to `last` left it."""
    from certstatus.store import sqlite_path
    from certstatus.store.schema import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS

    url = engine.config.database
    if engine.engine == "postgres":
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
            for version, sql in POSTGRES_MIGRATIONS[:last]:
                db.execute(sql.encode())
                db.execute("INSERT INTO schema_migrations VALUES (%s)", (version,))
        return
    import sqlite3

    db = sqlite3.connect(sqlite_path(url, engine.config.base_dir), isolation_level=None)
    db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
    for version, sql in SQLITE_MIGRATIONS[:last]:
        for statement in filter(str.strip, sql.split(";")):
            db.execute(statement)
        db.execute("INSERT INTO schema_migrations VALUES (?)", (version,))
    db.close()


def _raw(engine, sql: str, parameters: tuple = ()) -> None:
    """One statement on the engine's database, outside any store."""
    if engine.engine == "postgres":
        import psycopg

        with psycopg.connect(engine.config.database, autocommit=True) as db:
            db.execute(sql.replace("?", "%s").encode(), parameters)
        return
    import sqlite3

    from certstatus.store import sqlite_path

    db = sqlite3.connect(sqlite_path(engine.config.database, engine.config.base_dir))
    db.execute(sql, parameters)
    db.commit()
    db.close()


def _at_schema_reset(engine) -> None:
    """An empty database again."""
    if engine.engine == "postgres":
        _raw(engine, "DROP SCHEMA public CASCADE")
        _raw(engine, "CREATE SCHEMA public")
        return
    from certstatus.store import sqlite_path

    path = sqlite_path(engine.config.database, engine.config.base_dir)
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def _audited_format_changes(store) -> list[tuple[str, str, str | None]]:
    return [
        (r.actor, r.action, r.after)
        for r in store.audit_entries(0, 0, 1000)
        if r.action == "response-format"
    ]


def test_a_new_database_stores_each_responder_certificate_once(engine) -> None:
    store, issuer_id, [serial] = _signed(engine, 1)
    assert store.response_format() == ResponseFormat(True, False)
    assert _rows(store, issuer_id, serial)[2] != responsecerts.WHOLE


def test_an_upgraded_database_stores_whole_responses_until_switched_on_f5(engine) -> None:
    """A database a release before schema 10 created may still be read by such a release's
    web nodes, which serve a stored row as it is: rows stay whole (what they serve correctly)
    until the operator switches store-once on, and again after switching it off."""
    from certstatus.store.base import AuditContext

    _at_schema(engine, 9)
    store, issuer_id, [first, second] = _signed(engine, 2)
    assert store.response_format() == ResponseFormat(False, False)
    responder = x509.load_pem_x509_certificate((engine.dir / "responder.pem").read_bytes())
    for serial in (first, second):
        sha1, sha256, certs_id = _rows(store, issuer_id, serial)
        assert certs_id == responsecerts.WHOLE
        for stored in (sha1, sha256):  # an earlier reader serves the row as it is: whole
            assert ocsp.load_der_ocsp_response(stored).certificates == [responder]
        assert store.response(issuer_id, serial).der == sha1
    with store._reading() as db:
        assert db.execute("SELECT count(*) FROM response_certs").fetchone()[0] == 0

    operator = AuditContext("cli:test", action="response-format")
    on, off = ResponseFormat(True, False), ResponseFormat(False, False)
    assert store.set_response_format(on, operator, int(time.time())) == off
    assert store.set_response_format(on, operator, int(time.time())) == on  # no second entry
    assert _audited_format_changes(store) == [("cli:test", "response-format", ON)]
    ingest = engine.ingest(store)
    ingest.revoke("demo", first, "keyCompromise", int(time.time()))
    with engine.signer(store) as signer:
        assert signer.sign_due() == 1
    sha1, _, certs_id = _rows(store, issuer_id, first)
    assert certs_id != responsecerts.WHOLE  # signed after the switch: cut
    served = ocsp.load_der_ocsp_response(store.response(issuer_id, first).der)
    assert served.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert served.certificates == [responder]
    assert store.response(issuer_id, second).der == _rows(store, issuer_id, second)[0]

    assert store.set_response_format(off, operator, int(time.time())) == on
    ingest.revoke("demo", second, "keyCompromise", int(time.time()))
    with engine.signer(store) as signer:
        assert signer.sign_due() == 1
    sha1, _, certs_id = _rows(store, issuer_id, second)
    assert certs_id == responsecerts.WHOLE
    assert ocsp.load_der_ocsp_response(sha1).certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert [after for _, _, after in _audited_format_changes(store)] == [ON, OFF]


def test_a_database_already_holding_cut_rows_keeps_storing_them(engine) -> None:
    """Upgrading from schema 10, whose signers stored cut rows unconditionally (and filled
    response_certs with each): its readers already complete them, so schema 11 starts
    switched on; with no cut row, off."""
    _at_schema(engine, 10)
    assert not engine.store().response_format().certs_stored_once
    engine.opened.pop().close()
    _at_schema_reset(engine)
    _at_schema(engine, 10)
    _raw(engine, "INSERT INTO response_certs VALUES (1, ?)", (b"\xa0\x00",))
    assert engine.store().response_format().certs_stored_once


def test_response_format_command_tells_and_switches_it(engine) -> None:
    """What an operator runs after the last earlier reader is gone, on either engine."""
    import subprocess
    import sys

    _at_schema(engine, 9)

    def run(*options: str) -> subprocess.CompletedProcess[str]:
        command = ["response-format", "--config", str(engine.config_path), *options]
        return subprocess.run(
            [sys.executable, "-m", "certstatus.cli", *command],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    where = engine.store().where
    assert run().stdout == (
        f"database: {where}\n"
        "responder certificate stored once: off (whole responses)\n"
        "SHA-256 CertID responses: pregenerated\n"
    )
    switched = run("--certs-stored-once", "on")
    assert switched.returncode == 0, switched.stderr
    assert switched.stdout == (
        f"database: {where}\n"
        "responder certificate stored once: on\n"
        "SHA-256 CertID responses: pregenerated\n"
        "changed: signers follow from their next batch\n"
    )
    assert run("--certs-stored-once", "on").stdout.endswith("unchanged: it was already so\n")
    assert "signed on request" in run("--sha256", "on-request").stdout
    typo = run("--sha256", "yes")
    assert typo.returncode == 2 and "'yes' is not one of 'pregenerate', 'on-request'" in typo.stderr
    assert len(typo.stderr.strip().splitlines()) == 1
    store = engine.store()
    assert store.response_format() == ResponseFormat(True, True)
    actors = {actor for actor, _, _ in _audited_format_changes(store)}
    assert len(_audited_format_changes(store)) == 2 and all(a.startswith("cli:") for a in actors)
