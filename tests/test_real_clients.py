"""Real clients against a real responder on loopback (F7): `openssl ocsp` by POST and, through
-respin, by GET; SHA-1 and SHA-256 CertIDs; good, revoked with its reason, unknown issuer; with
signature and time checks on. And pkilint over every kind of response the project produces."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from certstatus.demo.ca import DemoCA, write_pem
from certstatus.keys.pem import key_from_private
from certstatus.ocsp import response as r
from certstatus.ocsp.certid import HashAlgorithm
from certstatus.ocsp.reasons import ALLOWED
from certstatus.ocsp.response import CertStatus, ResponseBuilder
from tests.conftest import make_deployment, serving, wait_ready

pytestmark = pytest.mark.integration
OPENSSL = shutil.which("openssl") or "openssl"
LINTER = Path(sys.executable).with_name("lint_ocsp_response")


def openssl_ocsp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPENSSL, "ocsp", *args], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A responder with a good, a revoked, and a precertificate-only serial, already signed."""
    deployment = make_deployment(tmp_path_factory.mktemp("live"))
    store = deployment.store()
    ingest = deployment.ingest(store)
    good, revoked, precert = (
        deployment.leaf(),
        deployment.leaf(),
        deployment.leaf(precertificate=True),
    )
    now = int(time.time())
    ingest.add_certificates([(good, "g"), (revoked, "r"), (precert, "p")], now)
    ingest.revoke("demo", revoked.serial_number, "superseded", now - 30)
    with deployment.signer(store) as signer:
        signer.sign_due()
    store.close()
    paths = {
        name: deployment.write_leaf(cert)
        for name, cert in (("good", good), ("revoked", revoked), ("precert", precert))
    }
    with serving(deployment):
        yield deployment, paths


def check_args(deployment, cert: Path, digest: str, trust: str) -> list[str]:
    anchor = (
        ["-CAfile", str(deployment.dir / "issuer.pem")]
        if trust == "CAfile"
        else ["-VAfile", str(deployment.dir / "responder.pem")]
    )
    return [
        f"-{digest}",
        "-issuer",
        str(deployment.dir / "issuer.pem"),
        "-cert",
        str(cert),
        *anchor,
        "-no_nonce",
    ]


@pytest.mark.parametrize("digest", ["sha1", "sha256"])
@pytest.mark.parametrize("trust", ["CAfile", "VAfile"])
@pytest.mark.parametrize(
    ("kind", "expected"), [("good", "good"), ("revoked", "revoked"), ("precert", "good")]
)
def test_openssl_post_r1_r5_r8(live, digest, trust, kind, expected) -> None:
    deployment, paths = live
    result = openssl_ocsp(
        *check_args(deployment, paths[kind], digest, trust), "-url", deployment.url
    )
    assert result.returncode == 0, result.stderr
    assert "Response verify OK" in result.stderr
    assert f"{paths[kind]}: {expected}" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr  # times valid (R3, F10)
    if kind == "revoked":
        assert "Reason: superseded" in result.stdout  # R7


@pytest.mark.parametrize("digest", ["sha1", "sha256"])
@pytest.mark.parametrize("kind", ["good", "revoked"])
def test_openssl_verifies_a_get_response_r1_r14(live, tmp_path, digest, kind) -> None:
    deployment, paths = live
    request = tmp_path / "req.der"
    made = openssl_ocsp(
        f"-{digest}",
        "-issuer",
        str(deployment.dir / "issuer.pem"),
        "-cert",
        str(paths[kind]),
        "-no_nonce",
        "-reqout",
        str(request),
    )
    assert made.returncode == 0, made.stderr
    url = deployment.url + base64.b64encode(request.read_bytes()).decode()
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.headers["Content-Type"] == "application/ocsp-response"
        assert "public" in answer.headers["Cache-Control"]
        (tmp_path / "resp.der").write_bytes(answer.read())
    result = openssl_ocsp(
        *check_args(deployment, paths[kind], digest, "CAfile"),
        "-respin",
        str(tmp_path / "resp.der"),
    )
    assert result.returncode == 0, result.stderr
    assert "Response verify OK" in result.stderr
    assert f"{paths[kind]}: {kind}" in result.stdout


def test_openssl_unknown_issuer_is_unauthorized_r10(live, tmp_path) -> None:
    deployment, _ = live
    stranger = DemoCA.create("stranger CA")
    leaf = stranger.leaf(deployment.leaf_key, 0x51, deployment.url)
    write_pem(tmp_path / "issuer.pem", stranger.certificate)
    write_pem(tmp_path / "leaf.pem", leaf)
    result = openssl_ocsp(
        "-issuer",
        str(tmp_path / "issuer.pem"),
        "-cert",
        str(tmp_path / "leaf.pem"),
        "-url",
        deployment.url,
        "-no_nonce",
    )
    assert "unauthorized (6)" in result.stdout + result.stderr


def test_openssl_unknown_serial_is_unauthorized_r5(live) -> None:
    deployment, _ = live
    result = openssl_ocsp(
        "-issuer",
        str(deployment.dir / "issuer.pem"),
        "-serial",
        "0x5151",
        "-url",
        deployment.url,
        "-no_nonce",
    )
    assert "unauthorized (6)" in result.stdout + result.stderr


def lint(der: bytes, path: Path) -> list[dict]:
    path.write_bytes(der)
    run = subprocess.run(
        [str(LINTER), "lint", "-s", "ERROR", "-f", "JSON", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return [
        finding
        for result in json.loads(run.stdout)["results"]
        for finding in result["finding_descriptions"]
    ]


def all_responses() -> dict[str, bytes]:
    ca = DemoCA.create()
    certificate, key = ca.responder()
    builder = ResponseBuilder(ca.certificate, certificate, key_from_private(key))
    now = int(time.time())
    made = {}
    for algorithm in HashAlgorithm:
        made[f"good-{algorithm.value}"] = builder.sign(
            algorithm, 0x8123, CertStatus(), now - 3600, now + 7 * 86400, now
        )
        for reason, code in ALLOWED.items():
            made[f"revoked-{reason}-{algorithm.value}"] = builder.sign(
                algorithm,
                0x8123,
                CertStatus(True, now - 99, code),
                now - 3600,
                now + 7 * 86400,
                now,
            )
    made.update(
        malformed=r.MALFORMED_REQUEST,
        unauthorized=r.UNAUTHORIZED,
        internal=r.INTERNAL_ERROR,
        try_later=r.TRY_LATER,
    )
    return made


def test_pkilint_finds_no_error_in_any_response_kind_f7(tmp_path) -> None:
    findings = {name: lint(der, tmp_path / f"{name}.der") for name, der in all_responses().items()}
    assert {name: f for name, f in findings.items() if f} == {}
    assert len(findings) == 2 * (1 + len(ALLOWED)) + 4


def test_pkilint_does_catch_a_broken_response(tmp_path) -> None:
    """The lint above can fail: a response whose nextUpdate precedes thisUpdate is an ERROR."""
    ca = DemoCA.create()
    certificate, key = ca.responder()
    builder = ResponseBuilder(ca.certificate, certificate, key_from_private(key))
    now = int(time.time())
    broken = builder.sign(HashAlgorithm.SHA1, 1, CertStatus(), now, now - 100, now)
    codes = [f["code"] for f in lint(broken, tmp_path / "broken.der")]
    assert "pkix.ocsp_negative_validity_period" in codes


def test_served_signer_answers_new_and_revoked_serials(tmp_path) -> None:
    """With the signer in `certstatus serve`, `certstatus add` and `revoke` from another process
    become authoritative answers without any other step (R2 at the scale of one node)."""
    deployment = make_deployment(tmp_path / "ca", run_signer=True)
    cli = [sys.executable, "-m", "certstatus.cli"]
    env = {**os.environ, "CERTSTATUS_CONFIG": str(deployment.config_path)}
    with serving(deployment):
        leaf = deployment.write_leaf(deployment.leaf())
        added = subprocess.run(
            [*cli, "add", str(leaf)], env=env, capture_output=True, text=True, check=False
        )
        assert added.returncode == 0, added.stderr
        args = check_args(deployment, leaf, "sha256", "CAfile")
        assert wait_for_status(args, deployment.url, leaf, "good")
        revoked = subprocess.run(
            [
                *cli,
                "revoke",
                "--issuer",
                "demo",
                "--reason",
                "keyCompromise",
                format(int(leaf.stem, 16), "x"),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert revoked.returncode == 0, revoked.stderr
        assert wait_for_status(args, deployment.url, leaf, "revoked")


def wait_for_status(
    args: list[str], url: str, leaf: Path, status: str, timeout: float = 15
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = openssl_ocsp(*args, "-url", url)
        if f"{leaf}: {status}" in result.stdout and "Response verify OK" in result.stderr:
            return True
        time.sleep(0.2)
    return False


def test_slow_header_client_is_disconnected(tmp_path) -> None:
    """A client that trickles its headers (slowloris) is cut off after request_timeout."""
    import socket

    deployment = make_deployment(tmp_path / "ca")
    text = deployment.config_path.read_text()
    deployment.config_path.write_text(
        text.replace("[responder]\n", '[responder]\nrequest_timeout = "1s"\n')
    )
    with serving(deployment) as process:
        with socket.create_connection(("127.0.0.1", deployment.port), timeout=0.5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes the headers
            started = time.monotonic()
            closed = False
            while not closed and time.monotonic() - started < 12:
                try:
                    closed = sock.recv(4096) == b""
                except TimeoutError:
                    continue  # still open
                except ConnectionResetError:
                    closed = True
        assert closed, "the server kept a connection with unfinished headers open"
        # and it still serves well-behaved clients
        wait_ready(deployment.url, process)


@pytest.mark.parametrize(
    ("kind", "expected"), [("good", "good"), ("revoked", "revoked"), ("precert", "good")]
)
def test_gnutls_ocsptool_verifies_responses_f7(live, kind, expected) -> None:
    """A second real client (GnuTLS), so no one TLS stack's leniency hides an encoding error."""
    deployment, paths = live
    result = subprocess.run(
        [
            shutil.which("ocsptool") or "ocsptool",
            f"--ask={deployment.url}",
            "--load-issuer",
            str(deployment.dir / "issuer.pem"),
            "--load-cert",
            str(paths[kind]),
            "--load-trust",
            str(deployment.dir / "issuer.pem"),
            "--outfile",
            os.devnull,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verifying OCSP Response: Success." in result.stdout
    assert f"Certificate Status: {expected}" in result.stdout


def test_head_over_http_matches_get_r1(live, tmp_path) -> None:
    """HEAD through the real server: the GET's headers and Content-Length, no body."""
    import http.client

    deployment, paths = live
    request = tmp_path / "req.der"
    made = openssl_ocsp(
        "-issuer", str(deployment.dir / "issuer.pem"), "-cert", str(paths["good"]),
        "-no_nonce", "-reqout", str(request),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    path = "/" + base64.b64encode(request.read_bytes()).decode()
    answers = {}
    for method in ("GET", "HEAD"):
        conn = http.client.HTTPConnection("127.0.0.1", deployment.port, timeout=5)
        conn.request(method, path)
        response = conn.getresponse()
        answers[method] = (response.status, dict(response.getheaders()), response.read())
        conn.close()
    (get_status, get_headers, body), (head_status, head_headers, empty) = answers.values()
    assert get_status == head_status == 200 and empty == b"" and len(body) > 100
    assert head_headers["content-length"] == get_headers["content-length"] == str(len(body))
    assert head_headers["etag"] == get_headers["etag"]
