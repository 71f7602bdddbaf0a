"""Expiry housekeeping (issue 15 item 7), on both engines.

Certificates past notAfter leave the freshness indexes at once (retired) and the database after
the retention, in bounded batches; never while their last response is still valid, never a
revocation the published CRL still lists or listed less than a CRL period ago (R18), and never
an audit row (R23). The signer signs at the real time (PostgreSQL refuses a skewed clock, F10);
housekeeping and the CRL builder are then run at later times through an injected clock.
"""

from __future__ import annotations

import time

import pytest
from cryptography import x509

from certstatus.housekeeping import Housekeeping
from certstatus.ocsp.certid import HashAlgorithm
from certstatus.store.base import CertificateRecord, SignedResponse
from certstatus.store.expiry import ExpiryBatch

DAY = 86400
KEY_COMPROMISE = 1


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Batches:
    """The store, with every housekeeping batch (one transaction each) noted as it returns."""

    def __init__(self, store) -> None:
        self.store = store
        self.retire: list[ExpiryBatch] = []
        self.prune: list[ExpiryBatch] = []

    def retire_expired(self, now: int, limit: int) -> ExpiryBatch:
        done = self.store.retire_expired(now, limit)
        self.retire.append(done)
        return done

    def prune_expired(self, *args: int | tuple) -> ExpiryBatch:
        done = self.store.prune_expired(*args)
        self.prune.append(done)
        return done


def listed(store, issuer_id: int) -> set[int]:
    crl = store.current_crl(issuer_id, 0)
    assert crl is not None
    return {entry.serial_number for entry in x509.load_der_x509_crl(crl.der)}


def test_housekeeping_retires_then_prunes_in_batches_keeping_what_rules_keep(engine) -> None:
    store = engine.store()
    t0 = int(time.time())
    issuer_id = engine.ingest(store).issuer_id("demo")
    short = [0x5000 + i for i in range(25)]  # expire a day from now
    long = [0x9000 + i for i in range(3)]  # 90 days
    records = [CertificateRecord(issuer_id, s, "cert", t0 + DAY) for s in short]
    records += [CertificateRecord(issuer_id, s, "cert", t0 + 90 * DAY) for s in long]
    store.add_certificates(records, t0)
    revoked = short[:2]
    for serial in revoked:
        store.revoke(issuer_id, serial, t0, KEY_COMPROMISE, False, t0)
    with engine.signer(store) as signer:
        signer.sign_due()
    next_update = store.response_info(issuer_id, short[0]).next_update
    assert t0 + 6 * DAY < next_update < t0 + 8 * DAY  # outlives notAfter (t0 + 1d)
    crl_clock = Clock(t0)
    crls = engine.crl_service(store, clock=crl_clock)
    crls.build_due()
    assert listed(store, issuer_id) == set(revoked)
    audit_before = store.audit_head()[0]
    assert audit_before >= len(records) + len(revoked)

    clock = Clock(t0 + DAY + 1)
    batches = Batches(store)
    keeper = Housekeeping(batches, retention=2 * DAY, crl_period=DAY, batch=4, clock=clock)

    # expired, within retention: retired in bounded batches (25 rows: 7 transactions of <= 4),
    # nothing pruned, and every expired serial still answered
    done = keeper.step()
    assert (done.retired, done.pruned) == (25, 0)
    assert done.retire_batches == len(batches.retire) == 7
    assert all(b.scanned <= 4 for b in batches.retire)
    for serial in short:
        assert store.response(issuer_id, serial, HashAlgorithm.SHA1) is not None

    # past the retention, but the last responses are still valid: nothing goes
    clock.now = t0 + 3 * DAY + 10
    assert keeper.step().pruned == 0
    assert store.certificate(issuer_id, short[-1]) is not None

    # the responses have expired: the 23 unrevoked short ones go, in batches of at most 4; the
    # revoked ones stay, since the published CRL still lists them (R18); audit rows all stay
    clock.now = next_update + 10
    batches.prune.clear()
    done = keeper.step()
    assert done.pruned == 23
    assert done.prune_batches == len(batches.prune) >= 7
    assert all(b.scanned <= 4 and b.changed <= 4 for b in batches.prune)
    for serial in short[2:]:
        assert store.certificate(issuer_id, serial) is None
        assert store.response(issuer_id, serial, HashAlgorithm.SHA1) is None
    for serial in revoked + long:
        assert store.certificate(issuer_id, serial) is not None
    assert listed(store, issuer_id) == set(revoked)
    assert store.audit_head()[0] == audit_before
    assert store.audit_for(issuer_id, short[5])  # the pruned certificate's history remains

    # a CRL built now drops them (one period past notAfter, R18), but it is new: a cache may
    # still hold the previous one, which lists them; they stay a period more
    crl_clock.now = clock.now
    assert [r.published for r in crls.build_due(force=True)] == [True]
    assert listed(store, issuer_id) == set()
    clock.now += 60
    assert keeper.step().pruned == 0
    for serial in revoked:
        assert store.certificate(issuer_id, serial) is not None

    clock.now += DAY
    assert keeper.step().pruned == 2
    for serial in revoked:
        assert store.certificate(issuer_id, serial) is None
    for serial in long:  # unexpired: untouched, still answered
        assert store.response(issuer_id, serial, HashAlgorithm.SHA1) is not None
    assert store.audit_head()[0] == audit_before


def test_a_revoked_certificate_stays_while_the_crl_lists_it(engine) -> None:
    """R18 from the other side: a CRL builder that stopped (its last CRL still lists the
    entry) holds the row back however long ago the certificate expired."""
    store = engine.store()
    t0 = int(time.time())
    issuer_id = engine.ingest(store).issuer_id("demo")
    store.add_certificates([CertificateRecord(issuer_id, 0x7001, "cert", t0 + DAY)], t0)
    store.revoke(issuer_id, 0x7001, t0, KEY_COMPROMISE, False, t0)
    with engine.signer(store) as signer:
        signer.sign_due()
    engine.crl_service(store, clock=Clock(t0)).build_due()
    keeper = Housekeeping(store, retention=2 * DAY, crl_period=DAY, clock=Clock(t0 + 60 * DAY))
    done = keeper.step()
    assert (done.retired, done.pruned) == (1, 0)
    assert store.certificate(issuer_id, 0x7001) is not None
    assert listed(store, issuer_id) == {0x7001}


def test_a_row_locked_by_a_revocation_is_passed_over_not_waited_for(engine) -> None:
    """PostgreSQL: housekeeping never waits on a row another transaction holds (a revocation
    in flight), so it cannot deadlock with one; the row goes on the next pass."""
    if engine.engine != "postgres":
        pytest.skip("row locks are PostgreSQL's; SQLite's writers take turns")
    import psycopg

    store = engine.store()
    t0 = int(time.time())
    issuer_id = engine.ingest(store).issuer_id("demo")
    serials = [0x7100, 0x7101, 0x7102]
    store.add_certificates([CertificateRecord(issuer_id, s, "cert", t0) for s in serials], t0)
    keeper = Housekeeping(store, retention=DAY, crl_period=DAY, clock=Clock(t0 + 3 * DAY))
    with psycopg.connect(engine.config.database) as holder:
        holder.execute(
            "SELECT 1 FROM certificates WHERE issuer_id = %s AND serial = %s FOR UPDATE",
            (issuer_id, "7101"),
        )
        started = time.monotonic()
        assert keeper.step().pruned == 2
        assert time.monotonic() - started < 4  # under the store's 5 s statement timeout
        assert store.certificate(issuer_id, 0x7101) is not None
        holder.rollback()
    assert keeper.step().pruned == 1
    assert store.certificate(issuer_id, 0x7101) is None


def test_freshness_counts_unexpired_certificates_only_retired_or_not(engine) -> None:
    """F4's metrics keep their meaning under v9: an expired certificate's response is left out
    whether housekeeping has retired it yet or not (the query checks notAfter as before)."""
    store = engine.store()
    now = int(time.time())
    issuer_id = engine.ingest(store).issuer_id("demo")
    live, expired, other = 0x7201, 0x7202, 0x7203
    store.add_certificates(
        [
            CertificateRecord(issuer_id, live, "cert", now + 90 * DAY),
            CertificateRecord(issuer_id, expired, "cert", now - 10),
            CertificateRecord(issuer_id, other, "cert", now + 90 * DAY),
        ],
        now,
    )
    der = b"\x30\x00"
    store.store_signed(
        [  # the expired one's response is both the oldest and the soonest to lapse
            SignedResponse(issuer_id, live, 1, der, der, now - 100, now + 1000, now + 500, b""),
            SignedResponse(issuer_id, expired, 1, der, der, now - 5000, now + 50, now + 20, b""),
            SignedResponse(issuer_id, other, 1, der, der, now - 50, now + 2000, now + 900, b""),
        ],
        now,
    )
    before = store.freshness(now)
    assert (before.oldest_this_update, before.soonest_next_update) == (now - 100, now + 1000)
    assert store.retire_expired(now, 100).changed == 1
    after = store.freshness(now)
    assert (after.oldest_this_update, after.soonest_next_update) == (now - 100, now + 1000)
    # an hour on, the live ones are still counted, the expired one still not
    later = store.freshness(now + 3600)
    assert (later.oldest_this_update, later.soonest_next_update) == (now - 100, now + 1000)
