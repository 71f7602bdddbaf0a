"""`certstatus check-config`: a deployment's file, certificates and keys, checked before use."""

from __future__ import annotations

from pathlib import Path

import click

from certstatus.cli import config_option, load, user_errors
from certstatus.config import load_issuer_certificates, load_issuer_material

ROLES = ("signer", "responder")


@click.command("check-config", short_help="Validate a configuration, its certificates and keys.")
@config_option
@click.option(
    "--role",
    type=click.Choice(ROLES),
    default="signer",
    show_default=True,
    help="responder: a web node's view, certificates only, no key file opened (R25); "
    "signer: the signing roles' view, keys included.",
)
def check_config(config_path: Path, role: str) -> None:
    """Validate a configuration file, its certificates and, for the signing roles, its keys
    (R3, R4, R6, R21, R25).

    Every problem is reported at once, one line each, naming its key and the fix.
    """
    with user_errors():
        config = load(config_path)
        if role == "responder":
            count = len(load_issuer_certificates(config))
        else:
            count = len(load_issuer_material(config))
    # one line, whatever the path's length: scripts grep it
    click.echo(
        f"{click.style('ok', fg='green')}: {config_path}: {count} issuer(s) ({role}); "
        f"responses valid {config.signing.policy.validity}s, refreshed after "
        f"{config.signing.policy.refresh_after}s"
    )
