"""Shutdown messages must be true. `certstatus serve` with the signing roles beside it is
stopped by Ctrl-C (SIGINT to the whole process group) and by SIGINT to the server alone; the log
must not claim a role "did not stop within 40 s" nor that a worker "refused to gracefully stop",
and the stop must not wait out a kill timeout."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_deployment, wait_ready

pytestmark = pytest.mark.integration


def serve_and_interrupt(
    directory: Path, whole_group: bool, server: str = "granian"
) -> tuple[float, str]:
    """Start `serve` (signer beside it), SIGINT it as soon as it answers, and return how long
    it took to exit and everything it logged (granian logs to stdout, we to stderr)."""
    deployment = make_deployment(directory, run_signer=True)
    config = deployment.config_path
    config.write_text(
        config.read_text().replace("[responder]\n", f'[responder]\nserver = "{server}"\n')
    )
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
        stuck = []
        try:
            process.wait(timeout=6)
        except subprocess.TimeoutExpired:  # a worker is stuck: its threads' stacks, for the log
            stuck = ask_stuck_workers_for_stacks(process)
        log, _ = process.communicate(timeout=60)
        if stuck:
            log += f"\n[test] workers {stuck} still running 6 s after the stop (stacks above)\n"
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


def ask_stuck_workers_for_stacks(process: subprocess.Popen[str]) -> list[int]:
    """SIGUSR1 to each worker still running that handles it (the responder registers a
    stack dump on it as each worker is forked; to a process without it, it would be fatal
    and hide the hang)."""
    own = b"".join(os.fsencode(arg) + b"\0" for arg in process.args)  # type: ignore[union-attr]
    stuck = forked_children(process.pid, own)
    for pid in stuck:
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/status").read_text()
            caught = int(status.split("SigCgt:", 1)[1].split()[0], 16)
            if caught & (1 << (signal.SIGUSR1 - 1)):
                os.kill(pid, signal.SIGUSR1)
    return stuck


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


@pytest.mark.parametrize(
    ("server", "attempt"), [("granian", 0), ("granian", 1), ("granian", 2), ("native", 0)]
)
def test_sigint_to_the_server_alone_stops_every_worker_gracefully(
    tmp_path: Path, server: str, attempt: int
) -> None:
    took, log = serve_and_interrupt(tmp_path / "ca", whole_group=False, server=server)
    assert "refused to gracefully stop" not in log and "Killing" not in log, log
    assert "did not stop" not in log and "still running" not in log, log
    assert took < 8, f"stopping took {took:.1f} s:\n{log}"


@pytest.mark.parametrize(("server", "attempt"), [("granian", 0), ("granian", 1), ("native", 0)])
def test_ctrl_c_stops_the_signing_roles_without_a_false_kill(
    tmp_path: Path, server: str, attempt: int
) -> None:
    took, log = serve_and_interrupt(tmp_path / "ca", whole_group=True, server=server)
    assert "did not stop" not in log and "still running" not in log, log
    assert "killing" not in log.lower(), log
    assert "Traceback" not in log, log
    assert took < 8, f"stopping took {took:.1f} s:\n{log}"


def _exit_at_once() -> None:
    pass


def test_a_worker_reaped_by_another_thread_is_not_taken_for_running() -> None:
    """The state granian's stop path met under load: another thread (granian's watcher) has
    reaped the worker but not yet recorded its exit code. multiprocessing's is_alive() then
    answers True (no child left to wait for), and granian killed a worker that had stopped and
    logged that it refused to. still_running() answers False, and True while one runs."""
    from certstatus.responder.server import still_running

    context = multiprocessing.get_context("fork")
    running = context.Process(target=time.sleep, args=(30,))
    running.start()
    try:
        assert still_running(running) and running.is_alive()
    finally:
        running.kill()
        running.join()
    stopped = context.Process(target=_exit_at_once)
    stopped.start()
    multiprocessing.connection.wait([stopped.sentinel], timeout=10)
    os.waitpid(stopped.pid, 0)  # the other reaper, before the exit code is recorded
    assert stopped.is_alive()  # the false answer granian acted on
    assert not still_running(stopped)


def test_serve_fails_when_its_signing_roles_die(tmp_path: Path) -> None:
    """A responder whose signer is gone stops, and says so with a failure status: exit 0
    here would keep a supervisor (systemd Restart=on-failure) from restarting it."""
    deployment = make_deployment(tmp_path / "ca", run_signer=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "certstatus.cli", "serve", "--config", str(deployment.config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_ready(deployment.url, process, timeout=60)
        roles = [
            pid
            for pid in children(process.pid)
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert roles, "no spawned signing-roles process"
        for pid in roles:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: signing roles exited with signal 9; the server stopped with it (see the log above)"
    ], err


def test_a_taken_signing_metrics_port_is_refused_before_serving(tmp_path: Path) -> None:
    deployment = make_deployment(tmp_path / "ca", run_signer=True)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        text = deployment.config_path.read_text()
        deployment.config_path.write_text(
            text.replace("[signing]\n", f'[signing]\nmetrics_listen = "127.0.0.1:{port}"\n', 1)
        )
        assert f"127.0.0.1:{port}" in deployment.config_path.read_text()
        done = subprocess.run(
            [sys.executable, "-m", "certstatus.cli", "serve", "--config",
             str(deployment.config_path)],
            check=False, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("error: ") and "signing.metrics_listen: another server" in line
    assert "serving" not in done.stderr


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def test_workers_stop_when_their_server_is_killed_outright(tmp_path: Path) -> None:
    """SIGKILL (or the OOM killer) gives the native server no chance to stop its workers.
    They used to serve on, holding the port, so a supervisor's restart could not bind it:
    each worker notices its server is gone within about a second and stops."""
    deployment = make_deployment(tmp_path / "ca")
    process = subprocess.Popen(
        [sys.executable, "-m", "certstatus.cli", "serve", "--config", str(deployment.config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_ready(deployment.url, process, timeout=60)
        workers = children(process.pid)
        assert workers, "no workers"
        process.kill()
        process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while (alive := [w for w in workers if Path(f"/proc/{w}").exists()]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert alive == [], "workers outlived their server"
        with socket.socket() as probe:  # the port is free for the server's restart
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", deployment.port))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
