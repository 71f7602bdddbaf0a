"""The issuance API (issue 12): real TLS on loopback with certificates minted here, curl and the
Python client, the OpenAPI document validated and every answer checked against it; refusals
(no client certificate, a foreign CA, an expired certificate, a missing permission, bad bodies)
write nothing but their audit entry (R23); ?wait=authoritative; NDJSON bulk (R24); a revoked
certificate is then answered revoked by `openssl ocsp`. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec

from certstatus.api.auth import spki_sha256
from certstatus.api.openapi import document
from certstatus.client import ApiClient, ApiError
from certstatus.demo.apipki import ApiCA, write_certificate, write_secret_key
from certstatus.demo.ca import DemoCA
from certstatus.ports import free_port
from tests.conftest import serving, stop_process

CURL = shutil.which("curl") or "curl"
SPEC = document()


def check_against_spec(path: str, method: str, status: int, answer: object) -> None:
    """The answer matches the schema the document gives for (path, method, status)."""
    operation = SPEC["paths"][path][method]
    content = operation["responses"][str(status)]["content"]["application/json"]["schema"]
    schema = {**content, "components": SPEC["components"]}
    OAS31Validator(schema).validate(answer)


class Api:
    """`certstatus api` for a deployment, with its PKI: the server, an all-permission client,
    a record-only client, a client from a foreign CA and an expired client."""

    def __init__(self, deployment, rate: float = 1000, burst: int = 1000, batch: int = 1000):
        self.deployment = deployment
        d = deployment.dir
        ca, foreign = ApiCA.create(), ApiCA.create("foreign CA")
        server, server_key = ca.server(["127.0.0.1", "localhost"])
        write_certificate(d / "api-ca.pem", ca.certificate)
        write_certificate(d / "api-server.pem", server)
        write_secret_key(d / "api-server.key", server_key)
        self.clients = {}
        for name, issuer, expired in (
            ("issuer-1", ca, False),
            ("recorder", ca, False),
            ("foreign", foreign, False),
            ("expired", ca, True),
        ):
            certificate, key = issuer.client(name, expired=expired)
            write_certificate(d / f"{name}.pem", certificate)
            write_secret_key(d / f"{name}.key", key)
            self.clients[name] = certificate
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        recorder_subject = self.clients["recorder"].subject.rfc4514_string()
        with deployment.config_path.open("a") as config:
            config.write(
                f"""
[api]
listen = "127.0.0.1:{self.port}"
certificate = "api-server.pem"
private_key = "api-server.key"
client_ca = "api-ca.pem"
rate = {rate}
burst = {burst}
max_batch = {batch}

[[api.clients]]
name = "issuer-1"
spki_sha256 = "{spki_sha256(self.clients["issuer-1"])}"
permissions = ["record", "revoke", "read"]

[[api.clients]]
name = "recorder"
subject = "{recorder_subject}"
permissions = ["record"]

[[api.clients]]
name = "expired"
spki_sha256 = "{spki_sha256(self.clients["expired"])}"
permissions = ["record", "revoke", "read"]
"""
            )

    def client(self, name: str = "issuer-1") -> ApiClient:
        d = self.deployment.dir
        return ApiClient(self.url, d / f"{name}.pem", d / f"{name}.key", d / "api-ca.pem")

    def curl(self, *args: str, client: str | None = "issuer-1") -> subprocess.CompletedProcess:
        d = self.deployment.dir
        identity = ["--cert", str(d / f"{client}.pem"), "--key", str(d / f"{client}.key")]
        return subprocess.run(
            [CURL, "-sS", "--cacert", str(d / "api-ca.pem"), *(identity if client else []),
             "-w", "\n%{http_code}", *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    @contextmanager
    def running(self) -> Iterator[subprocess.Popen]:
        process = subprocess.Popen(
            [sys.executable, "-m", "certstatus.cli", "api", "--config",
             str(self.deployment.config_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while True:
                if process.poll() is not None:
                    raise RuntimeError(process.stderr.read().decode())  # type: ignore[union-attr]
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            yield process
        finally:
            stop_process(process)


def answer_of(result: subprocess.CompletedProcess) -> tuple[int, dict]:
    body, _, code = result.stdout.rpartition("\n")
    return int(code), json.loads(body) if body else {}


def state(store) -> tuple:
    """Everything a write would change except the audit log's refusals."""
    counts = store.counts()
    entries = [e for e in store.audit_entries(0, 0, 10_000) if e.action != "refused"]
    return counts, len(entries)


def test_record_revoke_read_with_curl_and_client_and_openapi(engine) -> None:
    api = Api(engine)
    store = engine.store()
    leaf, der_leaf, precert = engine.leaf(), engine.leaf(), engine.leaf(precertificate=True)
    pem_file = engine.write_leaf(leaf)
    with api.running():
        spec = api.client().openapi()
        validate_spec(spec)  # a real OpenAPI 3.1 validator
        assert spec == json.loads(json.dumps(SPEC))

        code, answer = answer_of(
            api.curl("-H", "Content-Type: application/x-pem-file", "--data-binary",
                     f"@{pem_file}", f"{api.url}/v1/certificates")
        )  # fmt: skip
        assert code == 200 and answer["added"] == 1
        check_against_spec("/v1/certificates", "post", code, answer)
        assert answer["certificates"] == [
            {"issuer": "demo", "serial": f"{leaf.serial_number:x}", "outcome": "added"}
        ]
        again = api.client().record(pem_file.read_bytes())  # idempotent
        assert (again["added"], again["known"]) == (0, 1)
        assert again["certificates"][0]["outcome"] == "known"
        both = api.client("recorder").record(
            der_leaf.public_bytes(Encoding.DER)
        )  # DER, by a client known by subject
        assert both["added"] == 1
        bundle = precert.public_bytes(Encoding.PEM) + leaf.public_bytes(Encoding.PEM)
        multi = api.client().record(bundle)
        assert [c["outcome"] for c in multi["certificates"]] == ["added", "known"]

        body = json.dumps(
            {"issuer": "demo", "serial": f"{leaf.serial_number:x}", "reason": "keyCompromise"}
        )
        code, answer = answer_of(
            api.curl("-H", "Content-Type: application/json", "--data-binary", body,
                     f"{api.url}/v1/revocations")
        )  # fmt: skip
        assert code == 200, answer
        check_against_spec("/v1/revocations", "post", code, answer)
        assert answer["revocations"][0]["outcome"] == "revoked"
        retried = api.client().revoke(json.loads(body))  # a retry after a lost answer
        assert retried["revocations"][0]["outcome"] == "unchanged"

        status = api.client().status("demo", leaf.serial_number)
        check_against_spec("/v1/certificates/{issuer}/{serial}", "get", 200, status)
        assert status["status"] == "revoked" and status["reason"] == "keyCompromise"
        assert [e["action"] for e in status["audit"]] == ["record", "revoke"]
        assert {e["actor"] for e in status["audit"]} == {"api:issuer-1"}
        assert status["responses"] == []  # no signer ran yet

        with pytest.raises(ApiError) as missing:
            api.client().status("demo", "abcdef")
        assert missing.value.status == 404
        check_against_spec("/v1/certificates/{issuer}/{serial}", "get", 404, missing.value.answer)
    row = store.certificate(1, leaf.serial_number)
    assert row.revoked and row.reason == 1
    verify = subprocess.run(
        [sys.executable, "-m", "certstatus.cli", "audit", "verify", "--config",
         str(engine.config_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr


def test_refusals_write_nothing_but_their_audit_entry(engine) -> None:
    api = Api(engine)
    store = engine.store()
    known = engine.leaf()
    engine.ingest(store).add_certificates([(known, "k")], int(time.time()))
    stranger = DemoCA.create("stranger CA").leaf(engine.leaf_key, 99, engine.url)
    revoke_known = json.dumps(
        {"issuer": "demo", "serial": f"{known.serial_number:x}", "reason": "superseded"}
    )
    with api.running():
        before = state(store)
        head = store.audit_head()[0]
        # TLS refusals: the handshake fails, no request reaches the app, no audit entry
        for client in (None, "foreign", "expired"):
            result = api.curl(f"{api.url}/v1/openapi.json", client=client)
            assert result.returncode != 0, (client, result.stdout)
            assert result.stdout.strip() == "000"
        with pytest.raises(ApiError) as handshake:
            api.client("foreign").openapi()
        assert handshake.value.status == 0
        assert store.audit_head()[0] == head

        def refused(expected: int, *args: str, client: str = "issuer-1") -> dict:
            code, answer = answer_of(api.curl(*args, client=client))
            assert code == expected, answer
            path = "/v1/certificates" if "certificates" in args[-1] else "/v1/revocations"
            check_against_spec(path, "post", code, answer)
            return answer

        no_permission = refused(
            403, "-H", "Content-Type: application/json", "--data-binary", revoke_known,
            f"{api.url}/v1/revocations", client="recorder",
        )  # fmt: skip
        assert "lacks the 'revoke' permission" in no_permission["error"]["message"]
        garbage = engine.dir / "garbage.der"
        garbage.write_bytes(b"\x30\x82\x01\x00" + b"\x00" * 100)
        refused(400, "-H", "Content-Type: application/pkix-cert", "--data-binary",
                f"@{garbage}", f"{api.url}/v1/certificates")  # fmt: skip
        foreign_file = engine.write_leaf(stranger)
        answer = refused(422, "-H", "Content-Type: application/x-pem-file", "--data-binary",
                         f"@{foreign_file}", f"{api.url}/v1/certificates")  # fmt: skip
        assert "not a configured issuer" in answer["error"]["message"]
        ca_file = engine.dir / "issuer.pem"
        answer = refused(422, "-H", "Content-Type: application/x-pem-file", "--data-binary",
                         f"@{ca_file}", f"{api.url}/v1/certificates")  # fmt: skip
        assert "is a CA certificate" in answer["error"]["message"]
        big = engine.dir / "big.pem"
        big.write_bytes(engine.write_leaf(engine.leaf()).read_bytes() * 1500)  # > 1 MB
        assert big.stat().st_size > 1_048_576
        refused(413, "-H", "Content-Type: application/x-pem-file", "--data-binary",
                f"@{big}", f"{api.url}/v1/certificates")  # fmt: skip
        good_line = revoke_known.encode()
        ndjson = engine.dir / "bad.ndjson"
        ndjson.write_bytes(good_line + b"\n{not json\n")
        answer = refused(400, "-H", "Content-Type: application/x-ndjson", "--data-binary",
                         f"@{ndjson}", f"{api.url}/v1/revocations")  # fmt: skip
        assert answer["error"]["message"].startswith("line 2: not a JSON object")
        assert answer["committed"]["lines"] == 0
        unknown_reason = json.dumps({"issuer": "demo", "serial": "1", "reason": "whim"})
        refused(422, "-H", "Content-Type: application/json", "--data-binary", unknown_reason,
                f"{api.url}/v1/revocations")  # fmt: skip
        unknown_serial = json.dumps(
            [json.loads(revoke_known), {"issuer": "demo", "serial": "dead", "reason": 1}]
        )
        answer = refused(422, "-H", "Content-Type: application/json", "--data-binary",
                         unknown_serial, f"{api.url}/v1/revocations")  # fmt: skip
        assert answer["error"]["message"].startswith("item 2: serial dead is not known")

        assert state(store) == before  # nothing written
        refusals = store.audit_entries(head, 0, 100)
        assert [e.action for e in refusals] == ["refused"] * 8
        assert refusals[0].actor == "api:recorder" and refusals[0].detail.startswith("403 POST")
        assert all(e.request_id for e in refusals)
    assert not store.certificate(1, known.serial_number).revoked


def test_wait_authoritative_returns_once_signed_and_times_out_cleanly(engine) -> None:
    api = Api(engine)
    store = engine.store()
    first, second = engine.leaf(), engine.leaf()
    with api.running():
        started = time.monotonic()
        timed_out = api.client().record(
            first.public_bytes(Encoding.PEM), wait="authoritative", timeout="1s"
        )
        assert 0.9 < time.monotonic() - started < 5
        assert timed_out["wait"]["satisfied"] is False and timed_out["wait"]["pending"] == 1
        status, raw = api.client().request(
            "POST", "/v1/certificates", second.public_bytes(Encoding.DER),
            "application/pkix-cert", {"wait": "authoritative", "timeout": "1s"},
        )  # fmt: skip
        assert status == 202
        check_against_spec("/v1/certificates", "post", 202, raw)

        signer_store = engine.store()

        signing_started: list[float] = []

        def sign_later() -> None:
            time.sleep(0.5)
            signing_started.append(time.monotonic())
            with engine.signer(signer_store) as signer:
                signer.sign_due()

        third = engine.leaf()
        thread = threading.Thread(target=sign_later)
        thread.start()
        answer = api.client().record(
            third.public_bytes(Encoding.PEM), wait="authoritative", timeout="20s"
        )
        answered_at = time.monotonic()
        thread.join()
        # it waited for the signer: answered only after signing began (not how long it
        # waited: on a loaded machine the record itself may take most of the 0.5 s)
        assert answer["wait"]["satisfied"] is True and answer["wait"]["waited_ms"] > 0
        assert signing_started and answered_at > signing_started[0]
        row = store.certificate(1, third.serial_number)
        info = store.response_info(1, third.serial_number)
        assert info is not None and info.version == row.version  # it exists in the store
        status_answer = api.client().status("demo", third.serial_number)
        assert [r["current"] for r in status_answer["responses"]] == [True, True]
        with pytest.raises(ApiError) as bad:
            api.client().record(third.public_bytes(Encoding.PEM), wait="soon")
        assert bad.value.status == 400
        # SHA-256 signed on request: only the SHA-1 response exists, and only it is listed
        from certstatus.store.base import AuditContext, ResponseFormat

        on_request = ResponseFormat(True, sha256_on_request=True)
        store.set_response_format(on_request, AuditContext("cli:test"), int(time.time()))
        fourth = engine.leaf()
        engine.ingest(store).add_certificates([(fourth, "t")], int(time.time()))
        with engine.signer(signer_store) as signer:
            signer.sign_due()
        listed = api.client().status("demo", fourth.serial_number)["responses"]
        assert [(r["certid_hash"], r["current"]) for r in listed] == [("sha1", True)]


def test_ndjson_bulk_commits_chunks_in_order_and_stops_at_a_bad_line_r24(engine) -> None:
    api = Api(engine, batch=100)
    store = engine.store()
    ingest = engine.ingest(store)
    leaves = [engine.leaf() for _ in range(250)]
    ingest.add_certificates([(leaf, str(n)) for n, leaf in enumerate(leaves)], int(time.time()))

    def items(broken_at: int | None = None) -> Iterator[dict]:
        for n, leaf in enumerate(leaves, start=1):
            if n == broken_at:
                yield {"issuer": "demo", "serial": "zz", "reason": "superseded"}
            else:
                yield {"issuer": "demo", "serial": f"{leaf.serial_number:x}", "reason": 4}

    with api.running():
        with pytest.raises(ApiError) as stopped:
            api.client().revoke_stream(items(broken_at=170))
        assert stopped.value.status == 400
        assert stopped.value.answer["committed"] == {
            "revoked": 100, "unchanged": 0, "lines": 100, "through_line": 100,
        }  # fmt: skip
        assert "line 170" in stopped.value.message
        assert store.counts()["revoked"] == 100
        done = api.client().revoke_stream(items())  # resumed whole: the first 100 unchanged
        check_against_spec("/v1/revocations", "post", 200, done)
        assert (done["revoked"], done["unchanged"], done["lines"]) == (150, 100, 250)
    assert store.counts()["revoked"] == 250
    revokes = [e for e in store.audit_entries(0, 0, 10_000) if e.action == "revoke"]
    assert len(revokes) == 250


def test_rate_limit_429_with_retry_after(deployment) -> None:
    api = Api(deployment, rate=0.5, burst=2)
    with api.running():
        for _ in range(2):
            api.client().openapi()
        head = api.curl("-D", "-", f"{api.url}/v1/openapi.json")
        assert head.stdout.splitlines()[-1] == "429"
        assert "retry-after: 2" in head.stdout.lower()
        assert '"code":"rate_limited"' in head.stdout
        with pytest.raises(ApiError) as again:
            api.client().openapi()
        assert again.value.status == 429


def test_revoked_through_the_api_is_answered_revoked_by_openssl(deployment) -> None:
    api = Api(deployment)
    leaf = deployment.leaf()
    path = deployment.write_leaf(leaf)
    store = deployment.store()
    with api.running():
        api.client().record(path.read_bytes())
        api.client().revoke(
            {"issuer": "demo", "serial": f"{leaf.serial_number:x}", "reason": "keyCompromise"}
        )
    with deployment.signer(store) as signer:
        signer.sign_due()
    with serving(deployment):
        result = subprocess.run(
            ["openssl", "ocsp", "-issuer", str(deployment.dir / "issuer.pem"), "-cert",
             str(path), "-url", deployment.url, "-CAfile", str(deployment.dir / "issuer.pem"),
             "-no_nonce"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"{path}: revoked" in result.stdout
    assert "Reason: keyCompromise" in result.stdout


def test_tls_1_3_negotiated_and_nothing_below_1_2_accepted(deployment) -> None:
    api = Api(deployment)

    def connect(maximum: ssl.TLSVersion) -> str | None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(deployment.dir / "api-ca.pem")
        context.load_cert_chain(deployment.dir / "issuer-1.pem", deployment.dir / "issuer-1.key")
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
        with (
            socket.create_connection(("127.0.0.1", api.port)) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            return tls.version()

    with api.running():
        assert connect(ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
        assert connect(ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
        with pytest.raises(ssl.SSLError):
            connect(ssl.TLSVersion.TLSv1_1)


def test_insecure_loopback_only_on_loopback(tmp_path: Path) -> None:
    from certstatus.config import ConfigError, load_config
    from tests.test_config import GOOD_ISSUER

    path = tmp_path / "c.toml"
    path.write_text(
        'database = "x.db"\n' + GOOD_ISSUER + '[api]\nlisten = "0.0.0.0:8443"\n'
        "insecure_loopback = true\n"
    )
    with pytest.raises(ConfigError, match=r"api\.insecure_loopback: plain HTTP is allowed only"):
        load_config(path)


def test_cli_add_and_revoke_through_the_api_and_revoke_from_a_file(engine) -> None:
    api = Api(engine)
    store = engine.store()
    d = engine.dir
    identity = ["--api", api.url, "--client-cert", str(d / "issuer-1.pem"),
                "--client-key", str(d / "issuer-1.key"), "--api-ca", str(d / "api-ca.pem")]  # fmt: skip
    leaves = [engine.leaf() for _ in range(5)]
    files = [str(engine.write_leaf(leaf)) for leaf in leaves]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "certstatus.cli", *args], capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip

    with api.running():
        added = cli("add", *identity, *files)
        assert added.returncode == 0, added.stderr
        assert added.stdout.strip() == "added 5, already known 0"
        one = cli("revoke", *identity, "--issuer", "demo", "--reason", "superseded",
                  f"{leaves[0].serial_number:x}")  # fmt: skip
        assert one.returncode == 0, one.stderr
        assert "(superseded; revoked)" in one.stdout
        lines = [f"demo,{leaf.serial_number:x},keyCompromise" for leaf in leaves[1:3]]
        csv_file = d / "mass.csv"
        csv_file.write_text("issuer,serial,reason,time\n" + "\n".join(lines) + "\n")
        streamed = cli("revoke", *identity, "--from", str(csv_file))
        assert streamed.returncode == 0, streamed.stderr
        assert streamed.stdout.strip() == "revoked 2, unchanged 0 (2 lines)"
        recorder = ["--client-cert", str(d / "recorder.pem"), "--client-key",
                    str(d / "recorder.key"), "--api-ca", str(d / "api-ca.pem")]  # fmt: skip
        denied = cli("revoke", "--api", api.url, *recorder, "--issuer", "demo", "--reason",
                     "superseded", f"{leaves[4].serial_number:x}")  # fmt: skip
        assert denied.returncode == 2
        assert denied.stderr.splitlines() == [
            "error: 403 forbidden: client 'recorder' lacks the 'revoke' permission"
        ]
    jsonl = d / "mass.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps({"issuer": "demo", "serial": f"{leaf.serial_number:x}", "reason": 1}) + "\n"
            for leaf in leaves[1:4]
        )
    )
    local = cli("revoke", "--config", str(engine.config_path), "--from", str(jsonl))
    assert local.returncode == 0, local.stderr
    assert local.stdout.strip() == "revoked 1, unchanged 2 (3 lines)"
    bad = d / "bad.csv"
    bad.write_text(f"demo,{leaves[4].serial_number:x},superseded\ndemo,zz,superseded\n")
    refused = cli("revoke", "--config", str(engine.config_path), "--from", str(bad))
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f"error: {bad}: line 2: serial 'zz' is not a hexadecimal serial number"
    ]
    assert store.counts()["revoked"] == 4  # not the refused file's first line
    assert not store.certificate(1, leaves[4].serial_number).revoked
    actors = {e.actor for e in store.audit_entries(0, 0, 100) if e.action == "revoke"}
    assert actors == {"api:issuer-1", next(a for a in actors if a.startswith("cli:"))}
