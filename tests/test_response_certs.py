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
from certstatus.store.base import SignedResponse, StoreError, serial_key


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
