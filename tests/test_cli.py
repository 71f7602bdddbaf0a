"""The command line as an operator meets it: the demo end to end (files, the printed openssl
command, Ctrl-C, a second run reusing the directory), and clear errors with exit status 2."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from certstatus.config import load_config
from tests.conftest import free_port, wait_ready

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "certstatus.cli"]


def start_demo(directory: Path, port: int, certs: int = 300) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *CLI,
            "demo",
            "--dir",
            str(directory),
            "--listen",
            f"127.0.0.1:{port}",
            "--certs",
            str(certs),
            "--api-listen",
            f"127.0.0.1:{free_port()}",  # a reused directory keeps its own
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "COLUMNS": "400"},
    )


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Ctrl-C, as a terminal sends it to the whole process group; kill if that does not work."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        return process.communicate(timeout=30)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.communicate(timeout=30)


def terminate_first(process: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM to the first process alone, as `kill PID` or a supervisor sends it (its server
    and roles must not outlive it); kill the group if that does not work."""
    try:
        process.terminate()
        return process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.communicate(timeout=30)


def children_alive(pgid: int, grace: float = 10) -> list[str]:
    """Processes left in the demo's process group once `grace` seconds have passed."""
    deadline = time.monotonic() + grace
    while (alive := _group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def _group(pgid: int) -> list[str]:
    alive = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.getpgid(int(proc.name)) == pgid:
                    alive.append(proc.name)
            except ProcessLookupError:
                pass
    return alive


def test_demo_end_to_end(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    port = free_port()
    process = start_demo(directory, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}/", process, timeout=60)
        for name in ("issuer.pem", "responder.pem", "certstatus.toml"):
            assert (directory / name).is_file()
        good = list((directory / "certs").glob("*.pem"))
        revoked = list((directory / "certs" / "revoked").glob("*.pem"))
        assert good and len(revoked) == 3  # 1% of 300
        # revoked and sample certificates over both CRL partitions, and both CRLs list some
        assert {cdp_partition(p) for p in good} == {0, 1}
        assert {cdp_partition(p) for p in revoked} == {0, 1}
        for partition in (0, 1):
            assert crl_entries(f"http://127.0.0.1:{port}/crl/demo/{partition}.crl") > 0
        monitor = load_config(directory / "certstatus.toml").monitor.listen
        deadline = time.monotonic() + 30
        while True:  # the demo runs the monitor too: its status page answers
            try:
                with urllib.request.urlopen(f"http://{monitor}/", timeout=2) as page:
                    assert "certstatus status" in page.read().decode()
                    break
            except OSError:
                assert time.monotonic() < deadline, "the demo's status page never answered"
                time.sleep(0.3)
    finally:
        out, err = stop(process)
    assert f"status page (the monitor): http://{monitor}/" in err
    assert process.returncode == 0, err
    assert "stopped cleanly" in err and "Traceback" not in err
    # shutdown messages are true: every role stopped when told, none was killed
    assert "did not stop" not in err and "refused to gracefully stop" not in out + err
    assert children_alive(process.pid) == []
    commands = [line for line in out.splitlines() if line.startswith("openssl ocsp")]
    assert len(commands) == 2
    # the printed CRL check keeps what it fetches inside the demo directory
    [crl_check] = [line for line in out.splitlines() if line.startswith("curl -s $(")]
    api_commands = [line for line in out.splitlines() if line.startswith("curl -sS --cacert")]
    assert len(api_commands) == 2 and "application/x-pem-file" in api_commands[0]
    assert (directory / "api-client.key").stat().st_mode & 0o777 == 0o600
    assert "/tmp/demo.crl" not in crl_check and str(directory.resolve()) in crl_check
    assert err.index("serving OCSP") > err.index("CRLs (")

    # the printed "good" sample is revoked by hand: a reused directory must not offer it again
    first_good = commands[0].split(" -cert ", 1)[1].split()[0]
    serial = Path(first_good).stem
    subprocess.run(
        [*CLI, "revoke", "--config", str(directory / "certstatus.toml"), "--issuer", "demo",
         "--reason", "superseded", serial],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    # second run reuses the directory and its CA; the printed commands work against it
    issuer = (directory / "issuer.pem").read_bytes()
    again = start_demo(directory, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}/", again, timeout=60)
        commands = []  # what the second run prints
        assert again.stdout is not None
        deadline = time.monotonic() + 30
        while len(commands) < 2:
            line = again.stdout.readline()
            assert line and time.monotonic() < deadline, "no openssl commands printed"
            if line.startswith("openssl ocsp"):
                commands.append(line.strip())
        assert first_good not in commands[0]  # revoked since: another good sample
        for command, expected in zip(commands, ("good", "revoked"), strict=True):
            result = subprocess.run(
                shlex.split(command), capture_output=True, text=True, timeout=30, check=False
            )
            assert "Response verify OK" in result.stderr, result.stderr
            assert f": {expected}" in result.stdout
        # the printed issuance API commands: record (answerable within the wait), then revoke
        recorded = json.loads(_retry_curl(api_commands[0]))
        assert recorded["added"] == 1 and recorded["wait"]["satisfied"] is True
        revoked = json.loads(_retry_curl(api_commands[1]))
        assert revoked["revocations"][0]["outcome"] == "revoked"
    finally:
        out, err = terminate_first(again)
    assert again.returncode == 0, err
    assert "stopped cleanly" in err
    assert children_alive(again.pid) == []  # the server and its roles stopped with it
    assert "reusing" in err
    # it keeps its API listener, and says so when asked for another
    assert "--api-listen" in err and "applies to a new --dir" in err
    assert "signing 0/0" not in err and "0/0" not in err  # nothing due: no empty bar
    assert (directory / "issuer.pem").read_bytes() == issuer


def _retry_curl(command: str) -> str:
    """Run a printed curl command, waiting for the API's listener to come up."""
    deadline = time.monotonic() + 30
    while True:
        result = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=30, check=False
        )
        if result.returncode == 0 or time.monotonic() > deadline:
            assert result.returncode == 0, result.stderr
            return result.stdout
        time.sleep(0.3)


def cdp_partition(path: Path) -> int:
    """The CRL partition a demo certificate's CDP names (…/crl/demo/<partition>.crl)."""
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    [url] = [name.value for point in points for name in point.full_name or []]
    return int(url.rsplit("/", 1)[1].removesuffix(".crl"))


def crl_entries(url: str) -> int:
    """Revoked entries on the CRL served at url, waiting for it to be built."""
    from cryptography import x509

    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return len(list(x509.load_der_x509_crl(answer.read())))
        except OSError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.3)


def test_demo_refuses_a_bad_or_busy_listen_before_writing(tmp_path: Path) -> None:
    """Found after the directory was written, a bad --listen left a directory tied to it."""
    directory = tmp_path / "demo"
    for listen in ("nonsense", "127.0.0.1:0", "203.0.113.9:8080"):
        refused = subprocess.run(
            [*CLI, "demo", "--dir", str(directory), "--listen", listen, "--certs", "5"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert refused.returncode == 2, refused.stderr
        [line] = refused.stderr.splitlines()
        assert "--listen" in line and "Traceback" not in line
        assert not directory.exists()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = f"127.0.0.1:{holder.getsockname()[1]}"
        refused = subprocess.run(
            [*CLI, "demo", "--dir", str(directory), "--listen", busy, "--certs", "5"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert refused.returncode == 2
    [line] = refused.stderr.splitlines()
    assert "another server" in line and "serving" not in refused.stderr
    assert not directory.exists()


def test_demo_with_few_certificates_still_revokes_one(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    port = free_port()
    process = start_demo(directory, port, certs=50)
    try:
        wait_ready(f"http://127.0.0.1:{port}/", process, timeout=60)
    finally:
        out, err = stop(process)
    assert len(list((directory / "certs" / "revoked").glob("*.pem"))) == 1
    assert "SERIAL" not in out + err
    assert len([line for line in out.splitlines() if line.startswith("openssl ocsp")]) == 2


def run(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if config is not None:
        env["CERTSTATUS_CONFIG"] = str(config)
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_add_and_revoke_errors_are_clear(deployment) -> None:
    cfg = deployment.config_path
    missing = run("add", str(deployment.dir / "nope.pem"), config=cfg)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    leaf = deployment.write_leaf(deployment.leaf())
    assert run("add", str(leaf), config=cfg).returncode == 0
    again = run("add", str(leaf), config=cfg)
    assert again.returncode == 0 and "already known 1" in again.stdout
    serial = leaf.stem
    bad_reason = run(
        "revoke", "--issuer", "demo", "--reason", "certificateHold", serial, config=cfg
    )
    assert bad_reason.returncode == 2 and "R7" in bad_reason.stderr
    bad_time = run(
        "revoke",
        "--issuer",
        "demo",
        "--reason",
        "superseded",
        "--time",
        "yesterday",
        serial,
        config=cfg,
    )
    assert bad_time.returncode == 2 and "ISO 8601" in bad_time.stderr
    ok = run(
        "revoke",
        "--issuer",
        "demo",
        "--reason",
        "superseded",
        "--time",
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        serial,
        config=cfg,
    )
    assert ok.returncode == 0, ok.stderr
    stats = run("stats", config=cfg)
    assert "revoked: 1" in stats.stdout.replace("  ", "")
    for result in (missing, bad_reason, bad_time):
        assert "Traceback" not in result.stderr


def test_sign_command_signs_everything_due(deployment) -> None:
    ingest = deployment.ingest()
    ingest.add_certificates([(deployment.leaf(), "a"), (deployment.leaf(), "b")], int(time.time()))
    result = run("sign", config=deployment.config_path)
    assert result.returncode == 0, result.stderr
    assert "stored 2" in result.stdout
    assert deployment.store().counts()["responses"] == 2


def test_demo_with_a_cache_in_front(tmp_path: Path) -> None:
    """`demo --cache`: a local Varnish answers from cache on the second request, the monitor
    watches through it, and nothing of it is left after Ctrl-C."""
    from cryptography import x509

    from tests.cachetier import fetch, get_path

    directory = tmp_path / "demo"
    port = free_port()
    process = subprocess.Popen(
        [*CLI, "demo", "--dir", str(directory), "--listen", f"127.0.0.1:{port}", "--certs",
         "50", "--cache"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "COLUMNS": "400"},
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}/", process, timeout=60)
        config = load_config(directory / "certstatus.toml")
        [cache] = config.caches
        assert [t.kind for t in config.monitor.targets] == ["cdn", "origin"]
        issuer = x509.load_pem_x509_certificate((directory / "issuer.pem").read_bytes())
        leaf = x509.load_pem_x509_certificate(
            next((directory / "certs").glob("*.pem")).read_bytes()
        )
        path = get_path(leaf, issuer)
        deadline = time.monotonic() + 30
        while fetch(cache.url, path).status != 200 or fetch(cache.url, path).cache != "HIT":
            assert time.monotonic() < deadline, "the demo's cache never answered from cache"
            time.sleep(0.3)
        assert fetch(cache.url, path).ocsp_status() == "good"
    finally:
        _, err = stop(process)
    assert f"cache (Varnish) on {cache.url}" in err
    assert "Traceback" not in err
    leftover = subprocess.run(
        ["pgrep", "-f", str(directory)], capture_output=True, text=True, check=False
    )
    assert leftover.stdout.strip() == ""


def test_a_second_server_on_a_held_port_is_refused(deployment) -> None:
    """granian binds with SO_REUSEPORT: without the check, a second `serve` on the same port
    would quietly take half the clients. It must fail naming the key, and the first server
    must keep every client."""
    from tests.conftest import serving

    with serving(deployment) as first:
        second = run("serve", config=deployment.config_path)
        assert second.returncode == 2, second.stderr
        assert "responder.listen" in second.stderr and "another server" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None
        with urllib.request.urlopen(deployment.url + "healthz", timeout=2) as answer:
            assert answer.status == 200
