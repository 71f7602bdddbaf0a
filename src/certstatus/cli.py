"""The `certstatus` command: thin wrappers over the library, with clear errors and progress."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from certstatus.config import Config, ConfigError, load_config, load_issuer_material
from certstatus.crlbuilder import CrlService
from certstatus.ingest.api import Ingest, IngestError, parse_serial
from certstatus.keys.base import KeyFileError
from certstatus.keys.certificates import CertificateError
from certstatus.store import open_store
from certstatus.store.base import StoreError

console = Console(stderr=True)
out = Console()

USER_ERRORS = (ConfigError, IngestError, StoreError, KeyFileError, CertificateError)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    sys.exit(2)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected failures into one clear message and exit status 2, never a traceback."""
    try:
        yield
    except USER_ERRORS as exc:
        _fail(str(exc))


def _config_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        default=lambda: os.environ.get("CERTSTATUS_CONFIG", "certstatus.toml"),
        show_default="$CERTSTATUS_CONFIG or ./certstatus.toml",
        help="Deployment configuration (TOML).",
    )(function)


def _load(config_path: Path) -> Config:
    return load_config(config_path)


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
@click.version_option(package_name="certstatus")
def main(verbose: bool) -> None:
    """certstatus: records issuance and revocation, pre-signs OCSP responses, serves them."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command("check-config")
@click.argument("config_path", type=click.Path(path_type=Path), default="certstatus.toml")
def check_config(config_path: Path) -> None:
    """Validate a configuration file, its certificates and keys (R3, R4, R6, R21)."""
    with user_errors():
        config = _load(config_path)
        materials = load_issuer_material(config)
    out.print(
        f"[green]ok[/]: {config_path}: {len(materials)} issuer(s); responses valid "
        f"{config.signing.policy.validity}s, refreshed after "
        f"{config.signing.policy.refresh_after}s",
        soft_wrap=True,  # one line, whatever the path's length: scripts grep it
    )


def _ingest(config: Config) -> Ingest:
    materials = load_issuer_material(config)
    return Ingest(open_store(config.database, config.base_dir), materials)


@main.command()
@_config_option
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def add(config_path: Path, files: tuple[Path, ...]) -> None:
    """Record certificates and precertificates (PEM or DER) before they are published (F2)."""
    with user_errors():
        ingest = _ingest(_load(config_path))
        result = ingest.add_files(list(files), int(time.time()))
    out.print(f"added {result.added}, already known {result.existing}")


def _parse_time(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise IngestError(
            f"--time {value!r} is not an ISO 8601 time such as 2026-01-31T12:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise IngestError("--time needs a timezone, e.g. 2026-01-31T12:00:00Z")
    return int(parsed.timestamp())


@main.command()
@_config_option
@click.option("--issuer", required=True, help="Issuer name from the configuration.")
@click.option("--reason", required=True, help="keyCompromise, superseded, ... (R7).")
@click.option("--time", "when", help="Revocation time, ISO 8601 with timezone; default now.")
@click.argument("serial")
def revoke(config_path: Path, issuer: str, reason: str, when: str | None, serial: str) -> None:
    """Revoke a recorded certificate by serial (hex)."""
    with user_errors():
        number = parse_serial(serial)
        revocation_time = _parse_time(when)
        ingest = _ingest(_load(config_path))
        row = ingest.revoke(issuer, number, reason, int(time.time()), revocation_time)
    out.print(f"revoked {row.serial:x} (reason {row.reason}); re-signed on the next signer pass")


@main.command()
@_config_option
def sign(config_path: Path) -> None:
    """Sign every response that is due, once, with a progress bar."""
    from certstatus.responder.server import register_issuers
    from certstatus.signer import Signer

    with user_errors():
        config = _load(config_path)
        materials, ids = register_issuers(config)
        store = open_store(config.database, config.base_dir)
        total = sum(store.due_count(int(time.time())).values())
        with (
            progress_bar(total, "signing") as advance,
            Signer(store, materials, ids, config.signing) as signer,
        ):
            stored = signer.sign_due(progress=advance)
    out.print(f"stored {stored} response pairs (SHA-1 and SHA-256 CertIDs)")


@main.command()
@_config_option
def signer(config_path: Path) -> None:
    """Keep signing: new and revoked certificates within a second, refreshes on schedule."""
    import signal
    import threading

    from certstatus.responder.server import background_signer, register_issuers

    with user_errors():
        config = _load(config_path)
        materials, ids = register_issuers(config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with background_signer(config, materials, ids):
        console.print("signer running; Ctrl-C stops it")
        try:
            while not stop.wait(1):
                pass
        except KeyboardInterrupt:
            pass


@main.command()
@_config_option
def serve(config_path: Path) -> None:
    """Serve OCSP (and run the signer in the same process when the config says so)."""
    from certstatus.responder.server import serve as run

    with user_errors():
        config = _load(config_path)
        r = config.responder
        console.print(
            f"serving OCSP on http://{r.listen_host}:{r.listen_port}/ "
            f"({r.server}, {r.process_count} worker(s)"
            f"{', with signer' if r.run_signer else ''})"
        )
        run(config)


@main.command()
@_config_option
def stats(config_path: Path) -> None:
    """Counts of certificates, revocations, responses and due rows."""
    with user_errors():
        config = _load(config_path)
        store = open_store(config.database, config.base_dir)
        counts = store.counts()
        due = store.due_count(int(time.time()))
    for name, value in counts.items():
        out.print(f"{name:>16}: {value}")
        backlog = store.purge_backlog()
    for priority, value in due.items():
        out.print(f"{'due ' + priority.name.lower():>16}: {value}")
    out.print(f"{'purges unsigned':>16}: {backlog.unready}")
    out.print(f"{'purges pending':>16}: {backlog.pending}")


@main.group()
def crl() -> None:
    """Certificate revocation lists: build, export for static hosting, CCADB disclosure."""


def _crl_service(config_path: Path) -> CrlService:
    from certstatus.responder.server import register_issuers

    config = _load(config_path)
    materials, ids = register_issuers(config)
    store = open_store(config.database, config.base_dir)
    service = CrlService(store, [(ids[m.name], m) for m in materials], config.crl)
    if not service.issuers:
        raise ConfigError(
            [("issuers", "no issuer has crl_url and issuer_key; nothing to do")], config.path
        )
    return service


@crl.command("build")
@_config_option
def crl_build(config_path: Path) -> None:
    """Build, gate and publish every CRL now, due or not."""
    with user_errors():
        results = _crl_service(config_path).build_due(force=True)
    failed = 0
    for r in results:
        state = "[green]published[/]" if r.published else "[red]NOT published[/]"
        out.print(f"{r.issuer}/{r.crl_partition}: #{r.number} {r.entries} entries {state}")
        for rejection in r.rejections:
            out.print(f"  gate: {rejection.code}: {rejection.message}")
        failed += not r.published
    if failed:
        sys.exit(1)


@crl.command("export")
@_config_option
@click.argument("directory", type=click.Path(path_type=Path))
def crl_export(config_path: Path, directory: Path) -> None:
    """Write the current CRLs under DIRECTORY at their URL paths, for static hosting."""
    with user_errors():
        service = _crl_service(config_path)
        written = 0
        for issuer in service.issuers:
            for partition in service.partitions(issuer):
                current = service.store.current_crl(issuer.id, partition)
                if current is None:
                    continue
                target = directory / issuer.layout.path(partition).lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                staging = target.with_suffix(".crl.tmp")
                staging.write_bytes(current.der)
                staging.replace(target)  # atomic: a web server never sees half a CRL
                written += 1
    out.print(f"wrote {written} CRL(s) under {directory}")


@crl.command("disclosure")
@_config_option
@click.option("--issuer", "name", required=True, help="Issuer name from the configuration.")
def crl_disclosure(config_path: Path, name: str) -> None:
    """Print the CCADB JSON array of every CRL URL of an issuer (R20)."""
    import json

    with user_errors():
        service = _crl_service(config_path)
        matches = [i for i in service.issuers if i.material.name == name]
        if not matches:
            raise IngestError(f"issuer {name!r} has no CRLs configured")
        urls = [matches[0].layout.url(p) for p in service.partitions(matches[0])]
    click.echo(json.dumps(urls))


@main.command()
@_config_option
def monitor(config_path: Path) -> None:
    """The outside view: the 15-minute watchdog, older-serial sampling, replication and CRL
    checks, a status page and /metrics (run it apart from the responders)."""
    import signal
    import threading

    from certstatus.monitor.service import Monitor

    with user_errors():
        config = _load(config_path)
        watcher = Monitor(config)
        watcher.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    targets = ", ".join(f"{t.name} {t.url}" for t in watcher.targets)
    console.print(f"monitor watching {targets}; status page {watcher.url} — Ctrl-C stops")
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    watcher.stop()


@main.group()
def cache() -> None:
    """A local Varnish in front of the responders (deploy/varnish/certstatus.vcl)."""


@contextmanager
def fail_on(error: type[Exception]) -> Iterator[None]:
    """A command's own expected failure as one message and exit status 2 (see user_errors)."""
    try:
        yield
    except error as exc:
        _fail(str(exc))


def cache_errors() -> Any:
    from certstatus.cache.varnish import CacheError

    return fail_on(CacheError)


@cache.command("up")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--origin",
    "origins",
    multiple=True,
    required=True,
    help="An origin responder host:port (repeat for several).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Listen port (0: free).")
@click.option("--memory", default="256m", show_default=True, help="Cache size.")
def cache_up(directory: Path, origins: tuple[str, ...], port: int, memory: str) -> None:
    """Start Varnish on loopback in front of the given responders."""
    from certstatus.cache.varnish import LocalVarnish

    with cache_errors():
        state = LocalVarnish(directory).up(list(origins), port, memory)
    console.print(f"cache listening on {state.url} in front of {', '.join(state.origins)}")
    console.print("to purge it on status changes, add to certstatus.toml:")
    out.print(f'[[caches]]\nname = "local"\nkind = "varnish"\nurl = "{state.url}"', highlight=False)


@cache.command("status")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cache_status(directory: Path, as_json: bool) -> None:
    """Whether the cache runs, its hit/miss counters and each origin's probe verdict."""
    import json

    from certstatus.cache.varnish import LocalVarnish

    local = LocalVarnish(directory)
    state = local.state()
    if state is None:
        _fail(f"no cache running from {directory}")
        return
    with cache_errors():
        counters, health = local.stats(), local.origin_health()
    if as_json:
        out.print_json(json.dumps({"url": state.url, "stats": counters, "origins": health}))
        return
    out.print(f"cache {state.url} (pid {state.pid})")
    for name, value in counters.items():
        out.print(f"{name:>16}: {value}")
    for (name, healthy), address in zip(health.items(), state.origins, strict=False):
        out.print(f"{name:>16}: {address} {'healthy' if healthy else 'SICK'}")


@cache.command("down")
@click.argument("directory", type=click.Path(path_type=Path))
def cache_down(directory: Path) -> None:
    """Stop the cache started from DIRECTORY."""
    from certstatus.cache.varnish import LocalVarnish

    stopped = LocalVarnish(directory).down()
    console.print("cache stopped" if stopped else "no cache was running")


@main.group()
def cluster() -> None:
    """A local PostgreSQL primary and streaming replicas, to run and to rehearse failures on."""


def _cluster_dir_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--dir",
        "directory",
        type=click.Path(path_type=Path),
        default=lambda: os.environ.get("CERTSTATUS_CLUSTER", "certstatus-cluster"),
        show_default="$CERTSTATUS_CLUSTER or ./certstatus-cluster",
        help="Cluster directory.",
    )(function)


def cluster_errors() -> Any:
    from certstatus.cluster.local import ClusterError

    return fail_on(ClusterError)


def _megabytes(flag: str, dest: str, help: str) -> Callable[..., Any]:
    """A PostgreSQL size setting of the local cluster, in MB (default 32)."""
    return click.option(
        flag, dest, type=click.IntRange(16, 1_000_000), default=32, show_default=True, help=help
    )


@cluster.command("up")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--replicas", type=click.IntRange(0, 16), default=2, show_default=True)
@click.option("--sites", help="Replicas per site, e.g. a:2,b:2 (overrides --replicas).")
@_megabytes("--keep-wal", "keep_wal_mb", "max_slot_wal_keep_size in MB.")
@_megabytes(
    "--shared-buffers",
    "shared_buffers_mb",
    "shared_buffers of every node in MB; size it to the responses table to benchmark.",
)
def cluster_up(
    directory: Path, replicas: int, sites: str | None, keep_wal_mb: int, shared_buffers_mb: int
) -> None:
    """Start a primary and hot-standby replicas on loopback; write DIR/certstatus.toml."""
    from certstatus.cluster.local import Cluster, parse_sites
    from certstatus.cluster.setup import write_deployment

    with cluster_errors():
        count = len(parse_sites(sites, replicas)) if sites else replicas
        started = Cluster.up(directory, count, sites, keep_wal_mb, shared_buffers_mb)
        config = write_deployment(started)
    for node in started.nodes:
        out.print(f"{node.name:>8} {node.role:<8} {node.site or '-':<4} {node.url}")
    out.print(f"config: {config}")
    out.print(f"next: certstatus serve --config {config}")


@cluster.command("status")
@_cluster_dir_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cluster_status(directory: Path, as_json: bool) -> None:
    """Every node: role, site, address, staleness, slot wal_status and safe_wal_size."""
    import json

    from rich.table import Table

    from certstatus.cluster.local import Cluster

    with cluster_errors():
        rows = Cluster.load(directory).status()
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    table = Table(
        "node", "role", "site", "port", "up", "staleness s", "link", "slot", "safe WAL bytes"
    )
    for r in rows:
        table.add_row(
            r["name"],
            r["role"],
            r["site"] or "-",
            str(r["port"]),
            str(r["up"]),
            _staleness_cell(r),
            r.get("link", "-"),
            str(r.get("slot_wal_status", "-")),
            str(r.get("slot_safe_wal_size", "-")),
        )
    out.print(table)


def _staleness_cell(row: dict[str, Any]) -> str:
    """An age, or why there is none: "no heartbeat" before the first beat is written."""
    if row.get("staleness_s") is not None:
        return str(row["staleness_s"])
    return {"none": "no heartbeat", "no schema": "no schema"}.get(row.get("heartbeat", ""), "-")


@cluster.command("down")
@_cluster_dir_option
def cluster_down(directory: Path) -> None:
    """Stop every node and link proxy; leave no process behind."""
    from certstatus.cluster.local import Cluster

    with cluster_errors():
        Cluster.load(directory).down()
    out.print(f"stopped {directory}")


FAULTS = [
    "pause-replay",
    "resume-replay",
    "stall-link",
    "delay-link",
    "heal-link",
    "stop",
    "start",
    "lose-wal",
]


@cluster.command("fault")
@_cluster_dir_option
@click.argument("node")
@click.argument("action", type=click.Choice(FAULTS))
@click.argument("milliseconds", type=int, required=False)
def cluster_fault(directory: Path, node: str, action: str, milliseconds: int | None) -> None:
    """Inject a real fault into NODE (delay-link takes MILLISECONDS)."""
    from certstatus.cluster.local import Cluster

    with cluster_errors():
        running = Cluster.load(directory)
        apply_fault(running, running.node(node), action, milliseconds)
    out.print(f"{node}: {action} done")


def apply_fault(running: Any, node: Any, action: str, milliseconds: int | None = None) -> None:
    from certstatus.cluster.local import ClusterError

    if action == "delay-link" and not milliseconds:
        raise ClusterError("delay-link needs MILLISECONDS, e.g. `delay-link 300`")
    actions: dict[str, Callable[[], None]] = {
        "pause-replay": lambda: running.pause_replay(node, True),
        "resume-replay": lambda: running.pause_replay(node, False),
        "stall-link": lambda: running.set_link(node, "stall"),
        "delay-link": lambda: running.set_link(node, "delay", milliseconds or 0),
        "heal-link": lambda: running.set_link(node, "ok"),
        "stop": lambda: running.stop(node),
        "start": lambda: running.start(node),
        "lose-wal": lambda: running.lose_wal(node),
    }
    actions[action]()


@cluster.command("rebuild")
@_cluster_dir_option
@click.argument("node")
def cluster_rebuild(directory: Path, node: str) -> None:
    """Re-seed a replica from a fresh base backup (after lose-wal, for instance)."""
    from certstatus.cluster.local import Cluster

    with cluster_errors():
        running = Cluster.load(directory)
        running.rebuild(running.node(node))
    out.print(f"{node}: rebuilt")


@main.command()
@click.argument(
    "name", type=click.Choice(["incident", "pause-replay", "stall-link", "primary-down"])
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--hold",
    type=float,
    default=8.0,
    show_default=True,
    help="Seconds the fault lasts before it is healed.",
)
@click.option(
    "--keep",
    "keep",
    type=click.Path(path_type=Path),
    help="Run in this directory and keep it (logs, configs) instead of a temp dir.",
)
def drill(name: str, as_json: bool, hold: float, keep: Path | None) -> None:
    """Run a failure drill on a fresh local cluster and report what every client saw.

    incident: the founding incident, lose-wal on 2 of 3 replicas under load. pause-replay,
    stall-link: one replica stops applying or receiving WAL. primary-down: the primary stops.
    """
    from certstatus.drill import run_drill

    with cluster_errors():
        report = run_drill(name, hold=hold, directory=keep)
    if as_json:
        click.echo(report.to_json())
    else:
        out.print(report.to_json())
        verdict = "[green]PASSED[/]" if report.passed else "[red]FAILED[/]"
        out.print(f"drill {name}: {verdict}")
    if not report.passed:
        sys.exit(1)


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=Path("certstatus-demo"),
    show_default=True,
)
@click.option("--listen", default="127.0.0.1:8080", show_default=True)
@click.option(
    "--certs", "count", type=click.IntRange(1, 10_000_000), default=1000, show_default=True
)
@click.option(
    "--cache",
    is_flag=True,
    help="Also put a local Varnish in front (needs varnish and varnish-modules).",
)
def demo(directory: Path, listen: str, count: int, cache: bool) -> None:
    """A whole status service on SQLite in one process: CA, certificates, signing, OCSP."""
    from certstatus.cache.varnish import CacheError, LocalVarnish
    from certstatus.demo.run import (
        DemoFiles,
        create,
        crl_command,
        local_cache_port,
        openssl_command,
    )
    from certstatus.responder.server import register_issuers
    from certstatus.responder.server import serve as run
    from certstatus.signer import Signer

    files = DemoFiles(directory.resolve())
    try:
        with user_errors():
            if files.config.exists():
                config = _load(files.config)
                console.print(f"reusing {files.dir}")
                if f"{config.responder.listen_host}:{config.responder.listen_port}" != listen:
                    console.print(
                        f"[yellow]note:[/] {files.config} listens on "
                        f"{config.responder.listen_host}:{config.responder.listen_port}"
                    )
                    listen = f"{config.responder.listen_host}:{config.responder.listen_port}"
            else:
                with progress_bar(count, "issuing") as advance:
                    config = create(files, listen, count, advance, cache)
            materials, ids = register_issuers(config)
            store = open_store(config.database, config.base_dir)
            total = sum(store.due_count(int(time.time())).values())
            with (
                progress_bar(total, "signing") as advance,
                Signer(store, materials, ids, config.signing) as signer_,
            ):
                signer_.sign_due(progress=advance)
            crls = CrlService(store, [(ids[m.name], m) for m in materials], config.crl)
            built = crls.build_due()
            published = [i.layout.url(p) for i in crls.issuers for p in crls.partitions(i)]
            counts = store.counts()
            store.close()
            console.print(
                f"{counts['certificates']} certificates ({counts['precertificates']} "
                f"precertificates only, {counts['revoked']} revoked) in {files.dir}"
            )
            console.print("check a good certificate:")
            out.print(openssl_command(files, listen), soft_wrap=True, highlight=False)
            console.print("check a revoked one:")
            out.print(openssl_command(files, listen, revoked=True), soft_wrap=True, highlight=False)
            console.print(f"CRLs ({len(built)} built now): " + " ".join(published))
            console.print("check a revoked certificate against its CRL:")
            out.print(crl_command(files), soft_wrap=True, highlight=False)
            console.print(f"status page (the monitor): http://{config.monitor.listen}/")
            varnish = LocalVarnish(files.dir / "varnish")
            cache_port = local_cache_port(config)
            if cache and cache_port is None:
                console.print(f"[yellow]note:[/] {files.config} has no local cache; not adding one")
            try:
                if cache_port is not None:
                    try:
                        varnish.down()  # one left behind by a killed demo
                        state = varnish.up([listen], cache_port)
                    except CacheError as exc:
                        _fail(str(exc))
                    console.print(f"cache (Varnish) on {state.url}, purged on revocation")
                console.print(f"serving OCSP and CRLs on http://{listen}/ — Ctrl-C stops")
                run(config, with_monitor=True)
            finally:
                varnish.down()
    except KeyboardInterrupt:
        console.print("stopped")
    console.print("stopped cleanly")


if __name__ == "__main__":
    main()
