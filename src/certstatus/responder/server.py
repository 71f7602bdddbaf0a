"""Running the responder on an ASGI server, with the signer beside it when the config says so."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from certstatus.cache.purgers import build_purger
from certstatus.config import (
    Config,
    ConfigError,
    IssuerMaterial,
    load_config,
    load_issuer_material,
)
from certstatus.crlbuilder import CrlService
from certstatus.monitor.heartbeat import HeartbeatWriter
from certstatus.purger import PurgeService
from certstatus.responder.app import CONFIG_ENV
from certstatus.signer import Signer
from certstatus.store import open_store

log = logging.getLogger("certstatus.serve")
APP_FACTORY = "certstatus.responder.app:create_app"  # ASGI (uvicorn)
RSGI_FACTORY = "certstatus.responder.rsgi:create_rsgi_app"  # granian


def register_issuers(config: Config) -> tuple[list[IssuerMaterial], dict[str, int]]:
    """Check every issuer's keys (R6, R21) and make sure the database knows it."""
    materials = load_issuer_material(config)
    store = open_store(config.database, config.base_dir)
    try:
        ids = {
            m.name: store.ensure_issuer(m.name, m.certificate.public_bytes(Encoding.DER))
            for m in materials
        }
    finally:
        store.close()
    return materials, ids


@contextmanager
def background_signer(
    config: Config, materials: list[IssuerMaterial], ids: dict[str, int]
) -> Iterator[Signer]:
    """The signing roles for the life of the block: the OCSP signer thread (driving its own
    process pool), the purger (status changes out of the caches) and, when an issuer
    publishes CRLs, the CRL builder thread."""
    store = open_store(config.database, config.base_dir)
    stop = threading.Event()
    signer = Signer(store, materials, ids, config.signing)
    crls = CrlService(store, [(ids[m.name], m) for m in materials], config.crl)
    threads = [threading.Thread(target=signer.run, args=(stop,), name="signer", daemon=True)]
    if config.is_postgres:
        writer = HeartbeatWriter(store)  # type: ignore[arg-type]
        threads.append(
            threading.Thread(target=writer.run, args=(stop,), name="heartbeat", daemon=True)
        )
    purger = PurgeService(
        store,
        [build_purger(c.name, c.kind, c.url, c.token_env) for c in config.caches],
        config.purge_recheck_after,
        interval=0.2 if config.caches else 5.0,
    )
    threads.append(threading.Thread(target=purger.run, args=(stop,), name="purger", daemon=True))
    metrics_server = None
    if config.signing.metrics_listen:
        from certstatus.signer.metrics import RolesCollector, serve_metrics

        collector = RolesCollector(store, materials, ids, signer, purger, crls)
        metrics_server = serve_metrics(collector, config.signing.metrics_listen)
    if crls.issuers:
        threads.append(
            threading.Thread(target=crls.run, args=(stop,), name="crl-builder", daemon=True)
        )
    for thread in threads:
        thread.start()
    try:
        yield signer
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        signer.close()
        store.close()


def run_server(config: Config) -> None:
    """Serve until interrupted, with the workers' metrics in a fresh directory they share."""
    metrics_dir = tempfile.mkdtemp(prefix="certstatus-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        _run_server(config)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def ensure_listen_address_free(config: Config) -> None:
    """Refuse a listen address another server already listens on. granian binds with
    SO_REUSEPORT, so a second responder on a taken port would not fail: the kernel would split
    the clients between the two, silently, whatever databases they read (seen while
    benchmarking). Asked by connecting, not by binding: connections of a server just stopped
    may linger (FIN_WAIT2 while a client hangs) and must not block its restart."""
    r = config.responder
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
    try:
        with socket.create_connection(
            (wildcard.get(r.listen_host, r.listen_host), r.listen_port), timeout=1
        ):
            pass
    except OSError:
        return  # nobody accepts there: ours to take
    raise ConfigError(
        [
            (
                "responder.listen",
                f"another server (another `certstatus serve`?) listens on "
                f"{r.listen_host}:{r.listen_port}; stop it or choose another port",
            )
        ],
        config.path,
    )


def _run_server(config: Config) -> None:
    """The chosen server handles SIGINT/SIGTERM and drains connections."""
    os.environ[CONFIG_ENV] = str(config.path)
    r = config.responder
    if r.server == "granian":
        from granian import Granian
        from granian.constants import HTTPModes, Interfaces
        from granian.http import HTTP1Settings

        Granian(
            RSGI_FACTORY,
            address=r.listen_host,
            port=r.listen_port,
            interface=Interfaces.RSGI,
            workers=r.process_count,
            factory=True,
            http=HTTPModes.http1,
            # slow clients: headers must arrive within the request timeout (the body's own
            # deadline is enforced by the app), and a connection buffers at most 64 KiB
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


def _stop_flag() -> list[int]:
    """A flag SIGTERM sets (a plain list: a handler must not take locks the loop may hold)."""
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _: stopping.append(signum))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return stopping


def _wait(stopping: list[int], parent: int) -> None:
    """Until SIGTERM, or until the server that started us is gone: never an orphan."""
    while not stopping and os.getppid() == parent:
        time.sleep(0.2)


def _roles_main(config_path: str, parent: int) -> None:
    """The signing roles' own process under `serve`."""
    stopping = _stop_flag()
    config = load_config(Path(config_path))
    materials, ids = register_issuers(config)
    with background_signer(config, materials, ids):
        _wait(stopping, parent)


def _monitor_main(config_path: str, parent: int) -> None:
    """The monitor's own process under `demo` (in production it runs apart: `monitor`)."""
    from certstatus.monitor.service import Monitor

    stopping = _stop_flag()
    monitor = Monitor(load_config(Path(config_path)))
    monitor.start()
    try:
        _wait(stopping, parent)
    finally:
        monitor.stop()


@contextmanager
def companion(config: Config, target: Callable[[str, int], None], name: str) -> Iterator[None]:
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

    def watch() -> None:
        process.join()
        if not stopping.is_set():
            # code 0: it was told to stop (a SIGTERM to the whole group, as systemd sends);
            # anything else is a crash. Either way the server must not go on without it.
            report = log.warning if process.exitcode == 0 else log.critical
            report("%s exited (code %s); stopping the server", name, process.exitcode)
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name=f"{name}-watch", daemon=True).start()
    try:
        yield
    finally:
        stopping.set()
        process.terminate()
        process.join(timeout=40)
        if process.is_alive():
            log.error("%s did not stop within 40 s; killing it", name)
            process.kill()
            process.join()


def serve(config: Config, with_monitor: bool = False) -> None:
    ensure_listen_address_free(config)
    register_issuers(config)
    with ExitStack() as roles:
        if config.responder.run_signer:
            roles.enter_context(companion(config, _roles_main, "signing roles"))
        if with_monitor:
            roles.enter_context(companion(config, _monitor_main, "monitor"))
        run_server(config)
