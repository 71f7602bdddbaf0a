"""Hand-built DER responses, checked against `cryptography`'s parser and signature verification
(the oracle), for every status and reason (R7, R8)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from hypothesis import given, settings
from hypothesis import strategies as st

from certstatus import der
from certstatus.demo.ca import DemoCA
from certstatus.keys.pem import EcdsaKey, key_from_private
from certstatus.ocsp import response as r
from certstatus.ocsp.certid import HashAlgorithm, issuer_keys
from certstatus.ocsp.reasons import ALLOWED
from certstatus.ocsp.response import CertStatus, ResponseBuilder

NOW = 1_800_000_000


@pytest.fixture(scope="module")
def ca() -> DemoCA:
    return DemoCA.create()


@pytest.fixture(scope="module")
def builder(ca: DemoCA) -> ResponseBuilder:
    responder, key = ca.responder()
    return ResponseBuilder(ca.certificate, responder, key_from_private(key))


def parse(data: bytes) -> ocsp.OCSPResponse:
    return ocsp.load_der_ocsp_response(data)


@pytest.mark.parametrize("algorithm", list(HashAlgorithm))
def test_good_response_matches_request_certid_r8(ca, builder, algorithm) -> None:
    serial = (1 << 127) | 0xABCDEF  # top bit set: DER needs a leading zero byte
    data = builder.sign(algorithm, serial, CertStatus(), NOW - 3600, NOW + 7 * 86400, NOW)
    resp = parse(data)
    keys = issuer_keys(ca.certificate)[algorithm]
    assert resp.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert resp.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert resp.serial_number == serial
    assert resp.issuer_name_hash == keys.name_hash
    assert resp.issuer_key_hash == keys.key_hash
    assert type(resp.hash_algorithm).__name__.lower() == algorithm.value
    assert len(list(resp.responses)) == 1  # R8: one SingleResponse per response
    assert resp.this_update_utc == dt.datetime.fromtimestamp(NOW - 3600, dt.UTC)
    assert resp.next_update_utc == dt.datetime.fromtimestamp(NOW + 7 * 86400, dt.UTC)
    assert resp.produced_at_utc == dt.datetime.fromtimestamp(NOW, dt.UTC)
    assert len(resp.extensions) == 0  # pregenerated: no nonce (R9)


def test_responder_id_by_key_and_signature_verifies_r6_r8(builder) -> None:
    data = builder.sign(HashAlgorithm.SHA1, 5, CertStatus(), NOW - 60, NOW + 86400, NOW)
    resp = parse(data)
    responder = resp.certificates[0]
    assert resp.responder_name is None
    assert resp.responder_key_hash is not None
    assert isinstance(resp.signature_hash_algorithm, hashes.SHA256)
    public = responder.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("reason", list(ALLOWED))
def test_revoked_carries_time_and_reason_except_unspecified_r7(builder, reason) -> None:
    code = ALLOWED[reason]
    status = CertStatus(True, NOW - 500, code)
    resp = parse(builder.sign(HashAlgorithm.SHA256, 77, status, NOW - 60, NOW + 86400, NOW))
    assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert resp.revocation_time_utc == dt.datetime.fromtimestamp(NOW - 500, dt.UTC)
    if reason == "unspecified":
        assert resp.revocation_reason is None
    else:
        assert resp.revocation_reason is not None
        assert resp.revocation_reason.name.replace("_", "").lower() == reason.lower()


def test_times_have_whole_seconds_in_zulu_r8(builder) -> None:
    data = builder.sign(HashAlgorithm.SHA1, 9, CertStatus(True, NOW, 4), NOW, NOW + 86400, NOW)
    stamp = der.generalized_time(NOW)
    assert stamp[2:] == b"20270115080000Z"
    assert data.count(b"\x18\x0f") == 4  # producedAt, revocationTime, thisUpdate, nextUpdate
    assert b"." not in stamp


def test_rsa_responder_signs_sha256(ca) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    from certstatus.demo.ca import responder_builder

    now = dt.datetime.now(dt.UTC)
    cert = responder_builder(ca, rsa_key, now, now + dt.timedelta(days=30)).sign(
        ca.key, hashes.SHA256()
    )  # type: ignore[arg-type]
    builder = ResponseBuilder(ca.certificate, cert, key_from_private(rsa_key))
    resp = parse(builder.sign(HashAlgorithm.SHA1, 3, CertStatus(), NOW, NOW + 86400, NOW))
    from cryptography.hazmat.primitives.asymmetric import padding

    rsa_key.public_key().verify(
        resp.signature, resp.tbs_response_bytes, padding.PKCS1v15(), hashes.SHA256()
    )


@pytest.mark.parametrize(
    ("constant", "status"),
    [
        (r.MALFORMED_REQUEST, ocsp.OCSPResponseStatus.MALFORMED_REQUEST),
        (r.INTERNAL_ERROR, ocsp.OCSPResponseStatus.INTERNAL_ERROR),
        (r.TRY_LATER, ocsp.OCSPResponseStatus.TRY_LATER),
        (r.UNAUTHORIZED, ocsp.OCSPResponseStatus.UNAUTHORIZED),
    ],
)
def test_error_responses_are_constant_and_parse(constant, status) -> None:
    assert parse(constant).response_status is status
    assert constant == bytes([0x30, 0x03, 0x0A, 0x01, status.value])


def test_der_integer_and_length_forms() -> None:
    assert der.integer(0) == b"\x02\x01\x00"
    assert der.integer(127) == b"\x02\x01\x7f"
    assert der.integer(128) == b"\x02\x02\x00\x80"
    assert der.length(127) == b"\x7f"
    assert der.length(128) == b"\x81\x80"
    assert der.length(70000) == b"\x83\x01\x11\x70"
    with pytest.raises(ValueError):
        der.read_tlv(b"\x30\x05\x01")


class DeterministicEcdsaKey(EcdsaKey):
    """A real P-256 key signing per RFC 6979, so the same tbsResponseData gives the same bytes
    and two builders' outputs can be compared byte for byte (lengths still vary, 70-72)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        super().__init__(key)
        self._algorithm = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


@pytest.fixture(scope="module")
def deterministic(ca: DemoCA) -> tuple[ResponseBuilder, ResponseBuilder]:
    """One builder whose caches fill across examples, and one that empties them at once."""
    responder, key = ca.responder()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cached = ResponseBuilder(ca.certificate, responder, DeterministicEcdsaKey(key))
    thrashed = ResponseBuilder(ca.certificate, responder, DeterministicEcdsaKey(key))
    thrashed._CACHE_LIMIT = 1
    return cached, thrashed


statuses = st.one_of(
    st.just(CertStatus()),
    st.builds(
        CertStatus,
        st.just(True),
        st.integers(NOW - 10 * 86400, NOW),
        st.one_of(st.none(), st.sampled_from(sorted(ALLOWED.values()))),
    ),
)


@settings(max_examples=150, deadline=None, database=None)
@given(
    serial=st.one_of(st.integers(0, 300), st.integers(0, (1 << 160) - 1)),
    status=statuses,
    this_update=st.integers(NOW - 7200, NOW),
    validity=st.integers(8 * 3600, 10 * 86400 - 1),
    produced=st.integers(NOW, NOW + 3),
)
def test_cached_splicing_matches_the_reference_path_and_parses_r7_r8(
    ca, deterministic, serial, status, this_update, validity, produced
) -> None:
    """The signer's path (headers cached per length, serial and signature spliced in) gives the
    bytes of the header-by-header reference, for both CertID hashes, good and revoked, and
    cryptography's parser reads back every field (issue 15: the reference stays the oracle)."""
    next_update = this_update + validity
    pair = []
    for builder in deterministic:
        for algorithm in HashAlgorithm:
            args = (algorithm, serial, status, this_update, next_update, produced)
            data = builder.sign(*args)
            assert data == builder.sign_reference(*args)
            pair.append(data)
            resp = parse(data)
            keys = issuer_keys(ca.certificate)[algorithm]
            assert resp.serial_number == serial
            assert (resp.issuer_name_hash, resp.issuer_key_hash) == (keys.name_hash, keys.key_hash)
            assert type(resp.hash_algorithm).__name__.lower() == algorithm.value
            assert resp.this_update_utc == dt.datetime.fromtimestamp(this_update, dt.UTC)
            assert resp.next_update_utc == dt.datetime.fromtimestamp(next_update, dt.UTC)
            assert resp.produced_at_utc == dt.datetime.fromtimestamp(produced, dt.UTC)
            if status.revoked:
                assert resp.certificate_status is ocsp.OCSPCertStatus.REVOKED
                assert status.revocation_time is not None
                assert resp.revocation_time_utc == dt.datetime.fromtimestamp(
                    status.revocation_time, dt.UTC
                )
            else:
                assert resp.certificate_status is ocsp.OCSPCertStatus.GOOD
            public = resp.certificates[0].public_key()
            assert isinstance(public, ec.EllipticCurvePublicKey)
            public.verify(resp.signature, resp.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
        both_args = (
            serial,
            status.revoked,
            status.revocation_time,
            status.reason,
            this_update,
            next_update,
            produced,
        )
        both = builder.sign_both(*both_args)
        assert both == tuple(pair[-2:])
        # what the signer stores: each response without the responder certificate, which the
        # store appends when reading (store/responsecerts.py); the same bytes once appended
        cut = builder.sign_both(*both_args, certs=False)
        assert builder.certs and tuple(c + builder.certs for c in cut) == both
    assert pair[:2] == pair[2:]  # the builder that keeps nothing cached agrees too


def test_serial_encoding_matches_der_integer() -> None:
    for serial in (0, 1, 127, 128, 255, 256, (1 << 159), (1 << 160) - 1, (1 << 1100)):
        assert r._serial_der(serial) == der.integer(serial)
    with pytest.raises(ValueError):
        r._serial_der(-1)
