"""The responder's HTTP answers, driven through its ASGI interface: R12 headers on authoritative
answers, R13 no-store on everything else, 304s, size and slow-client limits, readiness."""

from __future__ import annotations

import asyncio
import base64
import datetime
import time
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from certstatus.demo.ca import DemoCA
from certstatus.ocsp import response as r
from certstatus.ocsp.certid import HashAlgorithm, issuer_keys
from certstatus.ocsp.request import encode_request
from certstatus.responder.app import OcspApp, issuer_index
from certstatus.responder.source import EmbeddedSource
from certstatus.store.base import AuditContext, ResponseFormat, StoreError

NO_STORE = "no-cache, no-store, max-age=0"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def call(
    app: OcspApp,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    chunks: list[bytes] | None = None,
    stall: bool = False,
) -> Answer:
    pending = [*(chunks if chunks is not None else [body])]
    sent: list[dict] = []

    async def receive() -> dict:
        if stall and not pending:
            await asyncio.sleep(3600)
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending) or stall}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "headers": headers or [],
    }
    asyncio.run(app(scope, receive, send))
    start, end = sent
    return Answer(
        start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, end["body"]
    )


def request_der(issuer: x509.Certificate, serial: int, algorithm=None) -> bytes:
    """A request built by hash: a CertID needs only the issuer and the serial."""
    sha256 = isinstance(algorithm, hashes.SHA256)
    keys = issuer_keys(issuer)[HashAlgorithm.SHA256 if sha256 else HashAlgorithm.SHA1]
    return encode_request(keys, serial)


def get_path(der: bytes) -> str:
    return "/" + base64.b64encode(der).decode()


@pytest.fixture
def signed(deployment):
    """A store with one good and one revoked certificate, signed, and an app over it."""
    store = deployment.store()
    good, bad = deployment.good_and_revoked(store)
    issuer_id = deployment.ingest(store).issuer_id("demo")
    app = OcspApp(
        EmbeddedSource(store),
        issuer_index([(issuer_id, deployment.materials()[0])]),
        request_timeout=0.3,
    )
    return deployment, store, app, good, bad, issuer_id


def assert_no_store(answer: Answer) -> None:
    assert answer.headers["cache-control"] == NO_STORE  # R13
    assert "etag" not in answer.headers and "expires" not in answer.headers
    assert "xkey" not in answer.headers  # nothing to purge: it was never cacheable


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("algorithm", [hashes.SHA1(), hashes.SHA256()])
def test_authoritative_answer_headers_r12(signed, method, algorithm) -> None:
    deployment, store, app, good, _, issuer_id = signed
    der = request_der(deployment.ca.certificate, good.serial_number, algorithm)
    answer = call(app, "GET", get_path(der)) if method == "GET" else call(app, "POST", "/", der)
    assert answer.status == 200
    parsed = ocsp.load_der_ocsp_response(answer.body)
    assert parsed.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert type(parsed.hash_algorithm) is type(algorithm)  # CertID matches the request's (R8)
    stored = store.response(issuer_id, good.serial_number)
    h = answer.headers
    assert h["content-type"] == "application/ocsp-response"
    max_age = int(h["cache-control"].split(",")[0].removeprefix("max-age="))
    assert h["cache-control"].endswith("public, no-transform, must-revalidate")
    assert 0 < max_age <= stored.refresh_at - time.time() + 1  # never past the refresh (R12)
    last_modified = parsed.this_update_utc.strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert h["last-modified"] == last_modified
    assert "expires" in h and h["etag"].startswith('"')
    # surrogate keys for the cache tier: the certificate and its issuer, in every header format
    keys = f"cs-i{issuer_id} cs-i{issuer_id}-s{good.serial_number:x}"
    assert h["xkey"] == h["surrogate-key"] == keys
    assert h["cache-tag"] == keys.replace(" ", ",")


def test_if_none_match_gives_304_r12(signed) -> None:
    deployment, _, app, good, _, _ = signed
    path = get_path(request_der(deployment.ca.certificate, good.serial_number))
    first = call(app, "GET", path)
    again = call(app, "GET", path, headers=[(b"if-none-match", first.headers["etag"].encode())])
    assert again.status == 304 and again.body == b""
    assert again.headers["etag"] == first.headers["etag"]
    assert "max-age=" in again.headers["cache-control"]
    other = call(app, "GET", path, headers=[(b"if-none-match", b'"nope"')])
    assert other.status == 200


def test_revoked_answer(signed) -> None:
    deployment, _, app, _, bad, _ = signed
    answer = call(app, "GET", get_path(request_der(deployment.ca.certificate, bad.serial_number)))
    parsed = ocsp.load_der_ocsp_response(answer.body)
    assert parsed.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert parsed.revocation_reason is x509.ReasonFlags.key_compromise


def test_unknown_serial_is_unauthorized_never_good_r5_r13(signed) -> None:
    deployment, _, app, _, _, _ = signed
    answer = call(app, "GET", get_path(request_der(deployment.ca.certificate, 0xBAD)))
    assert answer.body == r.UNAUTHORIZED
    assert_no_store(answer)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_recorded_but_not_signed_yet_is_try_later_not_unauthorized_f1(signed, method) -> None:
    """The founding incident's answer was "unauthorized" for certificates the CA had issued.
    On SQLite too, a certificate recorded before any signer has run is tryLater, uncacheable,
    and good once signed; a serial never recorded stays unauthorized."""
    deployment, store, app, _, _, _ = signed
    fresh = deployment.leaf()
    deployment.ingest(store).add_certificates([(fresh, "f")], int(time.time()))
    der = request_der(deployment.ca.certificate, fresh.serial_number)

    def ask() -> Answer:
        return call(app, "GET", get_path(der)) if method == "GET" else call(app, "POST", "/", der)

    waiting = ask()
    assert waiting.body == r.TRY_LATER
    assert_no_store(waiting)
    stranger = request_der(deployment.ca.certificate, fresh.serial_number + 1)
    assert call(app, "POST", "/", stranger).body == r.UNAUTHORIZED
    with deployment.signer(store) as signer:
        signer.sign_due()
    parsed = ocsp.load_der_ocsp_response(ask().body)
    assert parsed.certificate_status is ocsp.OCSPCertStatus.GOOD


def test_try_later_is_counted_by_why_not_signed_expired_or_no_source(signed) -> None:
    """certstatus_responder_try_later_total{reason}: "not signed yet" and "expired" are the
    signers' to fix, "no_source" the databases': one tryLater count could not tell an
    operator which (answers_total{outcome="tryLater"} still counts them all)."""
    from prometheus_client import REGISTRY

    from certstatus.responder.metrics import ResponderMetrics

    deployment, store, app, good, _, issuer_id = signed
    app.metrics = ResponderMetrics(flush_every=3600)

    def counted() -> dict[str, float]:
        app.metrics.flush()
        found = {
            reason: REGISTRY.get_sample_value(
                "certstatus_responder_try_later_total", {"reason": reason}
            )
            or 0.0
            for reason in ("not_signed", "expired", "sha256_on_request", "no_source")
        }
        found["all"] = sum(  # every tryLater answer, whichever source label it carries
            sample.value
            for metric in REGISTRY.collect()
            if metric.name == "certstatus_responder_answers"
            for sample in metric.samples
            if sample.name.endswith("_total") and sample.labels.get("outcome") == "tryLater"
        )
        return found

    before = counted()
    fresh = deployment.leaf()
    deployment.ingest(store).add_certificates([(fresh, "f")], int(time.time()))
    for _ in range(2):
        answer = call(
            app, "GET", get_path(request_der(deployment.ca.certificate, fresh.serial_number))
        )
        assert answer.body == r.TRY_LATER
    good_path = get_path(request_der(deployment.ca.certificate, good.serial_number))
    now = app.clock
    app.clock = lambda: store.response(issuer_id, good.serial_number).next_update + 1
    assert call(app, "GET", good_path).body == r.TRY_LATER
    app.clock = now
    store.set_response_format(
        ResponseFormat(True, sha256_on_request=True), AuditContext("cli:test"), int(time.time())
    )
    asked = deployment.leaf()
    deployment.ingest(store).add_certificates([(asked, "f")], int(time.time()))
    with deployment.signer(store) as signer:
        signer.sign_due()  # SHA-1 only, and `fresh` above
    sha256 = request_der(deployment.ca.certificate, asked.serial_number, hashes.SHA256())
    assert call(app, "POST", "/", sha256).body == r.TRY_LATER
    app.source = EmbeddedSource(BrokenStore(StoreError("database x does not answer")))
    assert call(app, "GET", good_path).body == r.TRY_LATER
    after = counted()
    assert {k: after[k] - before[k] for k in after} == {
        "not_signed": 2, "expired": 1, "sha256_on_request": 1, "no_source": 1, "all": 5,
    }  # fmt: skip


def test_refusals_are_logged_one_line_per_reason_per_interval(signed, caplog) -> None:
    """An outage refuses every request: one line per reason every 10 s, with the count it
    stands for, and no traceback (a line each buried the reason, and cost more than the
    answer)."""
    deployment, _, app, good, _, _ = signed
    now = [1000.0]
    app.refusals.clock = lambda: now[0]
    error = StoreError("database x does not answer\nLINE 1: SELECT ...\nHINT: ...")
    app.source = EmbeddedSource(BrokenStore(error))
    path = get_path(request_der(deployment.ca.certificate, good.serial_number))
    with caplog.at_level("WARNING", logger="certstatus.responder"):
        for _ in range(5):
            assert call(app, "GET", path).body == r.TRY_LATER
        now[0] += 10
        assert call(app, "GET", path).body == r.TRY_LATER
    lines = [rec for rec in caplog.records if rec.name == "certstatus.responder"]
    assert [rec.getMessage() for rec in lines] == [  # each one line, the error's first
        "answered tryLater: database x does not answer (1 request(s) since this reason's last line)",
        "answered tryLater: database x does not answer (5 request(s) since this reason's last line)",
    ]
    assert all(rec.exc_info is None for rec in lines)


def test_unknown_issuer_is_unauthorized_r10_r13(signed) -> None:
    _, _, app, good, _, _ = signed
    stranger = DemoCA.create("stranger").certificate
    answer = call(app, "POST", "/", request_der(stranger, good.serial_number))
    assert answer.body == r.UNAUTHORIZED
    assert_no_store(answer)


@pytest.mark.parametrize("path", ["/", "/%%%", "/AAAA", "/" + "Q" * 4100])
def test_malformed_get_r13_r14(signed, path) -> None:
    answer = call(signed[2], "GET", path)
    assert answer.status == 200 and answer.body == r.MALFORMED_REQUEST
    assert_no_store(answer)


def test_malformed_post_r13(signed) -> None:
    answer = call(signed[2], "POST", "/", b"\x30\x80garbage")
    assert answer.body == r.MALFORMED_REQUEST
    assert_no_store(answer)


def test_oversized_post_is_413(signed) -> None:
    answer = call(signed[2], "POST", "/", chunks=[b"\x30" * 6000, b"\x00" * 6000])
    assert answer.status == 413
    assert_no_store(answer)


def test_slow_post_body_is_408(signed) -> None:
    answer = call(signed[2], "POST", "/", chunks=[b"\x30\x10"], stall=True)
    assert answer.status == 408
    assert_no_store(answer)


def test_other_methods_are_405(signed) -> None:
    answer = call(signed[2], "PUT", "/")
    assert answer.status == 405 and "no-store" in answer.headers["cache-control"]


def test_head_has_headers_without_body(signed) -> None:
    deployment, _, app, good, _, _ = signed
    path = get_path(request_der(deployment.ca.certificate, good.serial_number))
    answer = call(app, "HEAD", path)
    assert answer.status == 200 and answer.body == b""
    assert int(answer.headers["content-length"]) > 0


def test_expired_stored_response_is_try_later_not_served(signed, caplog) -> None:
    deployment, store, app, good, _, issuer_id = signed
    later = store.response(issuer_id, good.serial_number).next_update + 1
    app.clock = lambda: later
    path = get_path(request_der(deployment.ca.certificate, good.serial_number))
    with caplog.at_level("WARNING", logger="certstatus.responder"):
        for _ in range(3):
            answer = call(app, "GET", path)
            assert answer.body == r.TRY_LATER
            assert_no_store(answer)
    # the signer down for days: one line per 10 s, not one per request a client can send
    [line] = [rec.getMessage() for rec in caplog.records if rec.name == "certstatus.responder"]
    assert "past its nextUpdate; is the signer running?" in line


class BrokenStore:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def response(self, issuer_id: int, serial: int, algorithm=None):
        raise self.error

    def ping(self) -> None:
        raise StoreError("database is gone")


@pytest.mark.parametrize(
    ("error", "expected"),
    [(StoreError("down"), r.TRY_LATER), (RuntimeError("bug"), r.INTERNAL_ERROR)],
)
def test_store_failures_are_uncacheable_errors_r13(signed, error, expected) -> None:
    deployment, _, app, good, _, _ = signed
    app.source = EmbeddedSource(BrokenStore(error))
    answer = call(app, "GET", get_path(request_der(deployment.ca.certificate, good.serial_number)))
    assert answer.body == expected
    assert_no_store(answer)


def test_a_sqlite_error_is_try_later_not_internal_error(signed) -> None:
    """An error SQLite raises while reading (locked past its busy timeout, I/O, a table gone)
    is the database's, not a bug: tryLater, uncacheable."""
    deployment, store, app, good, _, _ = signed
    with store._writing() as db:
        db.execute("ALTER TABLE responses RENAME TO responses_gone")
    for serial in (good.serial_number, 0xBAD):  # known or not: the read itself fails
        answer = call(app, "GET", get_path(request_der(deployment.ca.certificate, serial)))
        assert answer.body == r.TRY_LATER
        assert_no_store(answer)


def test_health_and_readiness(signed) -> None:
    app = signed[2]
    assert call(app, "GET", "/healthz").status == 200
    assert call(app, "GET", "/readyz").status == 200
    app.source = EmbeddedSource(BrokenStore(StoreError("x")))
    not_ready = call(app, "GET", "/readyz")
    assert not_ready.status == 503 and "no-store" in not_ready.headers["cache-control"]


def test_http_date_matches_the_standard_library() -> None:
    """The hand-written date formatter (a measured hot path) agrees with email.utils."""
    import random
    from email.utils import formatdate

    from certstatus.responder.headers import http_date

    for moment in [0, 951_782_400, *random.Random(5).sample(range(4_000_000_000), 2000)]:
        assert http_date(moment) == formatdate(moment, usegmt=True)


def test_cert_status_peek_agrees_with_cryptography(signed) -> None:
    """The metrics' DER peek at certStatus, with cryptography's parser as the oracle, on our
    responses and on one cryptography built (different responderID, extensions)."""
    from certstatus.ocsp.response import cert_status_of

    deployment, store, _, good, bad, issuer_id = signed
    for certificate in (good, bad):
        for algorithm in HashAlgorithm:
            der = store.response(issuer_id, certificate.serial_number, algorithm).der
            parsed = ocsp.load_der_ocsp_response(der)
            assert cert_status_of(der) == parsed.certificate_status.name.lower()
    now = datetime.datetime.now(datetime.UTC)
    for status in ocsp.OCSPCertStatus:
        builder = ocsp.OCSPResponseBuilder().add_response(
            good,
            deployment.ca.certificate,
            hashes.SHA1(),
            status,
            now,
            now + datetime.timedelta(days=1),
            now if status is ocsp.OCSPCertStatus.REVOKED else None,
            None,
        )
        der = (
            builder.responder_id(ocsp.OCSPResponderEncoding.NAME, deployment.ca.certificate)
            .sign(deployment.ca.key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER)
        )
        assert cert_status_of(der) == status.name.lower()


def test_answers_are_counted_by_outcome_and_timed(signed) -> None:
    """Responder metrics: every answer counted by outcome and source, and timed, once flushed
    from the worker's local counts to the exported values."""
    from prometheus_client.parser import text_string_to_metric_families

    from certstatus.responder.metrics import ResponderMetrics, render

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        body, _ = render()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
        }

    deployment, _, app, good, bad, _ = signed
    metrics = ResponderMetrics(flush_every=3600)
    app.metrics = metrics
    before = scrape()
    paths = {
        "good": get_path(request_der(deployment.ca.certificate, good.serial_number)),
        "revoked": get_path(request_der(deployment.ca.certificate, bad.serial_number)),
        "unauthorized": get_path(request_der(deployment.ca.certificate, 0xDEAD)),
        "malformed": "/AAAA",
    }
    for outcome, path in paths.items():
        for _ in range(3 if outcome == "good" else 1):
            call(app, "GET", path)
    metrics.flush()
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    answers = "certstatus_responder_answers_total"
    assert delta(answers, outcome="good", source="local") == 3
    assert delta(answers, outcome="revoked", source="local") == 1
    assert delta(answers, outcome="unauthorized", source="local") == 1
    assert delta(answers, outcome="malformed", source="local") == 1
    assert delta("certstatus_responder_request_duration_seconds_count") == 6
    assert delta("certstatus_responder_request_duration_seconds_bucket", le="+Inf") == 6


def test_a_sqlite_deployment_reads_through_an_embedded_source(deployment) -> None:
    """open_response_source picks the read side from the config: one SQLite file is read in
    place, is ready while it answers, and describes itself on /sources."""
    import json

    from certstatus.responder.source import open_response_source

    source = open_response_source(deployment.config)
    try:
        assert isinstance(source, EmbeddedSource)
        assert source.ready() is None
        assert source.issuers() == []  # nothing registered yet
        app = OcspApp(source, {})
        [described] = json.loads(call(app, "GET", "/sources").body)
        assert described["role"] == "embedded" and described["fresh"] is True
    finally:
        source.close()
