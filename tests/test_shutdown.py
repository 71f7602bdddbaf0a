"""Shutdown messages must be true. `certstatus serve` with the signing roles beside it is
stopped by Ctrl-C (SIGINT to the whole process group) and by SIGINT to the server alone; the log
must not claim a role "did not stop within 40 s" nor that a worker "refused to gracefully stop",
and the stop must not wait out a kill timeout."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_deployment, wait_ready

pytestmark = pytest.mark.integration


def serve_and_interrupt(directory: Path, whole_group: bool) -> tuple[float, str]:
    """Start `serve` (signer beside it), SIGINT it as soon as it answers, and return how long
    it took to exit and everything it logged (granian logs to stdout, we to stderr)."""
    deployment = make_deployment(directory, run_signer=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "certstatus.cli", "serve", "--config", str(deployment.config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        if whole_group:
            wait_ready(deployment.url, process, timeout=60)
        else:
            # the moment a stop used to be lost: the workers just forked, loading the app
            wait_for_workers(process)
        started = time.monotonic()
        if whole_group:
            os.killpg(process.pid, signal.SIGINT)
        else:
            os.kill(process.pid, signal.SIGINT)
        log, _ = process.communicate(timeout=60)
        return time.monotonic() - started, log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def wait_for_workers(process: subprocess.Popen[str], count: int = 2, timeout: float = 60) -> None:
    """Until the server has forked `count` granian workers (children running our own command
    line, unlike the spawned roles and multiprocessing's resource tracker)."""
    own = b"".join(os.fsencode(arg) + b"\0" for arg in process.args)  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"serve exited: {process.communicate()[0]}"
        if len(forked_children(process.pid, own)) >= count:
            return
        time.sleep(0.01)
    raise TimeoutError(f"the server never started its workers: {process.pid}")


def forked_children(pid: int, cmdline: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # gone meanwhile
                status = (entry / "status").read_text()
                parent = int(status.split("PPid:", 1)[1].split()[0])
                if parent == pid and (entry / "cmdline").read_bytes() == cmdline:
                    found.append(int(entry.name))
    return found


@pytest.mark.parametrize("attempt", range(3))
def test_sigint_to_the_server_alone_stops_every_worker_gracefully(
    tmp_path: Path, attempt: int
) -> None:
    took, log = serve_and_interrupt(tmp_path / "ca", whole_group=False)
    assert "refused to gracefully stop" not in log and "Killing" not in log, log
    assert "did not stop" not in log, log
    assert took < 8, f"stopping took {took:.1f} s:\n{log}"


@pytest.mark.parametrize("attempt", range(2))
def test_ctrl_c_stops_the_signing_roles_without_a_false_kill(tmp_path: Path, attempt: int) -> None:
    took, log = serve_and_interrupt(tmp_path / "ca", whole_group=True)
    assert "did not stop" not in log and "killing" not in log.lower(), log
    assert "Traceback" not in log, log
    assert took < 8, f"stopping took {took:.1f} s:\n{log}"
