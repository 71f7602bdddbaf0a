"""Bulk ingest (issue 15): a large batch is checked across processes and written set-wise, and
must end exactly as recording one certificate at a time would (R5/F2: re-adding is harmless, a
final certificate upgrades its precertificate; R23: one audit entry per change, chained). On
SQLite and PostgreSQL (the engine fixture)."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from certstatus.demo.ca import DemoCA
from certstatus.ingest import check
from certstatus.ingest.api import IngestError, read_certificate_file
from certstatus.store import audit as audit_chain
from certstatus.store.base import AuditContext, CertificateRecord
from tests.conftest import fresh_now

NOW = int(time.time())


_now_at_test_start = fresh_now()


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process pool from 4 certificates on, 2 per task: a small batch spans several tasks."""
    monkeypatch.setattr(check, "POOL_THRESHOLD", 4)
    monkeypatch.setattr(check, "CHUNK", 2)


def test_pool_checks_like_this_process(deployment, small_chunks) -> None:
    leaves = [deployment.leaf(precertificate=n == 3) for n in range(7)]
    pairs = [(leaf, f"leaf {n}") for n, leaf in enumerate(leaves)]
    ingest = deployment.ingest()
    with check.Checker(ingest._issuers, processes=2) as pooled:
        records = pooled.check(pairs)
        assert pooled._pool is not None  # the pool really checked them
    alone = check.Checker(ingest._issuers, processes=1).check(pairs)
    assert records == alone
    assert [r.serial for r in records] == [leaf.serial_number for leaf in leaves]
    assert [r.kind for r in records].count("precert") == 1


def test_pool_refuses_the_first_bad_certificate_and_writes_nothing(deployment, small_chunks):
    store = deployment.store()
    ingest = deployment.ingest(store)
    impostor = DemoCA.create()  # the issuer's name, another key
    stranger = DemoCA.create("stranger CA")
    pairs = [(deployment.leaf(), f"good {n}") for n in range(5)]
    pairs.insert(3, (impostor.leaf(deployment.leaf_key, 0x51, deployment.url), "forged"))
    pairs.append((stranger.leaf(deployment.leaf_key, 0x52, deployment.url), "stranger"))
    with ingest, pytest.raises(IngestError, match=r"^forged: signature does not verify"):
        ingest.add_certificates(pairs, NOW)
    assert store.counts()["certificates"] == 0
    assert store.audit_head()[0] == 0


def test_batch_with_repeats_ends_as_one_at_a_time(engine) -> None:
    """A precertificate and its final certificate in one batch: added then upgraded; a serial
    twice: known the second time; a stored precertificate upgraded by the batch."""
    store = engine.store()
    ingest = engine.ingest(store)
    stored_pre = engine.leaf(precertificate=True, serial=0x1001)
    ingest.add_certificates([(stored_pre, "earlier")], NOW)
    pre, final = engine.leaf(precertificate=True, serial=0x2002), engine.leaf(serial=0x2002)
    twice = engine.leaf(serial=0x3003)
    batch = [
        (pre, "pre"),
        (twice, "twice"),
        (final, "final"),
        (engine.leaf(serial=0x1001), "upgrade"),
        (twice, "again"),
        (final, "final again"),
    ]
    result = ingest.add_certificates(batch, NOW, AuditContext("api:bulk", "req-1"))
    assert [o for *_, o in result.outcomes] == [
        "added",
        "added",
        "upgraded",
        "upgraded",
        "known",
        "known",
    ]
    assert (result.added, result.existing) == (2, 4)
    issuer_id = ingest.issuer_id("demo")
    for serial in (0x1001, 0x2002, 0x3003):
        assert store.certificate(issuer_id, serial).kind == "cert"
    assert store.certificate(issuer_id, 0x2002).not_before == int(
        pre.not_valid_before_utc.timestamp()
    )
    entries = store.audit_entries(0, 0, 100)
    assert [(e.action, e.serial) for e in entries] == [
        ("record", "1001"),
        ("record", "2002"),
        ("record", "3003"),
        ("upgrade", "2002"),
        ("upgrade", "1001"),
    ]
    assert audit_chain.verify(entries, store.audit_head())[1] is None
    again = ingest.add_certificates(batch, NOW + 5)
    assert again.added == 0 and store.audit_head()[0] == 5  # no change, no entry


def test_large_batch_is_recorded_with_a_chained_entry_each(engine) -> None:
    """Above the size where PostgreSQL copies the entries: every row, every entry, one chain."""
    store = engine.store()
    issuer_id = engine.ingest(store).issuer_id("demo")
    records = [CertificateRecord(issuer_id, 0x10000 + n, "cert", NOW + 86400) for n in range(300)]
    result = store.add_certificates(records, NOW, AuditContext("cli:bulk"))
    assert (result.added, result.existing) == (300, 0)
    assert store.counts()["certificates"] == 300
    entries = store.audit_entries(0, 0, 1000)
    assert [e.serial for e in entries] == [format(r.serial, "x") for r in records]
    assert audit_chain.verify(entries, store.audit_head()) == (300, None)


@pytest.mark.parametrize(
    "context",
    [AuditContext("cli:r\u00f6ot"), AuditContext('api:"quoted"\\', "req-\u2603")],
)
def test_chain_spelling_matches_entry_hash_r23(context: AuditContext) -> None:
    """chain() spells each payload from pieces encoded once; entry_hash (json.dumps of the
    whole entry) is its oracle, for any text an actor, request id or detail may hold."""
    changes = [
        audit_chain.recorded(CertificateRecord(2, 0xABC, "precert", 5)),
        audit_chain.upgraded_change(CertificateRecord(2, 0xABC, "cert", 5)),
        audit_chain.Change("refused", detail='bad "body"\n\u00e9'),
        audit_chain.Change("revoke", 2, "abc", {"status": "good"}, {"status": "revoked"}),
    ]
    rows = audit_chain.chain((41, "f" * 64), changes, context, NOW)
    prev = "f" * 64
    for row in rows:
        assert row[10] == prev
        assert row[11] == audit_chain.entry_hash(row[:10], prev)
        prev = row[11]
    assert [row[0] for row in rows] == [42, 43, 44, 45]


def test_pem_split_agrees_with_cryptography(deployment) -> None:
    """add splits PEM itself (the checking processes parse): the same certificates as
    cryptography's own PEM loader, other blocks ignored, a broken block refused."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    leaves = [deployment.leaf(), deployment.leaf(precertificate=True)]
    pem = b"".join(leaf.public_bytes(Encoding.PEM) for leaf in leaves)
    bundle = deployment.dir / "bundle.pem"
    bundle.write_bytes(
        b"junk before\n" + pem + b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    expected = [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(pem)]
    assert check.certificate_ders(bundle) == expected
    broken = deployment.dir / "broken.pem"
    broken.write_bytes(pem.replace(b"M", b"*", 1))
    with pytest.raises(IngestError, match=r"broken\.pem: not a PEM or DER certificate"):
        check.certificate_ders(broken)


@contextmanager
def checker_with_its_pool_killed(deployment) -> Iterator[tuple[Any, list, list, Any]]:
    """A checker that has checked a batch once, its pool's processes then SIGKILLed, as the
    OOM killer or an operator would: (checker, the batch, its expected result, the pool)."""
    pairs = [(deployment.leaf(), f"leaf {n}") for n in range(6)]
    ingest = deployment.ingest()
    with check.Checker(ingest._issuers, processes=2) as checker:
        expected = checker.check(pairs)
        pool = checker._pool
        assert pool is not None
        for pid in list(pool._processes):
            os.kill(pid, signal.SIGKILL)
        yield checker, pairs, expected, pool


def test_a_dead_checking_process_costs_speed_not_the_answer(deployment, small_chunks) -> None:
    """A checking process killed (OOM killer, an operator) breaks the pool: the batch is
    checked in this process instead, and the next batch starts a new pool."""
    with checker_with_its_pool_killed(deployment) as (checker, pairs, expected, pool):
        assert checker.check(pairs) == expected
        assert checker.check(pairs) == expected
        assert checker._pool is not None and checker._pool is not pool


def test_a_pool_already_broken_before_the_batch_is_replaced(deployment, small_chunks) -> None:
    """A checking process killed between batches, the pool already known broken when the next
    batch (or start()) submits to it: the submit itself raises BrokenProcessPool. The batch
    is checked in this process, start() says nothing, and the next batch gets a new pool
    (a long-lived API process must not keep failing on a dead pool)."""
    with checker_with_its_pool_killed(deployment) as (checker, pairs, expected, pool):
        deadline = time.monotonic() + 20
        while not pool._broken:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the pool never noticed its dead processes"
            time.sleep(0.05)
        checker.start()  # on the broken pool: dropped, not raised
        assert checker._pool is None
        checker._pool = pool  # the broken pool again, for the batch itself
        assert checker.check(pairs) == expected
        assert checker.check(pairs) == expected
        assert checker._pool is not None and checker._pool is not pool


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n",
        b"x-----BEGIN X509 CERTIFICATE-----QUJD-----END CERTIFICATE----------BEGIN CERTIFICATE-----"
        b"\r\nREVG\r\n-----END X509 CERTIFICATE-----y",
        b"-----BEGIN CERTIFICATE-----a-----BEGIN CERTIFICATE-----b-----END CERTIFICATE-----",
        b"-----BEGIN CERTIFICATE-----a-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----b",
        b"-----END CERTIFICATE----------BEGIN CERTIFICATE----------END CERTIFICATE-----",
        b"-----BEGIN CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\n-----END CERTIFICATE-----",
    ],
)
def test_pem_blocks_as_the_lazy_regex_finds_them(text: bytes) -> None:
    """pem_blocks searches for the markers; a lazy BEGIN(.*?)END match is its oracle: nested
    BEGIN lines, a block without its END, both marker spellings, anything around them."""
    import re

    oracle = re.compile(
        rb"-----BEGIN (?:X509 )?CERTIFICATE-----(.*?)-----END (?:X509 )?CERTIFICATE-----",
        re.DOTALL,
    )
    assert list(check.pem_blocks(text)) == oracle.findall(text)


def test_an_unknown_certificate_version_is_refused_in_one_line(deployment) -> None:
    """cryptography raises InvalidVersion, not a ValueError, for a version it does not know."""
    from cryptography.hazmat.primitives.serialization import Encoding

    data = bytearray(deployment.leaf().public_bytes(Encoding.DER))
    at = bytes(data).index(b"\xa0\x03\x02\x01\x02")  # [0] { INTEGER 2 }: v3
    data[at + 4] = 7
    with pytest.raises(IngestError, match=r"^odd: not a PEM or DER certificate; nothing recorded"):
        check.parse_and_check([(bytes(data), "odd")], deployment.ingest()._issuers)
    odd = deployment.dir / "odd.der"
    odd.write_bytes(bytes(data))
    with pytest.raises(IngestError, match=r"odd\.der: not a PEM or DER certificate"):
        read_certificate_file(odd)  # `add --api` reads files this way
    from certstatus.api.bodies import BadRequest, certificates

    with pytest.raises(BadRequest) as refused:
        certificates(bytes(data), "application/pkix-cert")
    assert (refused.value.status, refused.value.code) == (400, "not_a_certificate")
    from certstatus.keys.certificates import CertificateError, load_certificate

    with pytest.raises(CertificateError, match=r"odd\.der: not a PEM or DER certificate"):
        load_certificate(odd)  # an issuer or responder certificate named in the config


def test_started_pool_checks_the_next_batch_and_one_process_starts_none(
    deployment, small_chunks
) -> None:
    """add_files starts the checking processes before it reads a large file; a started pool
    answers as this process does, and a checker of one process never starts one."""
    pairs = [(deployment.leaf(), f"leaf {n}") for n in range(5)]
    ingest = deployment.ingest()
    alone = check.Checker(ingest._issuers, processes=1)
    alone.start()
    assert alone._pool is None
    with check.Checker(ingest._issuers, processes=2) as pooled:
        pooled.start()
        assert pooled._pool is not None
        assert pooled.check(pairs) == alone.check(pairs)


def test_rows_go_in_key_order_and_a_large_batch_gives_its_page_cache_back(deployment) -> None:
    """New rows are inserted in the table's key order (issuer, serial text: "ff" after "100"),
    every one of them; SQLite's larger page cache for a large batch ends with the batch."""
    from certstatus.store import additions

    records = [CertificateRecord(i, s, "cert", NOW) for i, s in [(2, 0xFF), (1, 0x100), (1, 0xFF)]]
    ordered = additions.in_key_order(additions.first_records(records))
    assert [key for key, _ in ordered] == [(1, "100"), (1, "ff"), (2, "ff")]
    store = deployment.store()
    issuer_id = deployment.ingest(store).issuer_id("demo")
    db = store._connect()
    (before,) = db.execute("PRAGMA cache_size").fetchone()
    batch = [CertificateRecord(issuer_id, 0x10000 + n * 7919, "cert", NOW) for n in range(6000)]
    assert store.add_certificates(batch, NOW).added == 6000
    assert db.execute("PRAGMA cache_size").fetchone() == (before,)
    assert store.counts()["certificates"] == 6000


def _repeats(engine) -> list:
    pre, final = engine.leaf(precertificate=True, serial=0x2002), engine.leaf(serial=0x2002)
    twice = engine.leaf(serial=0x3003)
    return [
        (pre, "pre"),
        (twice, "twice"),
        (engine.leaf(serial=0x1001), "upgrade"),
        (final, "final"),
        (twice, "again"),
        (engine.leaf(precertificate=True, serial=0x4004), "late pre"),
        (final, "final again"),
    ]


@pytest.fixture
def write_every_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL writes each chunk as it comes (it gathers 10 000 records otherwise)."""
    from certstatus.store import postgres

    monkeypatch.setattr(postgres, "_CHUNK", 1)


@pytest.mark.parametrize("cuts", [(), (1,), (3, 4), (1, 2, 3, 4, 5, 6)])
def test_chunks_written_as_they_come_end_as_one_batch(engine, cuts, write_every_chunk) -> None:
    """add_certificate_chunks (PostgreSQL writes each chunk as it is checked) ends exactly as
    add_certificates of the whole batch, wherever the chunks are cut: a precertificate and
    its final certificate in different chunks, a serial twice, a stored precertificate."""
    store = engine.store()
    ingest = engine.ingest(store)
    ingest.add_certificates([(engine.leaf(precertificate=True, serial=0x1001), "earlier")], NOW)
    records = ingest.checker.check(_repeats(engine))
    bounds = [0, *cuts, len(records)]
    chunks = [records[a:b] for a, b in itertools.pairwise(bounds)]
    result = store.add_certificate_chunks(iter(chunks), NOW, AuditContext("cli:chunks"))
    assert [o for *_, o in result.outcomes] == [
        "added",
        "added",
        "upgraded",
        "upgraded",
        "known",
        "added",
        "known",
    ]
    assert (result.added, result.existing) == (3, 4)
    entries = store.audit_entries(0, 0, 100)
    assert [(e.action, e.serial) for e in entries][1:] == [
        ("record", "2002"),
        ("record", "3003"),
        ("upgrade", "1001"),
        ("upgrade", "2002"),
        ("record", "4004"),
    ]
    assert audit_chain.verify(entries, store.audit_head())[1] is None


def test_a_refusal_after_written_chunks_leaves_nothing(
    engine, small_chunks, write_every_chunk
) -> None:
    """add_files writes checked chunks while later ones are checked (on PostgreSQL): a forged
    certificate in a later chunk rolls back every earlier chunk's rows and entries."""
    from cryptography.hazmat.primitives.serialization import Encoding

    store = engine.store()
    impostor = DemoCA.create()  # the issuer's name, another key
    leaves = [engine.leaf() for _ in range(6)]
    leaves.insert(5, impostor.leaf(engine.leaf_key, 0x51, engine.url))
    bundle = engine.dir / "bundle.pem"
    bundle.write_bytes(b"".join(leaf.public_bytes(Encoding.PEM) for leaf in leaves))
    with engine.ingest(store) as ingest:
        ingest.checker.processes = 2
        with pytest.raises(IngestError, match=r"bundle\.pem#6: signature does not verify"):
            ingest.add_files([bundle], NOW)
        assert ingest.checker._pool is not None  # the pool checked it, chunk by chunk
    assert store.counts()["certificates"] == 0
    assert store.audit_head()[0] == 0
