"""Responder-certificate rotation (R6, R21) under live traffic: `responder-cert request` and
`install --self-issue` while `certstatus serve` (with its signing roles) answers a client that
verifies every answer. The signers switch to the new pair by themselves; answers signed with
the old certificate keep verifying; no answer fails."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp

from certstatus.keys.certificates import responder_problems
from tests.conftest import Deployment, make_deployment, serving
from tests.test_responder_http import request_der

CLI = [sys.executable, "-m", "certstatus.cli"]
OPENSSL = shutil.which("openssl") or "openssl"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, check=False)


def verified(deployment: Deployment, serial: int, revoked: bool | None, algorithm) -> int:
    """Ask the responder over HTTP and verify the answer as a relying party would; returns the
    serial of the responder certificate that signed it. AssertionError on any failure."""
    der = request_der(deployment.ca.certificate, serial, algorithm)
    post = urllib.request.Request(deployment.url, der, {"content-type": "application/ocsp-request"})
    with urllib.request.urlopen(post, timeout=10) as answer:
        response = ocsp.load_der_ocsp_response(answer.read())
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    [responder] = response.certificates
    responder.verify_directly_issued_by(deployment.ca.certificate)
    now = dt.datetime.now(dt.UTC)
    assert responder_problems(responder, deployment.ca.certificate, now, dt.timedelta(0)) == []
    public = responder.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(
            response.signature,
            response.tbs_response_bytes,
            ec.ECDSA(response.signature_hash_algorithm),
        )
    else:
        assert isinstance(public, rsa.RSAPublicKey)
        public.verify(
            response.signature,
            response.tbs_response_bytes,
            padding.PKCS1v15(),
            response.signature_hash_algorithm,
        )
    assert response.serial_number == serial
    assert response.this_update_utc <= now <= response.next_update_utc
    good, bad = ocsp.OCSPCertStatus.GOOD, ocsp.OCSPCertStatus.REVOKED
    expected = {good, bad} if revoked is None else {bad} if revoked else {good}
    assert response.certificate_status in expected  # None: being revoked, either is right
    return responder.serial_number


def openssl_check(deployment: Deployment, leaf: x509.Certificate, expect: str) -> None:
    path = deployment.write_leaf(leaf)
    issuer = str(deployment.dir / "issuer.pem")
    result = subprocess.run(
        [OPENSSL, "ocsp", "-issuer", issuer, "-cert", str(path), "-CAfile", issuer,
         "-no_nonce", "-url", deployment.url],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert "Response verify OK" in result.stderr, result.stderr
    assert f"{path}: {expect}" in result.stdout, result.stdout


def make(kind: str, directory: Path, monkeypatch) -> Deployment:
    if kind == "pem":
        return make_deployment(directory, run_signer=True)
    from tests.hsm import make_hsm_deployment

    return make_hsm_deployment(directory, monkeypatch, run_signer=True)


@pytest.mark.parametrize("kind", ["pem", "pkcs11"])
def test_rotation_under_live_traffic_loses_no_answer_r6_r21(tmp_path, monkeypatch, kind) -> None:
    if kind == "pkcs11" and shutil.which("softhsm2-util") is None:
        pytest.skip("needs SoftHSM2")
    deployment = make(kind, tmp_path / "ca", monkeypatch)
    store = deployment.store()
    ingest = deployment.ingest(store)
    old_serial = x509.load_pem_x509_certificate(
        (deployment.dir / "responder.pem").read_bytes()
    ).serial_number
    # (leaf, revoked) pairs the client checks, appended once signed
    known: list[tuple[x509.Certificate, bool]] = []
    revoked: set[int] = set()
    changing: set[int] = set()  # revoked in the database, maybe not yet signed
    failures: list[str] = []
    seen: dict[int, int] = {}
    stop = threading.Event()

    def client() -> None:
        n = 0
        while not stop.is_set():
            for leaf, _ in list(known):
                n += 1
                algorithm = hashes.SHA1() if n % 2 else hashes.SHA256()
                is_revoked = (
                    None if leaf.serial_number in changing else leaf.serial_number in revoked
                )
                try:
                    signer = verified(deployment, leaf.serial_number, is_revoked, algorithm)
                except Exception as exc:  # every failure is kept and reported
                    failures.append(f"{leaf.serial_number:x}: {type(exc).__name__}: {exc}")
                    continue
                seen[signer] = seen.get(signer, 0) + 1

    def add_signed(count: int) -> list[x509.Certificate]:
        leaves = [deployment.leaf() for _ in range(count)]
        ingest.add_certificates([(leaf, "t") for leaf in leaves], int(time.time()))
        deadline = time.monotonic() + 30
        while any(store.response(1, leaf.serial_number) is None for leaf in leaves):
            assert time.monotonic() < deadline, "not signed within 30 s"
            time.sleep(0.05)
        known.extend((leaf, False) for leaf in leaves)
        return leaves

    with serving(deployment):
        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        try:
            before = add_signed(4)
            time.sleep(1)
            config = str(deployment.config_path)
            requested = cli("responder-cert", "request", "--config", config, "--issuer", "demo")
            assert requested.returncode == 0, requested.stderr
            assert (deployment.dir / "responder.csr").exists()
            add_signed(2)  # the old key still signs between request and install
            installed = cli(
                "responder-cert", "install", "--config", config, "--issuer", "demo", "--self-issue"
            )
            assert installed.returncode == 0, installed.stderr
            new_serial = x509.load_pem_x509_certificate(
                (deployment.dir / "responder.pem").read_bytes()
            ).serial_number
            assert new_serial != old_serial
            # new certificates and a revocation get signed with the new pair, within seconds
            deadline = time.monotonic() + 30
            while seen.get(new_serial, 0) == 0:
                assert time.monotonic() < deadline, f"new certificate never used: {seen}"
                add_signed(1)
            target = before[0]
            changing.add(target.serial_number)
            ingest.revoke("demo", target.serial_number, "superseded", int(time.time()))
            while (
                ocsp.load_der_ocsp_response(store.response(1, target.serial_number).der)
            ).certificate_status != ocsp.OCSPCertStatus.REVOKED:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            revoked.add(target.serial_number)
            changing.discard(target.serial_number)
            time.sleep(2)
        finally:
            stop.set()
            thread.join(30)
        # and openssl agrees, for an answer signed with each certificate
        openssl_check(deployment, before[1], "good")  # signed with the old certificate
        openssl_check(deployment, target, "revoked")  # signed with the new one
    store.close()
    assert failures == []
    assert seen.get(old_serial, 0) > 0 and seen.get(new_serial, 0) > 0, seen
    assert sum(seen.values()) >= 50
    retired = sorted(p.name for p in deployment.dir.glob("responder.pem.retired-*"))
    assert len(retired) == 1


def test_install_refuses_a_certificate_that_is_not_for_the_new_key_r6(tmp_path) -> None:
    deployment = make_deployment(tmp_path / "ca")
    config = str(deployment.config_path)
    absent = cli("responder-cert", "install", "--config", config, "--issuer", "demo",
                 str(deployment.dir / "responder.pem"))  # fmt: skip
    assert absent.returncode == 2 and "run `certstatus responder-cert request" in absent.stderr
    assert cli("responder-cert", "request", "--config", config, "--issuer", "demo").returncode == 0
    pending = deployment.dir / "responder.key.next"
    assert pending.stat().st_mode & 0o777 == 0o600
    again = cli("responder-cert", "request", "--config", config, "--issuer", "demo")
    assert again.returncode == 2 and "a pending key already exists" in again.stderr
    # the current certificate is for the current key, not the pending one
    wrong = cli("responder-cert", "install", "--config", config, "--issuer", "demo",
                str(deployment.dir / "responder.pem"))  # fmt: skip
    assert wrong.returncode == 2
    [line] = wrong.stderr.strip().splitlines()
    assert "is not for the pending key" in line
    # a CA certificate (wrong profile, not issued by... itself is, but not R6)
    ca = cli("responder-cert", "install", "--config", config, "--issuer", "demo",
             str(deployment.dir / "issuer.pem"))  # fmt: skip
    assert (
        ca.returncode == 2 and "extendedKeyUsage" in ca.stderr and "basicConstraints" in ca.stderr
    )
    assert pending.exists()  # nothing moved
    assert not list(deployment.dir.glob("*.retired-*"))
