"""Roles assembled from a `Config`, in one place.

The command line, the server runner and the demo all need the same pieces: the issuers checked
and known to the database, the CRL builder, the signing roles (signer, purger, CRL builder,
heartbeat, their /metrics) and the processes those roles run in beside a server. Each is built
here once, so a new role or a new dependency of one is wired in a single module.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from certstatus.cache.purgers import build_purger
from certstatus.config import (
    Config,
    ConfigError,
    IssuerCertificates,
    IssuerMaterial,
    load_config,
    load_issuer_certificates,
    load_issuer_material,
)
from certstatus.crlbuilder import CrlService
from certstatus.housekeeping import Housekeeping
from certstatus.monitor.heartbeat import HeartbeatWriter
from certstatus.purger import PurgeService
from certstatus.signer import Signer
from certstatus.store import heartbeat_of, open_existing_store, open_store
from certstatus.store.base import Store, StoreError, Unreachable

log = logging.getLogger("certstatus.serve")


def _ensure_known(
    config: Config, issuers: Sequence[IssuerCertificates], existing: bool = False
) -> dict[str, int]:
    """Make sure the database knows every issuer; its id by name. existing: a one-shot
    command's, which refuses a SQLite file that does not exist (store.open_existing_store)."""
    opener = open_existing_store if existing else open_store
    store = opener(config.database, config.base_dir)
    try:
        return {
            m.name: store.ensure_issuer(m.name, m.certificate.public_bytes(Encoding.DER))
            for m in issuers
        }
    finally:
        store.close()


def register_public(config: Config) -> tuple[list[IssuerCertificates], dict[str, int]]:
    """Check every issuer's certificates (R6, R21) and register it, opening no key file:
    what a responder needs (R25). On PostgreSQL a schema at least this release's with every
    issuer registered is only read, so a web node's role needs no write grant; otherwise
    this registers them (and migrates) as a writer does, so a node that starts first still
    works when its role may write. A web node whose primary is unreachable reads them from a
    replica (_registered)."""
    public = load_issuer_certificates(config)
    known = _registered(config, public) if config.is_postgres else None
    return public, known if known is not None else _ensure_known(config, public)


def _registered(config: Config, issuers: Sequence[IssuerCertificates]) -> dict[str, int] | None:
    """Every issuer's id, read without writing; None when a writer's registration is needed
    (a schema older than this release's, an issuer missing or with another certificate, a
    primary that answers with an error), or when neither the primary nor any replica could
    give them: the writer's path then says why in one line.

    Read from the primary. A web node (no signing roles) whose primary is unreachable reads
    its replicas instead, this site's first, and takes the first one that holds this
    release's schema and every configured issuer: a node restarted during a primary outage
    serves what the replicas hold, as the nodes still running do, instead of refusing to
    start. Only an unreachable primary sends it there: one that answers (a missing grant, no
    schema yet) is the writer path's to report or to fix."""
    (_, primary_url), *replicas = _registry_sources(config)
    try:
        return _read_ids("primary", primary_url, issuers)[0]  # or None: the writer's path migrates
    except Unreachable as exc:
        unreachable = str(exc)
    except StoreError:
        return None  # the primary answered with an error: the writer's path says which
    for name, url in replicas:
        try:
            ids, why = _read_ids(name, url, issuers)
        except StoreError as exc:
            ids, why = None, str(exc)
        if ids is not None:
            log.warning("issuers read from replica %s: %s", name, unreachable)
            return ids
        log.warning("replica %s not used to start: %s", name, why)
    return None


def _read_ids(
    name: str, url: str, issuers: Sequence[IssuerCertificates]
) -> tuple[dict[str, int] | None, str]:
    """The configured issuers' ids as this database records them, or None and why not;
    StoreError (Unreachable: no server there) when it cannot be read."""
    from certstatus.store.postgres import PostgresStore
    from certstatus.store.schema import POSTGRES_MIGRATIONS

    store = PostgresStore(url, read_only=True, max_connections=1, name=name)
    try:
        version = store.schema_version()
        recorded = {issuer.name: issuer for issuer in store.issuers()}
    finally:
        store.close()
    newest = max(version for version, _ in POSTGRES_MIGRATIONS)
    if version < newest:
        return None, f"schema {version}, older than this release's {newest}"
    ids: dict[str, int] = {}
    for material in issuers:
        found = recorded.get(material.name)
        if found is None:
            return None, f"issuer {material.name} is not registered there"
        if found.certificate_der != material.certificate.public_bytes(Encoding.DER):
            return None, f"issuer {material.name} is registered with another certificate"
        ids[material.name] = found.id
    return ids, ""


def _registry_sources(config: Config) -> list[tuple[str, str]]:
    """Where a node may read the issuers' ids: the primary, then (for a node that signs
    nothing) its replicas, this site's first. A signing node needs the primary anyway."""
    sources = [("primary", config.database)]
    if not config.responder.run_signer:
        site = config.responder.site
        replicas = sorted(config.replicas, key=lambda replica: replica.site != site)
        sources += [(replica.name, replica.url) for replica in replicas]
    return sources


def register_issuers(
    config: Config, existing: bool = False
) -> tuple[list[IssuerMaterial], dict[str, int]]:
    """Check every issuer's certificates and keys (R6, R21) and register it: signing roles
    (existing: for a one-shot command, see _ensure_known)."""
    materials = load_issuer_material(config)
    return materials, _ensure_known(config, materials, existing)


def check_signing_keys(config: Config) -> None:
    """Refuse (ConfigError, one line per problem) keys the signing roles could not use, read
    in a spawned process that exits at once: the server that calls this forks its workers, and
    a key read in its own memory would be inherited by every web-facing worker (R25)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        problems = pool.apply(_signing_key_problems, (str(config.path),))
    if problems:
        raise ConfigError(problems, config.path)


def _signing_key_problems(config_path: str) -> list[tuple[str, str]]:
    try:
        load_issuer_material(load_config(Path(config_path)))
    except ConfigError as exc:
        return exc.problems
    return []


def crl_service(
    store: Store, materials: list[IssuerMaterial], ids: dict[str, int], config: Config
) -> CrlService:
    """The CRL builder over every configured issuer (those without crl_url or issuer_key are
    left out by the service itself)."""
    return CrlService(store, [(ids[m.name], m) for m in materials], config.crl)


def open_crl_service(config: Config) -> CrlService:
    """A CRL builder on its own store for a one-shot command; refused when no issuer publishes
    CRLs, because every CRL command would then silently do nothing. A SQLite database that
    does not exist is refused: a mistyped path must not get an empty CRL signed with the
    issuer's key, numbered 1."""
    materials, ids = register_issuers(config, existing=True)
    store = open_existing_store(config.database, config.base_dir)
    service = crl_service(store, materials, ids, config)
    if not service.issuers:
        service.store.close()
        raise ConfigError(
            [("issuers", "no issuer has crl_url and issuer_key; nothing to do")], config.path
        )
    return service


class MaterialWatch:
    """Notices a responder-certificate rotation (`responder-cert install` writes the new
    certificate last) and loads the issuers' material again: the new pair once it loads and
    matches, nothing while it does not (a rotation half done is retried on the next look)."""

    def __init__(self, config: Config, every: float = 1.0) -> None:
        self.config = config
        self.every = every
        self._seen = self._stamp()
        self._next = time.monotonic() + every

    def _stamp(self) -> tuple[tuple[int, int, int], ...]:
        paths = [i.responder_certificate for i in self.config.issuers]
        paths += [i.responder_key for i in self.config.issuers if isinstance(i.responder_key, Path)]
        stamps = []
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                stamps.append((0, 0, 0))
                continue
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(stamps)

    def __call__(self) -> list[IssuerMaterial] | None:
        if time.monotonic() < self._next:
            return None
        self._next = time.monotonic() + self.every
        stamp = self._stamp()
        if stamp == self._seen:
            return None
        try:
            materials = load_issuer_material(self.config)
        except ConfigError as exc:
            logging.getLogger("certstatus.signer").warning(
                "responder certificate or key changed but not usable (yet): %s", exc
            )
            return None
        self._seen = stamp
        return materials


@contextmanager
def background_signer(
    config: Config, materials: list[IssuerMaterial], ids: dict[str, int]
) -> Iterator[Signer]:
    """The signing roles for the life of the block: the OCSP signer thread (driving its own
    process pool), the purger (status changes out of the caches), expiry housekeeping and,
    when an issuer publishes CRLs, the CRL builder thread."""
    store = open_store(config.database, config.base_dir)
    stop = threading.Event()
    signer = Signer(store, materials, ids, config.signing)
    crls = crl_service(store, materials, ids, config)
    threads = [threading.Thread(target=signer.run, args=(stop,), name="signer", daemon=True)]
    beating = heartbeat_of(store)
    if beating is not None:  # PostgreSQL: the replicas' clock
        writer = HeartbeatWriter(beating)
        threads.append(
            threading.Thread(target=writer.run, args=(stop,), name="heartbeat", daemon=True)
        )
    purger = PurgeService(
        store,
        [build_purger(c.name, c.kind, c.url, c.token_env) for c in config.caches],
        config.purge_recheck_after,
        interval=0.2 if config.caches else 5.0,
        coalesce_threshold=config.purge.coalesce_threshold,
        coalesce_window=config.purge.coalesce_window,
    )
    threads.append(threading.Thread(target=purger.run, args=(stop,), name="purger", daemon=True))
    housekeeping = Housekeeping(
        store,
        config.housekeeping.retention,
        config.crl.period,
        config.housekeeping.batch_size,
        config.housekeeping.every,
    )
    threads.append(
        threading.Thread(target=housekeeping.run, args=(stop,), name="housekeeping", daemon=True)
    )
    metrics_server = None
    watch = MaterialWatch(config)
    collector = None
    if config.signing.metrics_listen:
        from certstatus.signer.metrics import RolesCollector, serve_metrics

        collector = RolesCollector(store, materials, ids, signer, purger, crls)
        metrics_server = serve_metrics(collector, config.signing.metrics_listen)

    def reloaded() -> list[IssuerMaterial] | None:
        fresh = watch()
        if fresh is not None and collector is not None:
            collector.materials = fresh  # the R21 expiry metric follows the new certificate
        return fresh

    signer.watch = reloaded
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
    stop_when_orphaned(parent)
    while not stopping:
        time.sleep(0.2)


def signing_roles_process(config_path: str, parent: int) -> None:
    """The signing roles' own process beside `serve` (see responder.server.companion)."""
    stopping = _stop_flag()
    config = load_config(Path(config_path))
    materials, ids = register_issuers(config)
    with background_signer(config, materials, ids):
        _wait(stopping, parent)


def monitor_process(config_path: str, parent: int) -> None:
    """The monitor's own process under `demo` (in production it runs apart: `monitor`)."""
    from certstatus.monitor.service import Monitor

    stopping = _stop_flag()
    monitor = Monitor(load_config(Path(config_path)))
    monitor.start()
    try:
        _wait(stopping, parent)
    finally:
        monitor.stop()


def api_process(config_path: str, parent: int) -> None:
    """The issuance API's own process under `demo` (in production: `certstatus api`). It
    stops when the server that started it is gone (SIGTERM reaches uvicorn's handler)."""
    from certstatus.api.server import run_api
    from certstatus.cli.api import build_app

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config, app = build_app(Path(config_path))
    stop_when_orphaned(parent)
    run_api(config, app, ignore_sigint=True)


def stop_when_orphaned(parent: int) -> None:
    """SIGTERM to this process once the process that started it is gone (killed, even with
    SIGKILL): for a process whose own server handles SIGTERM, so it stops as when told to."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
