"""`certstatus drill NAME`: a failure drill on a fresh local cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from certstatus.cli import user_errors
from certstatus.cluster.faults import DRILLS


@click.command(short_help="Run a failure drill on a local cluster.")
@click.argument("name", type=click.Choice([*DRILLS, "failover"]))
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
@click.option(
    "--rounds", type=click.IntRange(1, 20), default=3, show_default=True, help="failover only"
)
@click.option(
    "--variant",
    type=click.Choice(["kill", "isolate", "both"]),
    default="both",
    show_default=True,
    help="failover only: kill the leader, isolate it, or both (rounds of each).",
)
def drill(
    name: str, as_json: bool, hold: float, keep: Path | None, rounds: int, variant: str
) -> None:
    """Run a failure drill on a fresh local cluster and report what every client saw.

    incident: the founding incident, lose-wal on 2 of 3 replicas under load. pause-replay,
    stall-link: one replica stops applying or receiving WAL. primary-down: the primary stops.
    failover: under Patroni (cluster up --ha), the leader killed or isolated, repeatedly.
    """
    from certstatus.cluster.local import ClusterError
    from certstatus.drill import run_drill
    from certstatus.drill.failover import FailoverReport, run_failover_drill
    from certstatus.drill.runner import DrillReport

    report: DrillReport | FailoverReport
    with user_errors(ClusterError):
        if name == "failover":
            variants = ("kill", "isolate") if variant == "both" else (variant,)
            report = run_failover_drill(rounds, variants, directory=keep)
        else:
            report = run_drill(name, hold=hold, directory=keep)
    click.echo(report.to_json())
    if not as_json:
        verdict = (
            click.style("PASSED", fg="green") if report.passed else click.style("FAILED", fg="red")
        )
        click.echo(f"drill {name}: {verdict}")
    if not report.passed:
        sys.exit(1)
