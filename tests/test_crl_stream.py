"""The CRL gate's streaming comparison (F5, R16, R18) against the set-based gate it replaced,
which is kept here as the oracle: on random previous CRLs, new CRLs, builds, recorded
revocations and expiry dates, both reach the same decisions with the same messages. Also the
store's serial-ordered streams the builder and gate read, on both engines."""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from certstatus.crl.builder import CrlSigner
from certstatus.crl.gate import (
    GateInput,
    Rejection,
    check,
    iter_serials,
    missing_from,
    signature_valid,
)
from certstatus.demo.ca import DemoCA
from certstatus.keys.pem import key_from_private
from certstatus.status import RevokedEntry
from tests.conftest import fresh_now

NOW = int(time.time())
CUTOFF = NOW - 86400
PROPERTY = settings(max_examples=300, deadline=None, database=None)


_now_at_test_start = fresh_now(CUTOFF=lambda now: now - 86400)


@functools.cache
def ca() -> tuple[DemoCA, CrlSigner]:
    demo = DemoCA.create("stream gate CA")
    return demo, CrlSigner(demo.certificate, key_from_private(demo.key))


def crl(serials: Sequence[int], number: int) -> bytes:
    """A correctly signed CRL listing serials in the order given (repeats kept)."""
    entries = [RevokedEntry(s, NOW - 3600, 1) for s in serials]
    return ca()[1].sign(entries, number, NOW, NOW + 86400, None)


def set_gate(
    previous: Sequence[int] | None,
    listed: Sequence[int],
    built: set[int],
    recorded: set[int],
    not_after: dict[int, int],
) -> list[Rejection]:
    """The entry rules as they were before streaming (CrlService._carried and check): sets."""
    carried: set[int] = set()
    if previous is not None:
        prior = set(previous)
        absent = prior - built
        carried = (prior & built) | {s for s in absent if not_after.get(s, CUTOFF) >= CUTOFF}
    problems = []
    dropped = carried - set(listed)
    if dropped:
        problems.append(
            Rejection(
                "dropped",
                f"{len(dropped)} entries of the previous CRL are missing before R18 allows "
                f"it, e.g. serial {min(dropped):x}",
            )
        )
    missing = recorded - set(listed)
    if missing:
        problems.append(
            Rejection(
                "missing",
                f"{len(missing)} revocations recorded before the debounce window are "
                f"missing, e.g. serial {min(missing):x}",
            )
        )
    return problems


def stream_gate(
    previous: Sequence[int] | None,
    listed: Sequence[int],
    recorded: set[int],
    not_after: dict[int, int],
) -> list[Rejection]:
    """The same inputs through check(), as CrlService.build gives them."""

    def still_required(serials: Sequence[int]) -> list[int]:
        assert list(serials) == sorted(set(serials)), "dated in ascending order, once each"
        return [s for s in serials if not_after.get(s, CUTOFF) >= CUTOFF]

    gate = GateInput(
        ca()[0].certificate,
        None,
        1,
        None if previous is None else crl(previous, 1),
        iter(sorted(recorded)),  # the store's stream: ascending, each serial once
        still_required,
    )
    return check(crl(listed, 2), gate)


serial = st.integers(1, (1 << 159) - 1)  # R17/RFC 5280: positive, at most 20 octets


@st.composite
def histories(draw: st.DrawFn):
    """A previous CRL and a new one, over a small pool of serials so that they overlap.

    built: what the store returned for this build, all of whose certificates the store dates
    at or after the cutoff (the query's own condition); the new CRL is the build's serials,
    reordered, with some left out or added (a faulty signer)."""
    pool = draw(st.lists(serial, min_size=1, max_size=25, unique=True))
    member = st.sampled_from(pool)
    not_after = {
        s: draw(st.sampled_from([CUTOFF - 86400, CUTOFF - 1, CUTOFF, CUTOFF + 86400]))
        for s in draw(st.lists(member, unique=True))
    }
    built = {s for s in draw(st.lists(member, unique=True)) if not_after.get(s, 0) >= CUTOFF}
    honest = sorted(built)
    listed = draw(
        st.one_of(
            st.just(honest),
            st.permutations(honest),
            st.lists(member, max_size=30),
            st.builds(lambda h, n: h[n:], st.just(honest), st.integers(0, 3)),
        )
    )
    previous = draw(st.none() | st.lists(member, max_size=30) | st.just(honest))
    recorded = set(draw(st.lists(member, unique=True)))
    return previous, listed, built, recorded, not_after


@PROPERTY
@given(histories())
def test_streaming_gate_agrees_with_the_set_gate_f5_r18(history) -> None:
    previous, listed, built, recorded, not_after = history
    expected = set_gate(previous, listed, built, recorded, not_after)
    assert stream_gate(previous, listed, recorded, not_after) == expected


def test_the_oracle_and_the_gate_see_a_dropped_entry_r18() -> None:
    """One case spelled out, so the property cannot pass on two gates that accept anything."""
    previous, listed = [0x30, 0x10, 0x20], [0x10]
    not_after = {0x20: CUTOFF - 1, 0x30: CUTOFF}  # 0x20 expired before the cutoff: may go
    expected = [
        Rejection(
            "dropped",
            "1 entries of the previous CRL are missing before R18 allows it, e.g. serial 30",
        )
    ]
    assert set_gate(previous, listed, {0x10}, set(), not_after) == expected
    assert stream_gate(previous, listed, set(), not_after) == expected
    assert stream_gate(previous, listed, {0x10, 0x11}, not_after)[1].code == "missing"


@PROPERTY
@given(st.lists(serial), st.lists(serial))
def test_missing_from_is_an_ordered_set_difference(required, listed) -> None:
    assert list(missing_from(sorted(required), sorted(listed))) == sorted(
        set(required) - set(listed)
    )


def test_missing_from_refuses_unordered_input() -> None:
    """A merge walk over unordered serials would miss some without noticing."""
    with pytest.raises(ValueError, match="required"):
        list(missing_from([2, 1], [1, 2]))
    with pytest.raises(ValueError, match="CRL"):
        list(missing_from([1, 3], [2, 1, 3]))


def test_iter_serials_reads_the_listed_order() -> None:
    serials = [0xFF, 0x1, (1 << 159) - 1, 0x80, 0x1]
    assert list(iter_serials(crl(serials, 3))) == serials
    assert list(iter_serials(crl([], 3))) == []


@PROPERTY
@given(st.lists(serial, max_size=8), st.data())
def test_iter_serials_on_damaged_der_raises_only_valueerror(serials, data) -> None:
    """A damaged previous CRL (a stored row gone bad) fails the build with ValueError, never
    with an IndexError or a wrong list read past an entry's end."""
    good = bytearray(crl(serials, 4))
    at = data.draw(st.integers(0, 1 << 16)) % len(good)  # ECDSA signatures vary in length
    if data.draw(st.booleans()):
        good = good[:at]
    else:
        good[at] = data.draw(st.integers(0, 255))
    try:
        read = list(iter_serials(bytes(good)))
    except ValueError:
        return
    assert all(isinstance(s, int) for s in read)


def rsa_ca(name: str = "stream gate CA") -> tuple[x509.Certificate, CrlSigner]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate, CrlSigner(certificate, key_from_private(key))


def test_signature_over_the_raw_tbs_agrees_with_cryptography_f5() -> None:
    """The gate verifies over the TBS bytes in place (no re-encoded copy); on EC and RSA
    issuers, right and wrong keys and a changed byte, it agrees with is_signature_valid."""
    ec_ca, ec_signer = ca()
    ec_other = DemoCA.create("stream gate CA")
    rsa_cert, rsa_signer = rsa_ca()
    rsa_other, _ = rsa_ca()
    entries = [RevokedEntry(0x1818, NOW - 60, 1)]
    ec_crl = ec_signer.sign(entries, 5, NOW, NOW + 86400, None)
    rsa_crl = rsa_signer.sign(entries, 5, NOW, NOW + 86400, None)
    serial_at = ec_crl.index(bytes.fromhex("02021818"))
    tampered = ec_crl[:serial_at] + bytes.fromhex("02021819") + ec_crl[serial_at + 4 :]
    cases = [
        (ec_crl, ec_ca.certificate, True),
        (ec_crl, ec_other.certificate, False),
        (ec_crl, rsa_cert, False),
        (tampered, ec_ca.certificate, False),
        (rsa_crl, rsa_cert, True),
        (rsa_crl, rsa_other, False),
        (rsa_crl, ec_ca.certificate, False),
    ]
    for crl_der, issuer, valid in cases:
        parsed = x509.load_der_x509_crl(crl_der)
        assert signature_valid(parsed, crl_der, issuer) is valid
        assert parsed.is_signature_valid(issuer.public_key()) is valid


def test_stores_stream_revoked_serials_in_numeric_order(engine) -> None:
    """Serials are stored as hex text of varying length: the streams must be in numeric
    order (the gate's walk depends on it) and hold what the set-returning reads hold."""
    store = engine.store()
    ingest = engine.ingest(store)
    serials = [0x5, 0x1818, 0xF00, 0xA, 0x10000, 0xFFF, 0x2, 0x1000]
    leaves = [engine.ca.leaf(engine.leaf_key, s, engine.url) for s in serials]
    ingest.add_certificates([(leaf, "t") for leaf in leaves], NOW)
    for s in serials[1:]:
        ingest.revoke("demo", s, "keyCompromise", NOW)
    [issuer] = store.issuers()
    entries = list(store.revoked_entries_by_serial(issuer.id, 0, 0))
    assert [e.serial for e in entries] == sorted(serials[1:])
    assert sorted(entries, key=lambda e: e.serial) == sorted(
        store.revoked_entries(issuer.id, 0, 0), key=lambda e: e.serial
    )
    recorded = list(store.revoked_serials_recorded_before(issuer.id, 0, NOW + 10, 0))
    assert recorded == sorted(serials[1:])
    assert set(recorded) == store.revoked_recorded_before(issuer.id, 0, NOW + 10, 0)
    assert list(store.revoked_serials_recorded_before(issuer.id, 0, NOW - 10**6, 0)) == []
