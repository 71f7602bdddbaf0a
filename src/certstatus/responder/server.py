"""Running the responder on an ASGI server, with the signing roles (and, in the demo, the
monitor) in processes beside it. What those roles are is assembled in `certstatus.wiring`."""

from __future__ import annotations

import errno
import faulthandler
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

from certstatus.config import Config, ConfigError
from certstatus.responder.app import CONFIG_ENV
from certstatus.responder.stops import hold_stop_signals, release_stop_signals
from certstatus.wiring import (
    api_process,
    check_signing_keys,
    monitor_process,
    register_public,
    signing_roles_process,
)

log = logging.getLogger("certstatus.serve")
APP_FACTORY = "certstatus.responder.app:create_app"  # ASGI (uvicorn)
RSGI_FACTORY = "certstatus.responder.rsgi:create_rsgi_app"  # granian


def _default_stop_signals() -> None:
    """In a worker just forked from the server: SIGTERM and SIGINT back to their defaults,
    and still held (blocked) until the worker's event loop runs.

    The fork copies the server's Python handlers (granian's), which only set a flag in the
    worker's copy of the server object: a stop arriving then was lost, and the server waited
    out workers_kill_timeout and logged that it killed a worker that "refused to gracefully
    stop". The defaults replace them; a stop in the instant between the fork and this hook is
    held by the kernel, not lost, since the server blocks stops across the fork.

    They stay held while the worker loads the app and granian starts serving, until the
    worker's loop runs: granian's handlers reach its uvloop loop through a wakeup descriptor
    the loop sets up only while it runs, so a stop arriving between the handlers' installation
    and the loop's start was noted by nobody, and the worker served on until killed (seen
    under load: a worker slower to start than the one that answered /readyz, Ctrl-C, killed
    10 s later). Every thread the worker starts inherits the held mask, so a stop goes to the
    main thread once it releases it from within the running loop, and becomes granian's
    graceful stop. A stop during loading therefore waits for the load (normally well under a
    second); a load that hangs is killed after workers_kill_timeout, and says so."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # stacks on request from the start, a worker stuck while it loads the app included
    if sys.stderr is not None:
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)


def still_running(process: multiprocessing.process.BaseProcess) -> bool:
    """Whether a worker process still runs, asked so that a second reaper cannot make a dead
    one look alive.

    granian reaps each worker in a watcher thread (a blocking join) while its stop path joins
    the same process with a timeout and then asks is_alive(): when the watcher has reaped the
    child but not yet recorded its exit code, is_alive() finds no child to wait for and
    answers True; granian then waits 1 ms, asks again, and on a loaded machine kills a
    worker that had already stopped, logging that it "refused to gracefully stop" (seen in
    CI, the whole stop taking 0.5 s). The sentinel pipe reaches end-of-file only when the
    process has exited, whoever reaps it."""
    if not process.is_alive():
        return False
    return not multiprocessing.connection.wait([process.sentinel], timeout=0)


def _granian_server() -> type:
    """granian's multi-process server, its workers asked whether they run by still_running."""
    from granian.server.mp import MPServer, WorkerProcess

    class Worker(WorkerProcess):
        def is_alive(self) -> bool:
            return still_running(self.inner)

        def _watcher(self) -> None:
            self.inner.join()
            try:
                forget_worker(self.inner.pid)  # before granian starts the next one
            finally:
                super()._watcher()  # its join returns at once; then granian's bookkeeping

    class Server(MPServer):
        def _spawn_worker(self, *args: Any, **kwargs: Any) -> WorkerProcess:
            worker = super()._spawn_worker(*args, **kwargs)
            worker.__class__ = Worker  # the same object, with the stricter question
            return worker

    return Server


def forget_worker(pid: int | None) -> None:
    """Drop the gauges of a worker that exited from the merged /metrics (metrics.py's live
    modes): a worker killed while a source was stale would otherwise report it stale, or
    the server unready, beside the living workers, until the server restarts."""
    if pid is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client.multiprocess import mark_process_dead

        with suppress(OSError):  # never worth stopping the server over
            mark_process_dead(pid)


def run_server(config: Config) -> None:
    """Serve until interrupted, with the workers' metrics in a fresh directory they share,
    and the admin listener (responder/admin.py), when configured, in a process beside them
    that reads that directory."""
    metrics_dir = tempfile.mkdtemp(prefix="certstatus-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # before the admin process is spawned
    try:
        with ExitStack() as admin:
            if config.responder.admin_listen is not None:
                from certstatus.responder.admin import admin_process

                admin.enter_context(companion(config, admin_process, "admin listener"))
                _wait_listening(config.responder.admin_address or ("", 0))
            _run_server(config)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _wait_listening(address: tuple[str, int], timeout: float = 30) -> None:
    """Until the admin listener accepts: a server that answers /readyz has its admin port
    too (a scrape or a test right after start must not be refused). If the admin process
    dies meanwhile, its companion watch stops this server."""
    host, port = address
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((wildcard.get(host, host), port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"responder.admin_listen: nothing listens on {host}:{port} after {timeout:.0f} s"
                ) from None
            time.sleep(0.05)


def listen_problem(host: str, port: int) -> str | None:
    """Why a server could not take host:port, or None when it can.

    Another server already listening is asked by connecting, not by binding: granian binds with
    SO_REUSEPORT, so a second responder on a taken port would not fail, the kernel would split
    the clients between the two, silently, whatever databases they read (seen while
    benchmarking); and connections of a server just stopped may linger (FIN_WAIT2 while a client
    hangs) and must not block its restart. A trial bind first finds an address that is not this
    host's, a name that does not resolve, or a port the user may not take, before anything is
    started or written, and before any connection is tried."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as trial:
        trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            trial.bind(address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:  # not this host's address, or not ours to take
                return f"cannot listen on {host}:{port}: {exc.strerror}"
        else:
            return None
    # In use: by a server accepting there, or only by lingering connections of one just
    # stopped. Asked only now, so a connection never goes to an address not this host's.
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
    try:
        with socket.create_connection((wildcard.get(host, host), port), timeout=1):
            pass
    except OSError:
        return None  # nobody accepts there
    return (
        f"another server (another `certstatus serve`?) listens on {host}:{port}; "
        "stop it or choose another port"
    )


def ensure_companion_addresses_free(config: Config, with_monitor: bool) -> None:
    """The roles started beside the server bind their own addresses; one that is taken must
    be refused here, naming its key, not found by a role that dies after "serving"."""
    wanted = []
    if config.responder.run_signer and config.signing.metrics_listen:
        wanted.append(("signing.metrics_listen", config.signing.metrics_listen))
    if with_monitor:
        wanted.append(("monitor.listen", config.monitor.listen))
    problems = []
    for key, listen in wanted:
        host, _, port = listen.rpartition(":")
        problem = listen_problem(host.strip("[]"), int(port))
        if problem is not None:
            problems.append((key, problem))
    if problems:
        raise ConfigError(problems, config.path)


def ensure_listen_address_free(config: Config) -> None:
    """Refuse, naming the key, a listen address this server could not have to itself."""
    r = config.responder
    problems = []
    for key, address in (
        ("responder.listen", (r.listen_host, r.listen_port)),
        ("responder.admin_listen", r.admin_address),
    ):
        problem = None if address is None else listen_problem(*address)
        if problem is not None:
            problems.append((key, problem))
    if problems:
        raise ConfigError(problems, config.path)


def _run_server(config: Config) -> None:
    """The chosen server handles SIGINT/SIGTERM and drains connections."""
    os.environ[CONFIG_ENV] = str(config.path)
    r = config.responder
    if r.server == "native":
        _run_native(config)
        return
    if r.server == "granian":
        from granian.constants import HTTPModes, Interfaces
        from granian.http import HTTP1Settings

        # granian forks its workers. The hooks stay registered, in the workers too: a fork
        # inside a worker would release the worker's held stops before its loop runs, and
        # leave them held in that child for good. Nothing there forks (the signing roles
        # are spawned, and before this point); anything that comes to must not fork.
        os.register_at_fork(
            before=hold_stop_signals,
            after_in_parent=release_stop_signals,
            after_in_child=_default_stop_signals,
        )
        _granian_server()(
            RSGI_FACTORY,
            address=r.listen_host,
            port=r.listen_port,
            interface=Interfaces.RSGI,
            workers=r.process_count,
            factory=True,
            http=HTTPModes.http1,
            # slow clients: headers must arrive within the request timeout (the body's own
            # deadline is enforced by the app). max_buffer_size does not bound the header
            # block: measured with granian 2.8, 64 KiB of headers is accepted and 128 KiB gets
            # 431, at most 100 fields (tests/test_front.py). Tighter limits, the per-address
            # cap and idle connections are the front's (deploy/haproxy, README "Connection
            # limits"): granian has no connection limit of its own.
            http1_settings=HTTP1Settings(
                header_read_timeout=r.request_timeout * 1000, max_buffer_size=65_536
            ),
            respawn_failed_workers=True,
            workers_kill_timeout=10,  # a stop (Ctrl-C, systemd) must not wait forever on a worker
            log_access=False,
        ).serve()
        return
    import uvicorn

    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=r.listen_host,
        port=r.listen_port,
        workers=r.process_count,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=r.request_timeout,
        timeout_graceful_shutdown=5,
    )


def _run_native(config: Config) -> None:
    """certstatus's own HTTP/1.1 server (responder/http1.py): each worker forked with the
    socket bound here, its app made after the fork, as granian's factory does."""
    from functools import partial

    from certstatus.responder.app import create_app
    from certstatus.responder.http1 import (
        Limits,
        Server,
        WorkersFailing,
        listening_socket,
        run_worker,
    )

    r = config.responder
    limits = Limits(
        request_timeout=r.request_timeout,
        keepalive_timeout=r.keepalive_timeout,
        max_connections=r.max_connections,
        max_post_body=r.max_post_body,
    )
    try:
        sock = listening_socket(r.listen_host, r.listen_port)
    except OSError as exc:  # taken since ensure_listen_address_free looked
        problem = f"cannot listen on {r.listen}: {exc.strerror or exc}"
        raise ConfigError([("responder.listen", problem)], config.path) from None
    # create_app registers each worker's SIGUSR1 stack dump, as under granian
    worker = partial(run_worker, make_app=create_app, limits=limits, grace=8)
    try:
        Server(sock, r.process_count, worker, kill_timeout=10, exited=forget_worker).serve()
    except WorkersFailing as exc:
        raise CompanionDied(str(exc)) from None


class CompanionDied(RuntimeError):
    """A role beside the server ended on its own, or the native server's workers keep failing
    as they start: the server stopped for it, and the command must end with a failure status,
    so a supervisor restarts the whole (never exit 0)."""


@contextmanager
def companion(config: Config, target: Callable[[str, int], None], name: str) -> Iterator[list[str]]:
    """A role in a spawned process beside the server, never threads in it: the server forks
    its workers, and a fork taken while such a thread holds SQLite's write lock leaves every
    worker seeing 'database is locked' for good. If the role dies, the server stops too (a
    supervisor restarts both): a responder whose signer is gone must not serve on as if all
    were well."""
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=target, args=(str(config.path), os.getpid()), name=name)
    # Ctrl-C reaches the whole process group; the server handles it and stops the role.
    # Started with SIGINT ignored, the child (and any pool it starts) inherits that at once.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    stopping = threading.Event()
    reaping = threading.Lock()
    died: list[str] = []  # why the role ended on its own, if it did

    def watch() -> None:
        # Wait on the sentinel; reap only under the lock, which the stopping side takes first:
        # two threads reaping one child race, and the loser sees a child already reaped as
        # still alive (a false "did not stop; killing it").
        multiprocessing.connection.wait([process.sentinel])
        with reaping:
            if stopping.is_set():
                return
            process.join(timeout=5)
            code = process.exitcode
        # code 0: it was told to stop (a SIGTERM to the whole group, as systemd sends);
        # anything else is a crash. Either way the server must not go on without it.
        if code == 0:
            log.warning("%s stopped; stopping the server", name)
        else:
            how = f"signal {-code}" if code is not None and code < 0 else f"status {code}"
            log.critical("%s exited with %s; stopping the server", name, how)
            died.append(f"{name} exited with {how}")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name=f"{name}-watch", daemon=True).start()
    try:
        yield died
    finally:
        with reaping:
            stopping.set()
        process.terminate()
        process.join(timeout=40)
        if process.exitcode is None:
            log.error("%s did not stop within 40 s; killing it", name)
            process.kill()
            process.join()


def serve(
    config: Config,
    with_monitor: bool = False,
    with_api: bool = False,
    announce: Callable[[], None] = lambda: None,
) -> None:
    """Serve until stopped, the signing roles (and the monitor, and the issuance API on its
    own listener: the demo) beside the server. announce: called once every check passed and
    the roles started, just before serving (the command's "serving on" line)."""
    ensure_listen_address_free(config)
    ensure_companion_addresses_free(config, with_monitor)
    # The server and the workers it forks read only public material (R25); the keys of the
    # signing roles are checked, and later used, in processes of their own.
    register_public(config)
    if config.responder.run_signer:
        check_signing_keys(config)
    deaths: list[list[str]] = []
    with ExitStack() as roles:
        if config.responder.run_signer:
            deaths.append(
                roles.enter_context(companion(config, signing_roles_process, "signing roles"))
            )
        if with_monitor:
            deaths.append(roles.enter_context(companion(config, monitor_process, "monitor")))
        if with_api:
            deaths.append(roles.enter_context(companion(config, api_process, "issuance API")))
        announce()
        run_server(config)
    died = [reason for reasons in deaths for reason in reasons]
    if died:
        raise CompanionDied("; ".join(died) + "; the server stopped with it (see the log above)")
