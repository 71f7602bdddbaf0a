"""`certstatus responder-cert request|install`: rotating a delegated responder certificate
(R6, R21) without stopping the signers (keys/rotation.py says how)."""

from __future__ import annotations

from pathlib import Path

import click

from certstatus.cli import config_option, load, note, user_errors
from certstatus.keys.certificates import load_certificate
from certstatus.keys.rotation import Rotation, RotationError


@click.group("responder-cert", short_help="Rotate a delegated responder certificate.")
def responder_cert() -> None:
    """Rotate a delegated OCSP responder certificate: request (new key + CSR), install."""


@responder_cert.command("request", short_help="New responder key and its CSR (R6 profile).")
@config_option
@click.option("--issuer", "issuer_name", required=True, help="Issuer name in the config.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write the CSR (default: <responder_certificate>.csr next to it).",
)
def request(config_path: Path, issuer_name: str, out: Path | None) -> None:
    """Create the new responder key (in the token, or a 0600 PEM file beside the current one)
    and write a CSR asking for the R6 profile. The current key keeps signing."""
    with user_errors(RotationError):
        config = load(config_path)
        rotation = Rotation.of(config, issuer_name)
        target = out or rotation.issuer.responder_certificate.with_suffix(".csr")
        rotation.request(target)
    note(f"new responder key: {rotation.pending}")
    note(f"CSR (R6 profile) written to {target}; have the CA issue it, then run:")
    click.echo(
        f"certstatus responder-cert install --config {config_path} --issuer {issuer_name} CERT.pem"
    )


@responder_cert.command("install", short_help="Check and install the new certificate.")
@config_option
@click.option("--issuer", "issuer_name", required=True, help="Issuer name in the config.")
@click.option(
    "--self-issue",
    is_flag=True,
    help="Demo: issue the certificate with the issuer key instead of reading CERT.",
)
@click.argument("certificate", required=False, type=click.Path(path_type=Path))
def install(
    config_path: Path, issuer_name: str, self_issue: bool, certificate: Path | None
) -> None:
    """Check CERTIFICATE (issued by the issuer, R6 profile, for the pending key) and make it
    and its key the ones new responses are signed with; running signers switch by themselves
    within seconds. Responses signed before stay valid until their nextUpdate."""
    with user_errors(RotationError):
        config = load(config_path)
        rotation = Rotation.of(config, issuer_name)
        if self_issue == (certificate is not None):
            raise RotationError("give the certificate file, or --self-issue (demo), not both")
        issued = rotation.self_issue() if certificate is None else load_certificate(certificate)
        stamp = rotation.install(issued)
    note(
        f"installed responder certificate {issued.serial_number:x} for {issuer_name}; "
        f"the previous certificate and key are kept with the suffix {stamp}"
    )
