"""`certstatus cluster ...`: a local PostgreSQL primary and streaming replicas."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from certstatus.cli import dir_option, user_errors
from certstatus.cluster.faults import FAULTS


def _cluster_dir(function: Callable[..., Any]) -> Callable[..., Any]:
    return dir_option("CERTSTATUS_CLUSTER", "certstatus-cluster", "Cluster directory.")(function)


def _cluster_error() -> type[Exception]:
    from certstatus.cluster.local import ClusterError

    return ClusterError


def _megabytes(flag: str, dest: str, help: str) -> Callable[..., Any]:
    """A PostgreSQL size setting of the local cluster, in MB (default 32)."""
    return click.option(
        flag, dest, type=click.IntRange(16, 1_000_000), default=32, show_default=True, help=help
    )


@click.group(short_help="A local PostgreSQL primary and replicas.")
def cluster() -> None:
    """A local PostgreSQL primary and streaming replicas, to run and to rehearse failures on."""


@cluster.command("up", short_help="Start a primary and replicas on loopback.")
@_cluster_dir
@click.option(
    "--replicas",
    type=click.IntRange(0, 16),
    default=2,
    show_default=True,
    help="Streaming replicas, all in site a (see --sites for several sites).",
)
@click.option("--sites", help="Replicas per site, e.g. a:2,b:2 (overrides --replicas).")
@_megabytes("--keep-wal", "keep_wal_mb", "max_slot_wal_keep_size in MB.")
@_megabytes(
    "--shared-buffers",
    "shared_buffers_mb",
    "shared_buffers of every node in MB; size it to the responses table to benchmark.",
)
@click.option(
    "--ha",
    is_flag=True,
    help="Run every node under Patroni with etcd: automatic failover (see README).",
)
@click.option(
    "--sync",
    type=click.Choice(["strict", "degrade", "off"]),
    default="strict",
    show_default=True,
    help="With --ha: acknowledge writes once on a synchronous standby; without one, "
    "strict makes writes wait (and fail after the store's timeout), degrade goes asynchronous.",
)
@click.option("--ttl", type=click.IntRange(4, 300), default=10, show_default=True)
@click.option("--loop-wait", type=click.IntRange(1, 60), default=2, show_default=True)
@click.option("--retry-timeout", type=click.IntRange(1, 120), default=4, show_default=True)
def cluster_up(
    directory: Path,
    replicas: int,
    sites: str | None,
    keep_wal_mb: int,
    shared_buffers_mb: int,
    ha: bool,
    sync: str,
    ttl: int,
    loop_wait: int,
    retry_timeout: int,
) -> None:
    """Start a primary and hot-standby replicas on loopback; write certstatus.toml in --dir.

    With --ha, the first node (on the first site) leads at first and --replicas/--sites count
    its standbys; Patroni's leader lease is --ttl seconds (loop_wait + 2 * retry_timeout must
    not exceed it)."""
    from certstatus.cluster.local import Cluster, parse_sites
    from certstatus.cluster.setup import write_deployment

    with user_errors(_cluster_error()):
        count = len(parse_sites(sites, replicas)) if sites else replicas
        started: Cluster
        if ha:
            from certstatus.cluster.ha import HaCluster, Timings

            started = HaCluster.up_ha(
                directory,
                count,
                sites,
                Timings(ttl, loop_wait, retry_timeout),
                sync,
                keep_wal_mb,
                shared_buffers_mb,
            )
        else:
            started = Cluster.up(directory, count, sites, keep_wal_mb, shared_buffers_mb)
        config = write_deployment(started)
    for node in started.nodes:
        click.echo(f"{node.name:>8} {node.role:<8} {node.site or '-':<4} {node.url}")
    if ha:
        click.echo(f"writers: {started.writer_url}")
    click.echo(f"config: {config}")
    click.echo(f"next: certstatus serve --config {config}")


@cluster.command("status", short_help="Every node: role, staleness, WAL slot.")
@_cluster_dir
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cluster_status(directory: Path, as_json: bool) -> None:
    """Every node: role, site, address, staleness, slot wal_status and safe_wal_size."""
    from rich.console import Console
    from rich.table import Table

    from certstatus.cluster.local import Cluster

    with user_errors(_cluster_error()):
        loaded = Cluster.load(directory)
        rows = loaded.status()
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    if rows and "timeline" in rows[0]:  # under Patroni
        _ha_table(rows)
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
            "yes" if r["up"] else "no",
            _staleness_cell(r),
            r.get("link", "-"),
            str(r.get("slot_wal_status", "-")),
            str(r.get("slot_safe_wal_size", "-")),
        )
    # into a pipe or a file, rich would squeeze the table into 80 columns and cut every value
    wide = None if sys.stdout.isatty() else 200
    Console(markup=False, highlight=False, width=wide).print(table)


def _ha_table(rows: list[dict[str, Any]]) -> None:
    """Patroni's view: who leads, on which timeline, and each node's state and lag."""
    from rich.console import Console
    from rich.table import Table

    leaders = [r for r in rows if r["role"] == "leader"]
    if leaders:
        click.echo(f"leader: {leaders[0]['name']} (timeline {leaders[0]['timeline']})")
    else:
        click.echo("leader: none (a failover may be under way)")
    table = Table("node", "role", "state", "timeline", "lag", "site", "port", "staleness s", "link")
    for r in rows:
        table.add_row(
            r["name"],
            r["role"],
            r["state"],
            str(r["timeline"] if r["timeline"] is not None else "-"),
            str(r["lag"] if r["lag"] is not None else "-"),
            r["site"] or "-",
            str(r["port"]),
            _staleness_cell(r),
            r.get("link", "-"),
        )
    Console(markup=False, highlight=False).print(table)


def _staleness_cell(row: dict[str, Any]) -> str:
    """An age, or why there is none: "no heartbeat" before the first beat is written."""
    if row.get("staleness_s") is not None:
        return str(row["staleness_s"])
    return {"none": "no heartbeat", "no schema": "no schema"}.get(row.get("heartbeat", ""), "-")


@cluster.command("down", short_help="Stop every node and link proxy.")
@_cluster_dir
def cluster_down(directory: Path) -> None:
    """Stop every node and link proxy; leave no process behind."""
    from certstatus.cluster.local import Cluster

    with user_errors(_cluster_error()):
        Cluster.load(directory).down()
    click.echo(f"stopped {directory}")


@cluster.command("fault", short_help="Inject a real fault into a node.")
@_cluster_dir
@click.argument("node")
@click.argument("action", type=click.Choice(list(FAULTS)))
@click.argument("milliseconds", type=int, required=False)
def cluster_fault(directory: Path, node: str, action: str, milliseconds: int | None) -> None:
    """Inject a real fault into NODE (delay-link takes MILLISECONDS).

    Under --ha, NODE may be "leader" (whoever leads now); kill-leader SIGKILLs its Patroni and
    PostgreSQL, isolate-leader cuts it from etcd and its standbys, kill SIGKILLs any node,
    start brings a stopped or killed node back, heal-link ends an isolation."""
    from certstatus.cluster.faults import apply_fault
    from certstatus.cluster.local import Cluster

    with user_errors(_cluster_error()):
        running = Cluster.load(directory)
        apply_fault(running, running.node(node), action, milliseconds)
    click.echo(f"{node}: {action} done")


@cluster.command("rebuild", short_help="Re-seed a replica from a base backup.")
@_cluster_dir
@click.argument("node")
def cluster_rebuild(directory: Path, node: str) -> None:
    """Re-seed a replica from a fresh base backup (after lose-wal, for instance)."""
    from certstatus.cluster.local import Cluster

    with user_errors(_cluster_error()):
        running = Cluster.load(directory)
        running.rebuild(running.node(node))
    click.echo(f"{node}: rebuilt")
