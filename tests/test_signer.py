"""The signer: priority order, the status-version guard (a "good" never overwrites a revocation,
even racing), leases that return a dead worker's rows, and R3/R4 times on what it stores.
Tests taking `engine` run on SQLite and on PostgreSQL (tests/conftest.py)."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import threading
import time
from pathlib import Path

import pytest
from cryptography.x509 import ocsp

from certstatus.ocsp.certid import HashAlgorithm
from certstatus.store.base import Priority, SignedResponse, serial_key
from certstatus.store.sqlite import SqliteStore
from tests.conftest import fresh_now

NOW = int(time.time())


_now_at_test_start = fresh_now()


@pytest.fixture(autouse=True)
def _now() -> None:
    """NOW as each test starts: a leaf is minted with notBefore five minutes back, and a
    revocation before notBefore is refused, so a NOW taken at import goes stale in a long run."""
    global NOW  # noqa: PLW0603
    NOW = int(time.time())


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ingest_leaves(deployment, store, count: int) -> list[int]:
    ingest = deployment.ingest(store)
    leaves = [deployment.leaf() for _ in range(count)]
    ingest.add_certificates([(leaf, "t") for leaf in leaves], NOW)
    return [leaf.serial_number for leaf in leaves]


def status_of(store, issuer_id: int, serial: int) -> ocsp.OCSPCertStatus:
    statuses = set()
    for algorithm in HashAlgorithm:
        stored = store.response(issuer_id, serial, algorithm)
        assert stored is not None
        parsed = ocsp.load_der_ocsp_response(stored.der)
        assert parsed.serial_number == serial
        assert type(parsed.hash_algorithm).__name__.lower() == algorithm.value
        statuses.add(parsed.certificate_status)
    assert len(statuses) == 1  # both CertID variants say the same thing
    return statuses.pop()


def test_claims_new_then_revoked_then_refresh(engine) -> None:
    store = engine.store()
    clock = Clock(time.time())  # the real time: PostgreSQL's signer checks it (F10)
    old = ingest_leaves(engine, store, 3)
    with engine.signer(store, clock=clock) as signer:
        assert signer.sign_due() == 3
    clock.now = NOW + 5 * 86400  # everything due for refresh
    ingest = engine.ingest(store)
    ingest.revoke("demo", old[0], "superseded", NOW + 1)
    new = ingest_leaves(engine, store, 2)
    claimed = store.claim_due(int(clock.now), 10, 60)
    assert [c.priority for c in claimed] == [Priority.NEW] * 2 + [Priority.REVOKED] + [
        Priority.REFRESH
    ] * 2
    assert {c.serial for c in claimed[:2]} == set(new)
    assert claimed[2].serial == old[0] and claimed[2].revoked


def test_signed_times_follow_policy_r3_r4_f10(deployment) -> None:
    store = deployment.store()
    [serial] = ingest_leaves(deployment, store, 1)
    clock = Clock(NOW)
    with deployment.signer(store, clock=clock) as signer:
        signer.sign_due()
    issuer_id = deployment.ingest(store).issuer_id("demo")
    stored = store.response(issuer_id, serial)
    policy = deployment.config.signing.policy
    assert stored.this_update == NOW - policy.backdate
    assert stored.next_update == stored.this_update + policy.validity
    assert stored.this_update < stored.refresh_at <= stored.this_update + policy.refresh_after
    row = store.certificate(issuer_id, serial)
    assert row.priority is Priority.REFRESH and row.due_at == stored.refresh_at


def test_stale_good_is_not_stored_over_a_revocation(engine) -> None:
    store = engine.store()
    [serial] = ingest_leaves(engine, store, 1)
    ingest = engine.ingest(store)
    issuer_id = ingest.issuer_id("demo")
    [claim] = store.claim_due(NOW, 10, 60)
    ingest.revoke("demo", serial, "keyCompromise", NOW)  # lands while the good is being signed
    stale = SignedResponse(
        issuer_id, serial, claim.version, b"good1", b"good256", NOW, NOW + 1, NOW + 1, b""
    )
    assert store.store_signed([stale], NOW) == 0
    assert store.response(issuer_id, serial) is None
    with engine.signer(store, clock=Clock(time.time())) as signer:
        signer.sign_due()
    assert status_of(store, issuer_id, serial) is ocsp.OCSPCertStatus.REVOKED


def test_rows_are_not_signed_when_the_responder_expires_too_soon_r3_r21(deployment, caplog) -> None:
    """The validity window is computed once per issuer and batch: when the responder
    certificate leaves less than R3's 8 hours, every row of the batch is skipped and logged,
    and nothing is stored."""
    store = deployment.store()
    serials = ingest_leaves(deployment, store, 3)
    [material] = deployment.materials()
    not_after = int(material.responder_certificate.not_valid_after_utc.timestamp())
    clock = Clock(not_after - 4 * 3600)  # thisUpdate an hour back: 5 hours left at most
    with (
        caplog.at_level(logging.ERROR, "certstatus.signer"),
        deployment.signer(store, clock=clock) as signer,
    ):
        assert signer.sign_due() == 0
    issuer_id = deployment.ingest(store).issuer_id("demo")
    assert all(store.response(issuer_id, serial) is None for serial in serials)
    skipped = [r.getMessage() for r in caplog.records if "expires too soon" in r.getMessage()]
    assert sorted(skipped) == sorted(
        f"not signing issuer {issuer_id} serial {serial:x}: the responder certificate expires "
        "too soon to sign a response valid for 8 hours (R3, R4)"
        for serial in serials
    )


def test_crashed_claims_return_after_the_lease(engine) -> None:
    store = engine.store()
    serials = ingest_leaves(engine, store, 4)
    lost = store.claim_due(NOW, 10, lease=60)  # a worker that claimed and died
    assert {c.serial for c in lost} == set(serials)
    assert store.claim_due(NOW + 30, 10, lease=60) == []
    again = store.claim_due(NOW + 61, 10, lease=60)
    assert {c.serial for c in again} == set(serials)
    assert all(c.priority is Priority.NEW for c in again)


def test_refresh_stops_after_the_certificate_expires(engine) -> None:
    store = engine.store()
    ingest = engine.ingest(store)
    leaf = engine.ca.leaf(engine.leaf_key, 0xE0, engine.url, days=1)
    ingest.add_certificates([(leaf, "short")], NOW)
    with engine.signer(store, clock=Clock(time.time())) as signer:
        signer.sign_due()
    row = store.certificate(ingest.issuer_id("demo"), 0xE0)
    assert row.due_at is None  # refresh would fall after notAfter: nothing more to sign


@pytest.mark.parametrize("processes", [1, 2])
def test_revocations_racing_the_signer_never_leave_good(deployment, processes: int) -> None:
    """Concurrency: revocations from another thread (own connection) land while the signer signs
    new and refresh rows in small batches; afterwards every revoked serial is served revoked."""
    store = deployment.store()
    serials = ingest_leaves(deployment, store, 600)
    config = deployment.config
    clock = Clock(NOW)
    issuer_id = deployment.ingest(store).issuer_id("demo")
    chosen = random.Random(7).sample(serials, 150)

    def revoker() -> None:
        ingest = deployment.ingest(deployment.store())  # its own SQLite connection
        for serial in chosen:
            ingest.revoke("demo", serial, "keyCompromise", NOW)
            time.sleep(0.0005)

    for phase in ("new", "refresh"):
        if phase == "refresh":
            clock.now = NOW + 5 * 86400
            chosen = [s for s in serials if s not in set(chosen)][:150]
        thread = threading.Thread(target=revoker)
        with deployment.signer(store, processes=processes, clock=clock) as signer:
            signer.config = type(config.signing)(
                config.signing.policy, processes, 16, config.signing.lease, 0
            )
            thread.start()
            while thread.is_alive():
                signer.sign_due()
            thread.join()
            signer.sign_due()
        due = store.due_count(int(clock.now))
        assert due[Priority.NEW] == due[Priority.REVOKED] == 0
    revoked = {s for s in serials if store.certificate(issuer_id, s).revoked}
    assert len(revoked) == 300
    for serial in serials:
        expected = ocsp.OCSPCertStatus.REVOKED if serial in revoked else ocsp.OCSPCertStatus.GOOD
        assert status_of(store, issuer_id, serial) is expected, hex(serial)


def test_released_claims_are_due_again_at_once_and_keep_the_version_guard(engine) -> None:
    """A batch the key could not sign (token gone) is released: due now, not after the lease;
    a row revoked meanwhile keeps its own (newer) due state."""
    store = engine.store()
    ingest = engine.ingest(store)
    a, b = engine.leaf(), engine.leaf()
    now = int(time.time())
    ingest.add_certificates([(a, "a"), (b, "b")], now)
    claimed = store.claim_due(now, 10, 300)
    assert {c.serial for c in claimed} == {a.serial_number, b.serial_number}
    assert store.claim_due(now, 10, 300) == []  # leased
    ingest.revoke("demo", b.serial_number, "keyCompromise", now)  # b's version moves on
    store.release_claims(claimed, now)
    again = {c.serial: c for c in store.claim_due(now, 10, 300)}
    assert set(again) == {a.serial_number, b.serial_number}
    assert again[b.serial_number].revoked  # b comes back as its revocation, not the old claim


def test_sqlite_commits_leave_the_wal_to_grow_to_its_checkpoint_size_and_no_further(
    tmp_path: Path,
) -> None:
    """A commit copies the WAL into the database only past 16 384 pages, not SQLite's 1 000:
    the signer's commits waited on those checkpoints' fsyncs every few batches (issue 15,
    item 4). The WAL is still restarted after each checkpoint, so it stays bounded."""
    store = SqliteStore(tmp_path / "wal.db")
    wal = tmp_path / "wal.db-wal"
    with store._writing() as db:
        db.execute("CREATE TABLE filler (page BLOB)")

    def commit(pages: int) -> None:
        with store._writing(durable=False) as db:
            db.executemany("INSERT INTO filler VALUES (?)", [(os.urandom(4000),)] * pages)

    for _ in range(30):  # 3 000 pages: SQLite's default would have checkpointed thrice
        commit(100)
    assert wal.stat().st_size > 8 * 2**20
    high = 0
    for _ in range(50):  # 25 000 pages more: past the checkpoint, the WAL starts over
        commit(500)
        high = max(high, wal.stat().st_size)
    assert 64 * 2**20 < high < 80 * 2**20
    store.close()


def test_new_certificates_are_due_from_their_minute_and_claimed_in_key_order(engine) -> None:
    """Recorded within one minute, in two batches: all due from the minute's start, so a
    bulk import's claims come in key order and share their pages (issue 15 item 4; on
    whole seconds one batch of claims was spread over the whole key range)."""
    store = engine.store()
    ingest = engine.ingest(store)
    minute = NOW - NOW % 60
    first = [engine.leaf() for _ in range(20)]
    second = [engine.leaf() for _ in range(20)]
    ingest.add_certificates([(leaf, "t") for leaf in first], minute + 5)
    ingest.add_certificates([(leaf, "t") for leaf in second], minute + 50)
    issuer_id = ingest.issuer_id("demo")
    for leaf in first + second:
        row = store.certificate(issuer_id, leaf.serial_number)
        assert row is not None and row.due_at == minute
    claimed = [c.serial for c in store.claim_due(minute + 55, 40, 60)]
    assert sorted(claimed) == sorted(leaf.serial_number for leaf in first + second)
    if isinstance(store, SqliteStore):  # PostgreSQL breaks ties in its own order
        assert claimed == sorted(claimed, key=serial_key)  # the order they are stored in


def test_rows_signed_together_are_due_again_together_and_batches_spread(engine) -> None:
    """One jitter per batch (issue 15 item 4): the rows a batch signs share their next due
    time, so their due-index entries sit side by side and the refresh claims them together;
    the batches' jitters still differ, each within [refresh_after - jitter, refresh_after]."""
    store = engine.store()
    serials = ingest_leaves(engine, store, 12)
    clock = Clock(time.time())  # the real time: PostgreSQL's signer checks it (F10)
    with engine.signer(store, clock=clock) as signer:
        signer.config = dataclasses.replace(signer.config, batch_size=4)
        signer._random = random.Random(7)  # three distinct draws, whatever the run
        assert signer.sign_due() == 12
    issuer_id = engine.ingest(store).issuer_id("demo")
    policy = engine.config.signing.policy
    due = {s: store.certificate(issuer_id, s).due_at for s in serials}
    by_time: dict[int, set[int]] = {}
    for serial, at in due.items():
        by_time.setdefault(at, set()).add(serial)
    assert sorted(len(batch) for batch in by_time.values()) == [4, 4, 4]
    this_update = store.response(issuer_id, serials[0]).this_update
    for at in by_time:
        assert this_update + policy.refresh_after - policy.jitter <= at
        assert at <= this_update + policy.refresh_after
    first = min(by_time)
    claimed = store.claim_due(max(due.values()) + 1, 4, 60)
    assert {c.serial for c in claimed} == by_time[first]  # the batch due first, whole
