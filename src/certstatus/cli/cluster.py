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
def cluster_up(
    directory: Path, replicas: int, sites: str | None, keep_wal_mb: int, shared_buffers_mb: int
) -> None:
    """Start a primary and hot-standby replicas on loopback; write certstatus.toml in --dir."""
    from certstatus.cluster.local import Cluster, parse_sites
    from certstatus.cluster.setup import write_deployment

    with user_errors(_cluster_error()):
        count = len(parse_sites(sites, replicas)) if sites else replicas
        started = Cluster.up(directory, count, sites, keep_wal_mb, shared_buffers_mb)
        config = write_deployment(started)
    for node in started.nodes:
        click.echo(f"{node.name:>8} {node.role:<8} {node.site or '-':<4} {node.url}")
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
            "yes" if r["up"] else "no",
            _staleness_cell(r),
            r.get("link", "-"),
            str(r.get("slot_wal_status", "-")),
            str(r.get("slot_safe_wal_size", "-")),
        )
    # into a pipe or a file, rich would squeeze the table into 80 columns and cut every value
    wide = None if sys.stdout.isatty() else 200
    Console(markup=False, highlight=False, width=wide).print(table)


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
    """Inject a real fault into NODE (delay-link takes MILLISECONDS)."""
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
