"""`certstatus check-config`: a deployment's file, certificates and keys, checked before use."""

from __future__ import annotations

from pathlib import Path

import click

from certstatus.cli import config_option, load, user_errors
from certstatus.config import load_issuer_material


@click.command("check-config", short_help="Validate a configuration, its certificates and keys.")
@config_option
def check_config(config_path: Path) -> None:
    """Validate a configuration file, its certificates and keys (R3, R4, R6, R21).

    Every problem is reported at once, one line each, naming its key and the fix.
    """
    with user_errors():
        config = load(config_path)
        materials = load_issuer_material(config)
    # one line, whatever the path's length: scripts grep it
    click.echo(
        f"{click.style('ok', fg='green')}: {config_path}: {len(materials)} issuer(s); responses valid "
        f"{config.signing.policy.validity}s, refreshed after "
        f"{config.signing.policy.refresh_after}s"
    )
