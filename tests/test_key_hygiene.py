"""Key hygiene (R25): a PEM key file others may read is refused at start-up, and no key
material, token PIN or database password appears in what certstatus prints or serves: logs,
/metrics, /sources and error messages, grepped from real runs."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from certstatus.ports import free_port
from tests.conftest import make_deployment, stop_process, wait_ready
from tests.hsm import PIN, PIN_ENV, make_hsm_deployment

CLI = [sys.executable, "-m", "certstatus.cli"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_key_file_others_may_read_is_refused_r25(tmp_path: Path, mode: int) -> None:
    deployment = make_deployment(tmp_path / "ca")
    key = deployment.dir / "responder.key"
    key.chmod(mode)
    result = run_cli("check-config", "--config", str(deployment.config_path))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "issuers[0].responder_key: " in line
    assert f"key file {key} is readable by group or others (mode {mode:04o})" in line
    assert line.endswith(f"run chmod 600 {key}")
    sign = run_cli("sign", "--config", str(deployment.config_path))
    assert sign.returncode == 2 and "chmod 600" in sign.stderr
    key.chmod(0o600)
    assert run_cli("check-config", "--config", str(deployment.config_path)).returncode == 0


def secrets_of_pem(path: Path) -> list[str]:
    """What would betray a PEM key: its base64 lines, its private value in hex and decimal."""
    data = path.read_bytes()
    lines = [line for line in data.decode().splitlines() if "-----" not in line]
    key = serialization.load_pem_private_key(data, password=None)
    value = key.private_numbers().private_value  # type: ignore[union-attr]
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return [*lines, f"{value:x}", str(value), base64.b64encode(der).decode()[:40]]


def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.read().decode(errors="replace")
    except OSError as exc:
        return str(exc)


def run_serving(config: Path, urls: list[str], seconds: float = 4) -> str:
    """`certstatus -v serve` (with its signing roles); every URL fetched; all output."""
    process = subprocess.Popen(
        [*CLI, "-v", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    bodies = []
    try:
        wait_ready(urls[0], process)
        time.sleep(seconds)
        bodies = [fetch(url) for url in urls]
    finally:
        stop_process(process)
    out = process.stdout.read() if process.stdout else ""
    return out + "\n".join(bodies)


def with_metrics(config: Path) -> str:
    port = free_port()
    text = config.read_text().replace(
        "[signing]\n", f'[signing]\nmetrics_listen = "127.0.0.1:{port}"\n'
    )
    config.write_text(text)
    return f"http://127.0.0.1:{port}/metrics"


def test_no_key_material_pin_or_password_in_output_r25(tmp_path: Path, monkeypatch) -> None:
    captured: list[str] = []

    # PEM keys: a full run (sign, serve with its signing roles, /metrics, /sources)
    pem = make_deployment(tmp_path / "pem", run_signer=True)
    store = pem.store()
    pem.ingest(store).add_certificates([(pem.leaf(), "x")], int(time.time()))
    store.close()
    secrets = secrets_of_pem(pem.dir / "responder.key") + secrets_of_pem(pem.dir / "issuer.key")
    metrics = with_metrics(pem.config_path)
    captured.append(run_cli("-v", "sign", "--config", str(pem.config_path)).stderr)
    captured.append(
        run_serving(
            pem.config_path, [pem.url + "readyz", metrics, pem.url + "sources", pem.url + "metrics"]
        )
    )
    # a key that does not parse: the error names the file, never its content
    broken = pem.dir / "responder.key"
    broken.write_bytes(broken.read_bytes()[:-80] + b"\n-----END PRIVATE KEY-----\n")
    captured.append(run_cli("check-config", "--config", str(pem.config_path)).stderr)

    # a token: the same run, then a wrong PIN
    hsm = make_hsm_deployment(tmp_path / "hsm", monkeypatch, run_signer=True)
    store = hsm.store()
    hsm.ingest(store).add_certificates([(hsm.leaf(), "y")], int(time.time()))
    store.close()
    metrics = with_metrics(hsm.config_path)
    captured.append(run_cli("-v", "sign", "--config", str(hsm.config_path)).stderr)
    captured.append(
        run_serving(hsm.config_path, [hsm.url + "readyz", metrics, hsm.url + "sources"])
    )
    monkeypatch.setenv(PIN_ENV, "9999-wrong-pin")
    captured.append(run_cli("-v", "sign", "--config", str(hsm.config_path)).stderr)
    monkeypatch.setenv(PIN_ENV, PIN)

    # a PostgreSQL URL with a password, at a port nobody listens on
    password = "pw-Zq81-secret"
    text = pem.config_path.read_text().replace(
        'database = "certstatus.db"',
        f'database = "postgresql://certstatus:{password}@127.0.0.1:{free_port()}/certstatus"',
    )
    pem.config_path.write_text(text)
    for command in ("stats", "sign"):
        captured.append(run_cli(command, "--config", str(pem.config_path), timeout=60).stderr)

    output = "\n".join(captured)
    # the runs did run and were seen: metrics scraped, the wrong PIN and the dead database
    # reported, the broken key refused
    assert output.count("certstatus_signing_key_up{role=") >= 2
    assert "login refused" in output
    assert "is not an unencrypted PEM private key" in output
    assert "error: " in captured[-1] and "error: " in captured[-2]
    assert "database primary (127.0.0.1:" in output and "unavailable" in output
    for secret in [*secrets, PIN, "9999-wrong-pin", password]:
        assert secret not in output, f"secret leaked: {secret[:12]}..."
