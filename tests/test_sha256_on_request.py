"""SHA-256 CertID responses signed on request (`certstatus response-format --sha256
on-request`, issue 15 item 4): signers pregenerate only the SHA-1 CertID response (what RFC 5019 clients
send); a client asking with SHA-256 gets tryLater (never cached) while its responder asks
the signers, which sign it within seconds and with every refresh after. Web nodes never sign
(R25). Tests taking `engine` run on SQLite and on PostgreSQL (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from certstatus.ocsp.certid import HashAlgorithm
from certstatus.responder.sha256asks import ASKS_PER_SECOND, MAX_QUEUED, Sha256Asks
from certstatus.store import responsecerts
from certstatus.store.base import (
    AuditContext,
    Priority,
    ResponseFormat,
    SignedResponse,
    StoreError,
    serial_key,
)
from certstatus.store.sha256requests import ASK_INTERVAL
from tests.conftest import make_deployment, serving, stop_process, wait_ready

SHA1, SHA256 = HashAlgorithm.SHA1, HashAlgorithm.SHA256


def _on_request(store, certs_stored_once: bool = True) -> None:
    wanted = ResponseFormat(certs_stored_once, sha256_on_request=True)
    store.set_response_format(wanted, AuditContext("cli:test"), int(time.time()))


def _signed(engine, count: int):
    store = engine.store()
    _on_request(store)
    ingest = engine.ingest(store)
    leaves = [engine.leaf() for _ in range(count)]
    ingest.add_certificates([(leaf, "t") for leaf in leaves], int(time.time()))
    with engine.signer(store) as signer:
        assert signer.sign_due() == count
        assert signer.signatures == count  # one response each
    return store, ingest, ingest.issuer_id("demo"), [leaf.serial_number for leaf in leaves]


def _verified(engine, der: bytes, serial: int, algorithm: type[hashes.HashAlgorithm]):
    responder = x509.load_pem_x509_certificate((engine.dir / "responder.pem").read_bytes())
    response = ocsp.load_der_ocsp_response(der)
    assert response.serial_number == serial
    assert isinstance(response.hash_algorithm, algorithm)
    responder.public_key().verify(
        response.signature, response.tbs_response_bytes, ec.ECDSA(response.signature_hash_algorithm)
    )
    return response


def _openssl_ocsp(directory, leaf_path, url: str, digest: str) -> str:
    """`openssl ocsp` as a relying party runs it (digest: -sha1 or -sha256): its output."""
    issuer = str(directory / "issuer.pem")
    result = subprocess.run(
        [shutil.which("openssl") or "openssl", "ocsp", digest, "-issuer", issuer, "-cert",
         str(leaf_path), "-url", url, "-CAfile", issuer, "-no_nonce"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return result.stdout + result.stderr


def _due_now(store) -> None:
    """Every row due for refresh now, as it is once its refresh time comes."""
    with store._writing() as db:
        db.execute(
            store._sql("UPDATE certificates SET priority = ?, due_at = ?"),
            (int(Priority.REFRESH), int(time.time()) - 1),
        )


def test_only_the_sha1_response_is_pregenerated_r8(engine, monkeypatch) -> None:
    store, _, issuer_id, serials = _signed(engine, 3)
    for serial in serials:
        sha1 = store.response(issuer_id, serial, SHA1)
        assert sha1 is not None
        status = _verified(engine, sha1.der, serial, hashes.SHA1).certificate_status
        assert status == ocsp.OCSPCertStatus.GOOD
        sha256 = store.response(issuer_id, serial, SHA256)
        assert sha256 is not None and sha256.der == b""  # stored, not signed
        assert (sha256.this_update, sha256.next_update) == (sha1.this_update, sha1.next_update)
        info = store.response_info(issuer_id, serial)
        assert info.der_sha1 == sha1.der and info.der_sha256 == b""
    with store._reading() as db:
        lengths = db.execute("SELECT length(der_sha256) FROM responses").fetchall()
    assert [n for (n,) in lengths] == [0, 0, 0]
    if engine.engine == "postgres":  # the responder's batched reads, nothing cached
        keys = [(issuer_id, serials[0], SHA256), (issuer_id, serials[0], SHA1)]
        for read in (store.responses, lambda k: asyncio.run(store.loop_reader.responses(k))):
            monkeypatch.setattr(responsecerts.CERTS, "_known", {responsecerts.WHOLE: b""})
            store.loop_reader.connect()
            empty, whole = read(keys)
            assert empty.der == b"" and whole.der == store.response(issuer_id, serials[0]).der


def test_an_asked_sha256_response_is_signed_then_refreshed_with_both(engine) -> None:
    store, ingest, issuer_id, [asked, other] = _signed(engine, 2)
    now = int(time.time())
    assert store.want_sha256(issuer_id, asked, now)
    assert not store.want_sha256(issuer_id, asked, now + 1)  # asked within ASK_INTERVAL
    assert not store.want_sha256(issuer_id, 0xDEADBEEF, now)  # not recorded: nothing to ask
    row = store.certificate(issuer_id, asked)
    assert row.priority is Priority.REFRESH  # due now, behind revocations
    assert abs(row.due_at - now) <= 1  # PostgreSQL stamps its own clock
    with engine.signer(store) as signer:
        assert signer.sign_due() == 1
        assert signer.signatures == 2
    first = store.response(issuer_id, asked, SHA256)
    assert _verified(engine, first.der, asked, hashes.SHA256).certificate_status == (
        ocsp.OCSPCertStatus.GOOD
    )
    assert store.response(issuer_id, other, SHA256).der == b""

    _due_now(store)  # the next refresh signs both for the asked certificate only
    with engine.signer(store) as signer:
        assert signer.sign_due() == 2
        assert signer.signatures == 3
    assert store.response(issuer_id, asked, SHA256).der not in (b"", first.der)
    assert store.response(issuer_id, other, SHA256).der == b""

    ingest.revoke("demo", asked, "keyCompromise", int(time.time()))
    with engine.signer(store) as signer:
        assert signer.sign_due() == 1
    for algorithm, kind in ((SHA1, hashes.SHA1), (SHA256, hashes.SHA256)):
        der = store.response(issuer_id, asked, algorithm).der
        status = _verified(engine, der, asked, kind).certificate_status
        assert status == ocsp.OCSPCertStatus.REVOKED
    assert store.want_sha256(issuer_id, other, now + ASK_INTERVAL)  # once per interval


def test_an_expired_certificate_cannot_be_asked_for(engine) -> None:
    store = engine.store()
    _on_request(store)
    ingest = engine.ingest(store)
    leaf = engine.ca.leaf(engine.leaf_key, 0xE1, engine.url, days=1)
    ingest.add_certificates([(leaf, "short")], int(time.time()))
    issuer_id = ingest.issuer_id("demo")
    with store._writing() as db:  # as it is a day later (PostgreSQL asks by its own clock)
        db.execute(
            store._sql("UPDATE certificates SET not_after = ? WHERE serial = ?"),
            (int(time.time()) - 1, serial_key(0xE1)),
        )
    assert not store.want_sha256(issuer_id, 0xE1, int(time.time()))
    with store._writing() as db:
        db.execute(
            store._sql("UPDATE certificates SET not_after = ? WHERE serial = ?"),
            (int(time.time()) + 86400, serial_key(0xE1)),
        )
    assert store.want_sha256(issuer_id, 0xE1, int(time.time()))


def test_a_responder_asks_once_per_interval_and_never_waits() -> None:
    """Many requests for the same missing response: one ask; a failing ask is counted and
    logged, never raised into a request; a burst of distinct serials is capped (queued asks,
    then a rate per second)."""
    asked: list[tuple[int, int, int]] = []
    clock = [1000.0]

    def ask(issuer_id: int, serial: int, now: int) -> bool:
        asked.append((issuer_id, serial, now))
        if serial == 7:
            raise StoreError("primary unreachable")
        return True

    async def drained(asks: Sha256Asks) -> None:
        while asks._queued:
            await asyncio.sleep(0.01)

    reported: list[str] = []

    async def burst() -> Sha256Asks:
        asks = Sha256Asks(ask, lambda: clock[0], reported.append)
        for _ in range(50):
            asks(1, 5)
        asks(1, 6)
        asks(1, 7)
        await drained(asks)
        clock[0] += ASK_INTERVAL
        asks(1, 5)
        await drained(asks)
        return asks

    asks = asyncio.run(burst())
    assert asks.sent == 4 and asks.failed == 1
    assert sorted(reported) == ["failed", "sent", "sent", "sent", "sent"]  # the metric
    assert sorted(asked) == [(1, 5, 1000), (1, 5, 1000 + ASK_INTERVAL), (1, 6, 1000), (1, 7, 1000)]

    async def flood() -> list[int]:
        asked.clear()
        asks = Sha256Asks(ask, lambda: clock[0])
        sent = []
        for second in range(3):
            for serial in range(100 + 1000 * second, 200 + 1000 * second):
                asks(1, serial)
                if serial % 4 == 3:  # let queued asks finish, as time passes in a server
                    await drained(asks)
            sent.append(asks.sent)
            clock[0] += 1
        return sent

    assert asyncio.run(flood()) == [ASKS_PER_SECOND, 2 * ASKS_PER_SECOND, 3 * ASKS_PER_SECOND]

    async def queued() -> int:
        asks = Sha256Asks(lambda *_: time.sleep(0.05) or True, lambda: clock[0])
        for serial in range(10):
            asks(2, serial)
        count = asks.sent
        await drained(asks)
        return count

    assert asyncio.run(queued()) == MAX_QUEUED


def test_a_sha1_only_response_never_replaces_an_asked_one(engine) -> None:
    """The race an ask opens: a batch claimed before the ask (SHA-1 only) stores after the
    batch claimed after it (both CertIDs), at the same version. The store refuses the
    SHA-1-only one, in either order, and the row stays due until both are stored."""
    store, _, issuer_id, [serial] = _signed(engine, 1)
    now = int(time.time())
    version = store.response_versions(issuer_id, [serial])[serial]
    certs = store.response(issuer_id, serial).der[-10:]  # any bytes: only their presence counts

    def signed(sha256: bytes) -> SignedResponse:
        return SignedResponse(
            issuer_id, serial, version, b"one", sha256, now, now + 9, now + 5, certs
        )

    assert store.want_sha256(issuer_id, serial, now)
    assert store.store_signed([signed(b"")], now) == 0  # claimed before the ask: refused
    assert store.certificate(issuer_id, serial).due_at == now  # still due
    assert store.store_signed([signed(b"two")], now) == 1
    assert store.store_signed([signed(b"")], now) == 0  # and never over the asked one
    assert store.response(issuer_id, serial, SHA256).der.startswith(b"two")


def test_revocations_and_an_old_reader_format(engine) -> None:
    """A revoked certificate is signed with both CertIDs even under on-request (a client
    must not get tryLater for a revocation); with the responder certificate stored whole
    (certs_stored_once off), an unsigned SHA-256 response stays empty, not the field alone."""
    from tests.test_response_certs import _at_schema

    _at_schema(engine, 9)
    store = engine.store()
    _on_request(store, certs_stored_once=False)
    ingest = engine.ingest(store)
    good, bad = engine.leaf(), engine.leaf()
    ingest.add_certificates([(good, "g"), (bad, "b")], int(time.time()))
    ingest.revoke("demo", bad.serial_number, "keyCompromise", int(time.time()))
    with engine.signer(store) as signer:
        assert signer.sign_due() == 2
        assert signer.signatures == 3
    issuer_id = ingest.issuer_id("demo")
    with store._reading() as db:
        rows = dict(
            db.execute(
                "SELECT serial, length(der_sha256) FROM responses WHERE certs_id = 0"
            ).fetchall()
        )
    assert rows[serial_key(good.serial_number)] == 0
    assert rows[serial_key(bad.serial_number)] > 500  # whole: the certificate is in it
    der = store.response(issuer_id, bad.serial_number, SHA256).der
    status = _verified(engine, der, bad.serial_number, hashes.SHA256).certificate_status
    assert status == ocsp.OCSPCertStatus.REVOKED


@pytest.mark.integration
def test_openssl_gets_try_later_then_the_signed_sha256_response(tmp_path) -> None:
    """As a relying party sees it: `certstatus serve` (its signer inside) with on-request
    SHA-256; openssl asks with a SHA-1 CertID (good at once) and a SHA-256 one (tryLater,
    then good once the signer signed it, within seconds)."""
    deployment = make_deployment(tmp_path / "d", run_signer=True)
    store = deployment.store()
    _on_request(store)
    leaf = deployment.leaf()
    deployment.ingest(store).add_certificates([(leaf, "t")], int(time.time()))
    path = deployment.write_leaf(leaf)

    def ask(digest: str) -> str:
        return _openssl_ocsp(deployment.dir, path, deployment.url, digest)

    with serving(deployment):
        deadline = time.monotonic() + 20
        while ": good" not in ask("-sha1") and time.monotonic() < deadline:
            time.sleep(0.2)  # the signer inside serve signs the new certificate
        assert f"{path}: good" in ask("-sha1")
        first = ask("-sha256")
        assert re.search(r"trylater", first, re.I), first
        answers = [first]
        while ": good" not in answers[-1] and time.monotonic() < deadline:
            time.sleep(0.2)
            answers.append(ask("-sha256"))
        assert "Response verify OK" in answers[-1] and f"{path}: good" in answers[-1], answers
    with store._reading() as db:
        [(wanted,)] = db.execute(
            "SELECT sha256_wanted_at FROM certificates WHERE serial = ?",
            (serial_key(leaf.serial_number),),
        ).fetchall()
    assert wanted > 0


@pytest.mark.integration
def test_a_web_node_role_asks_through_the_function_and_cannot_update(
    postgres_server, tmp_path
) -> None:
    """A web node's role needs only SELECT and EXECUTE on the schema-13 function: its ask
    works, and the UPDATE a compromised web node would use to stop every refresh (due_at
    NULL) or jump revocations is refused by the server."""
    import uuid

    import psycopg
    from psycopg.conninfo import make_conninfo

    from certstatus.store.postgres import PostgresStore
    from tests.conftest import EngineDeployment, _fresh_postgres_database

    built = make_deployment(tmp_path / "ca")
    deployment = EngineDeployment(built.dir, built.ca, built.port)
    url = _fresh_postgres_database(postgres_server)
    deployment.config_path.write_text(
        deployment.config_path.read_text().replace(
            'database = "certstatus.db"', f'database = "{url}"'
        )
    )
    deployment.engine = "postgres"
    try:
        store = deployment.store()
        _on_request(store)
        ingest = deployment.ingest(store)
        leaf = deployment.leaf()
        ingest.add_certificates([(leaf, "t")], int(time.time()))
        with deployment.signer(store) as signer:
            assert signer.sign_due() == 1
        issuer_id, serial = ingest.issuer_id("demo"), leaf.serial_number
        role, stranger = (f"{kind}_{uuid.uuid4().hex[:8]}" for kind in ("web", "other"))
        with psycopg.connect(url, autocommit=True) as admin:
            for name in (role, stranger):
                admin.execute(f"CREATE ROLE {name} LOGIN".encode())
                admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {name}".encode())
            admin.execute(
                f"GRANT EXECUTE ON FUNCTION certstatus_want_sha256(BIGINT, TEXT) TO {role}".encode()
            )
        with (
            psycopg.connect(make_conninfo(url, user=stranger), autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),  # no EXECUTE for PUBLIC
        ):
            conn.execute("SELECT certstatus_want_sha256(1, 'ab')")
        web_url = make_conninfo(url, user=role)
        web = PostgresStore(web_url, read_only=True, max_connections=1, name="web")
        try:
            now = int(time.time())
            assert web.want_sha256(issuer_id, serial, now)
            row = store.certificate(issuer_id, serial)
            assert row.priority is Priority.REFRESH and abs(row.due_at - now) <= 1
            # the server's clock decides the interval, not the time a web node gives
            assert not web.want_sha256(issuer_id, serial, now + ASK_INTERVAL + 1)
            with psycopg.connect(web_url, autocommit=True) as conn:
                for statement in (
                    "UPDATE certificates SET due_at = NULL",
                    "UPDATE certificates SET priority = 0",
                ):
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        conn.execute(statement.encode())
            assert store.certificate(issuer_id, serial).due_at == row.due_at
        finally:
            web.close()
        # a real web node under that role: it starts (nothing to write: the schema is current
        # and the issuer registered), answers, and its SHA-256 ask goes through the function
        web_config = deployment.dir / "web.toml"
        web_config.write_text(
            deployment.config_path.read_text().replace(
                f'database = "{url}"', f'database = "{url.replace("postgres@", role + "@", 1)}"'
            )
        )
        node = subprocess.Popen(
            [sys.executable, "-m", "certstatus.cli", "serve", "--config", str(web_config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_ready(deployment.url, node, timeout=60)
            path = deployment.write_leaf(leaf)
            answer = _openssl_ocsp(deployment.dir, path, deployment.url, "-sha1")
            assert "Response verify OK" in answer and ": good" in answer, answer
        finally:
            stop_process(node)
    finally:
        for opened in deployment.opened or []:
            opened.close()


def test_the_ask_function_holds_the_current_priority_and_interval() -> None:
    """The schema-13 function is frozen in its migration: a change of REFRESH or ASK_INTERVAL
    must come with a migration that replaces it (store/sha256requests.py)."""
    from certstatus.store.schema import POSTGRES_MIGRATIONS

    [function] = [sql for version, sql in POSTGRES_MIGRATIONS if version == 13]
    assert f"LEAST(priority, {int(Priority.REFRESH)})" in function
    assert f"sha256_wanted_at < clock.now - {ASK_INTERVAL}" in function
