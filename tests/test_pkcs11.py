"""Keys in hardware (R25, F8): responder and CA keys in a real SoftHSM2 token, named by RFC 7512
URIs, sign OCSP responses and CRLs that openssl and pkilint accept; every way the token can be
misconfigured is one start-up line naming the key and its URI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, load_der_public_key

from certstatus.keys.base import KeyUnavailableError
from certstatus.keys.pkcs11 import Pkcs11Key
from certstatus.keys.token_admin import generate_key
from certstatus.keys.uri import Pkcs11Uri
from certstatus.ocsp.certid import HashAlgorithm
from tests.conftest import Deployment
from tests.hsm import PIN_ENV, TOKEN, make_hsm_deployment, token_access

pytestmark = pytest.mark.skipif(
    shutil.which("softhsm2-util") is None, reason="needs SoftHSM2 (apt-get install softhsm2)"
)

OPENSSL = shutil.which("openssl") or "openssl"
BIN = Path(sys.executable).parent
CLI = [sys.executable, "-m", "certstatus.cli"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)


def verify_ocsp(
    deployment: Deployment, leaf: x509.Certificate, der: bytes, expect: str, digest: str = "sha1"
) -> None:
    """openssl ocsp checks the stored response's signature, chain and status."""
    directory = deployment.dir
    (directory / "resp.der").write_bytes(der)
    leaf_path = deployment.write_leaf(leaf)
    issuer = str(directory / "issuer.pem")
    result = run(OPENSSL, "ocsp", "-respin", str(directory / "resp.der"), "-issuer", issuer,
                 f"-{digest}", "-cert", str(leaf_path), "-CAfile", issuer, "-no_nonce")  # fmt: skip
    assert "Response verify OK" in result.stderr, result.stderr + result.stdout
    assert f"{leaf_path}: {expect}" in result.stdout, result.stdout


def lint(tool: str, der: bytes, path: Path, *args: str) -> list:
    path.write_bytes(der)
    result = run(str(BIN / tool), "lint", *args, "-s", "ERROR", "-f", "JSON", str(path))
    return json.loads(result.stdout)["results"]


@pytest.mark.parametrize("kind", ["p256", "p384", "rsa2048"])
def test_responses_and_crls_signed_in_the_token_verify_r25(tmp_path, monkeypatch, kind) -> None:
    deployment = make_hsm_deployment(tmp_path / "ca", monkeypatch, kind)
    store = deployment.store()
    good, revoked = deployment.good_and_revoked(store)  # signed in this process
    # and by two spawned signing processes, each opening its own session on the token
    later = deployment.leaf()
    deployment.ingest(store).add_certificates([(later, "l")], int(time.time()))
    with deployment.signer(store, processes=2) as signer:
        assert signer.sign_due() == 1
    for leaf, expect in ((good, "good"), (revoked, "revoked"), (later, "good")):
        for algorithm in HashAlgorithm:
            stored = store.response(1, leaf.serial_number, algorithm)
            assert stored is not None
            verify_ocsp(deployment, leaf, stored.der, expect, algorithm.value)
    findings = [
        f
        for result in lint(
            "lint_ocsp_response", store.response(1, good.serial_number).der, tmp_path / "r.der"
        )
        for f in result["finding_descriptions"]
    ]
    assert findings == []
    # the CRL, signed with the CA key in the token
    service = deployment.crl_service(store)
    [result] = service.build_due(force=True)
    assert result.published, result.rejections
    der = store.current_crl(service.issuers[0].id, 0).der
    crl_path = tmp_path / "0.crl"
    assert lint("lint_crl", der, crl_path, "-t", "CRL", "-p", "BR") == []
    verify = run(OPENSSL, "crl", "-inform", "DER", "-in", str(crl_path), "-CAfile",
                 str(deployment.dir / "issuer.pem"), "-noout")  # fmt: skip
    assert "verify OK" in verify.stdout + verify.stderr
    assert [e.serial_number for e in x509.load_der_x509_crl(der)] == [revoked.serial_number]
    store.close()


def check_config(deployment: Deployment) -> subprocess.CompletedProcess[str]:
    return run(*CLI, "check-config", "--config", str(deployment.config_path))


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in result.stderr
    return lines[0]


def test_token_start_up_errors_are_one_line_naming_the_uri_f8(tmp_path, monkeypatch) -> None:
    deployment = make_hsm_deployment(tmp_path / "ca", monkeypatch)
    assert check_config(deployment).returncode == 0
    text = deployment.config_path.read_text()
    uri = "pkcs11:token=certstatus;object=responder;type=private"
    assert uri in text

    monkeypatch.setenv(PIN_ENV, "0000-wrong")  # a wrong PIN: one line per key on the token
    result = check_config(deployment)
    assert result.returncode == 2
    responder_line, issuer_line = result.stderr.strip().splitlines()
    assert "issuers[0].responder_key: " in responder_line and uri in responder_line
    assert "issuers[0].issuer_key: " in issuer_line and "object=ca" in issuer_line
    for line in (responder_line, issuer_line):
        assert "login refused" in line and f"${PIN_ENV}" in line
    assert "0000-wrong" not in result.stderr
    monkeypatch.setenv(PIN_ENV, "4711-test-pin")

    missing = uri.replace("object=responder", "object=absent")
    deployment.config_path.write_text(text.replace(uri, missing))
    line = one_line(check_config(deployment))
    assert "issuers[0].responder_key: " in line and missing in line
    assert "no private key labelled 'absent'" in line

    # a key that is not the responder certificate's: the CA's own key
    other = uri.replace("object=responder", "object=ca")
    deployment.config_path.write_text(text.replace(uri, other))
    line = one_line(check_config(deployment))
    assert "issuers[0].responder_certificate: " in line
    assert "does not match its private key" in line and other in line

    deployment.config_path.write_text(text.replace("token=certstatus", "token=elsewhere"))
    result = check_config(deployment)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2  # both keys named, one line each
    assert all("no token labelled 'elsewhere'" in line for line in lines)

    deployment.config_path.write_text(text)
    monkeypatch.delenv(PIN_ENV)
    lines = check_config(deployment).stderr.strip().splitlines()
    assert len(lines) == 2
    assert all(f"${PIN_ENV} is not set" in line for line in lines)


def test_pkcs11_config_is_checked_before_any_token_is_opened(tmp_path, monkeypatch) -> None:
    deployment = make_hsm_deployment(tmp_path / "ca", monkeypatch)
    text = deployment.config_path.read_text()
    head, _, _ = text.partition("\n[pkcs11]")
    deployment.config_path.write_text(head)
    result = check_config(deployment)
    assert result.returncode == 2
    assert "pkcs11.module: required by issuers[0].responder_key" in result.stderr
    assert "pin-value" not in text
    for bad in (
        text.replace("object=responder;", "object=responder;pin-value=1234;"),
        text.replace(";type=private", ";type=private?pin-value=1234"),
    ):
        deployment.config_path.write_text(bad)
        result = check_config(deployment)
        assert "must not carry the PIN" in result.stderr
        assert "1234" not in result.stderr  # the URI holding it is not echoed


def test_an_extractable_token_key_is_warned_about_loudly_r25(tmp_path, monkeypatch) -> None:
    deployment = make_hsm_deployment(tmp_path / "ca", monkeypatch)
    access = token_access()
    loose = generate_key(access, TOKEN, "loose", "p256", extractable=True)
    assert Pkcs11Key(loose, access).warnings
    assert not Pkcs11Key(Pkcs11Uri.parse(f"pkcs11:token={TOKEN};object=ca"), access).warnings
    responder = deployment.ca.responder_for(
        load_der_public_key(Pkcs11Key(loose, access).public_key_der())
    )
    (deployment.dir / "responder.pem").write_bytes(responder.public_bytes(Encoding.PEM))
    text = deployment.config_path.read_text().replace("object=responder", "object=loose")
    deployment.config_path.write_text(text)
    result = check_config(deployment)
    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stderr and "CKA_EXTRACTABLE true" in result.stderr
    assert "issuers[0].responder_key" in result.stderr


def wait_until(condition, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def key_up(collector) -> dict[str, float]:
    return {
        sample.labels["role"]: sample.value
        for metric in collector.collect()
        if metric.name == "certstatus_signing_key_up"
        for sample in metric.samples
    }


def test_token_removed_mid_run_stops_signing_and_resumes_r25(tmp_path, monkeypatch, caplog) -> None:
    """The token's directory moved away under a running signer (two spawned processes, each
    with its own session) and its CRL builder: nothing is signed or stored, neither crashes,
    the metric says so; when the directory is back both resume by themselves."""
    import logging
    import threading

    from certstatus.signer.metrics import RolesCollector

    caplog.set_level(logging.INFO)
    deployment = make_hsm_deployment(tmp_path / "ca", monkeypatch)
    store = deployment.store()
    ingest = deployment.ingest(store)
    before = deployment.leaf()
    ingest.add_certificates([(before, "b")], int(time.time()))
    stop = threading.Event()
    signer = deployment.signer(store, processes=2)
    signer.max_backoff = 2.0
    crls = deployment.crl_service(store)
    crls.probe_every = 1.0
    collector = RolesCollector(store, deployment.materials(), {"demo": 1}, signer, None, crls)
    threads = [
        threading.Thread(target=signer.run, args=(stop,), daemon=True),
        threading.Thread(target=crls.run, args=(stop, 0.5), daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: store.response(1, before.serial_number) is not None, 30)
        assert wait_until(lambda: store.current_crl(1, 0) is not None, 30)
        assert key_up(collector) == {"ocsp": 1, "crl": 1}
        first_crl = store.current_crl(1, 0)

        during = deployment.leaf()  # issued by the CA key in the token, while it is there
        tokens = deployment.dir / "hsm" / "tokens"
        tokens.rename(tokens.with_name("tokens.away"))  # the token is gone
        ingest.add_certificates([(during, "d")], int(time.time()))
        ingest.revoke("demo", before.serial_number, "keyCompromise", int(time.time()))
        assert wait_until(lambda: key_up(collector) == {"ocsp": 0, "crl": 0}, 20)
        time.sleep(2)
        assert all(thread.is_alive() for thread in threads)
        assert store.response(1, during.serial_number) is None  # nothing signed
        with pytest.raises(KeyUnavailableError, match="object=ca"):
            crls.build_due(force=True)
        assert store.current_crl(1, 0) == first_crl  # nothing published without the key
        assert store.response(1, before.serial_number) is not None  # still served meanwhile
        assert "signing stopped" in caplog.text and "CRL signing stopped" in caplog.text
        assert caplog.text.count("signing stopped:") == 2  # logged once per role, not per try

        tokens.with_name("tokens.away").rename(tokens)  # and back
        assert wait_until(lambda: store.response(1, during.serial_number) is not None, 30)
        assert wait_until(lambda: key_up(collector) == {"ocsp": 1, "crl": 1}, 10)
        assert all(r.published for r in crls.build_due(force=True))
        assert "signing resumed" in caplog.text
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        signer.close()
    verify_ocsp(deployment, during, store.response(1, during.serial_number).der, "good")
    verify_ocsp(deployment, before, store.response(1, before.serial_number).der, "revoked")
    crl = x509.load_der_x509_crl(store.current_crl(1, 0).der)
    assert [e.serial_number for e in crl] == [before.serial_number]
    assert crl.is_signature_valid(deployment.ca.certificate.public_key())
    store.close()


def test_demo_pkcs11_signs_in_its_own_softhsm2_token_r25(tmp_path) -> None:
    """`certstatus demo --pkcs11`: a token in DIR/hsm holds both keys (no key file anywhere),
    and the printed openssl commands verify against the running demo."""
    import shlex

    from certstatus.ports import free_port
    from tests.conftest import wait_ready
    from tests.test_cli import start_demo, stop

    directory = tmp_path / "demo"
    port = free_port()
    process = subprocess.Popen(
        [*CLI, "demo", "--pkcs11", "--dir", str(directory), "--listen", f"127.0.0.1:{port}",
         "--certs", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}/", process, timeout=90)
        for name in ("certs", "issuer.pem", "responder.pem", "token.pin", "hsm/softhsm2.conf"):
            assert (directory / name).exists()
        # no signing key file: they are in the token (the issuance API's TLS keys are files)
        assert {p.name for p in directory.glob("*.key")} <= {"api-client.key", "api-server.key"}
        assert (
            not (directory / "issuer.key").exists() and not (directory / "responder.key").exists()
        )
        assert (directory / "token.pin").stat().st_mode & 0o077 == 0
        text = (directory / "certstatus.toml").read_text()
        assert 'responder_key = "pkcs11:token=certstatus-demo;object=responder' in text
        assert (directory / "token.pin").read_text() not in text
    finally:
        out, err = stop(process)
    assert process.returncode == 0, err
    assert "keys in the SoftHSM2 token" in err or "serving OCSP" in err
    commands = [line for line in out.splitlines() if line.startswith("openssl ocsp")]
    assert len(commands) == 2
    again = start_demo(directory, port)  # reused: the token is found again
    try:
        wait_ready(f"http://127.0.0.1:{port}/", again, timeout=90)
        for command, expected in zip(commands, ("good", "revoked"), strict=True):
            result = run(*shlex.split(command))
            assert "Response verify OK" in result.stderr, result.stderr
            assert f": {expected}" in result.stdout
    finally:
        out, err = stop(again)
    assert "keys in the SoftHSM2 token" in err and again.returncode == 0, err
