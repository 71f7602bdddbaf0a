"""`certstatus crl build|export|disclosure`: certificate revocation lists."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from certstatus.cli import config_option, fail, load, user_errors
from certstatus.files import PUBLIC, write_file
from certstatus.ingest.api import IngestError
from certstatus.wiring import open_crl_service


@click.group(short_help="Build, export and disclose CRLs.")
def crl() -> None:
    """Certificate revocation lists: build, export for static hosting, CCADB disclosure."""


@crl.command("build", short_help="Build, gate and publish every CRL now.")
@config_option
def crl_build(config_path: Path) -> None:
    """Build, gate and publish every CRL now, due or not."""
    with user_errors():
        results = open_crl_service(load(config_path)).build_due(force=True)
    failed = 0
    for r in results:
        state = (
            click.style("published", fg="green")
            if r.published
            else click.style("NOT published", fg="red")
        )
        click.echo(f"{r.issuer}/{r.crl_partition}: #{r.number} {r.entries} entries {state}")
        for rejection in r.rejections:
            click.echo(f"  gate: {rejection.code}: {rejection.message}")
        failed += not r.published
    if failed:
        sys.exit(1)


@crl.command("export", short_help="Write the current CRLs as files.")
@config_option
@click.argument("directory", type=click.Path(path_type=Path))
def crl_export(config_path: Path, directory: Path) -> None:
    """Write the current CRLs under DIRECTORY at their URL paths, for static hosting."""
    if directory.exists() and not directory.is_dir():
        fail(f"{directory} is a file, not a directory; name a directory to write the CRLs under")
    with user_errors():
        service = open_crl_service(load(config_path))
        written = 0
        for issuer in service.issuers:
            for partition in service.partitions(issuer):
                current = service.store.current_crl(issuer.id, partition)
                if current is None:
                    continue
                target = directory / issuer.layout.path(partition).lstrip("/")
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    # atomic, and 0644 from creation: a web server never sees half a CRL, and
                    # must be able to read it whatever this process's umask
                    write_file(target, current.der, PUBLIC)
                except OSError as exc:
                    fail(f"cannot write {target}: {exc.strerror or exc}")
                written += 1
    click.echo(f"wrote {written} CRL(s) under {directory}")


@crl.command("disclosure", short_help="Print an issuer's CRL URLs for the CCADB.")
@config_option
@click.option("--issuer", "name", required=True, help="Issuer name from the configuration.")
def crl_disclosure(config_path: Path, name: str) -> None:
    """Print the CCADB JSON array of every CRL URL of an issuer (R20)."""
    with user_errors():
        config = load(config_path)
        service = open_crl_service(config)
        matches = [i for i in service.issuers if i.material.name == name]
        if not matches:
            configured = [i.name for i in config.issuers]
            with_crls = ", ".join(i.material.name for i in service.issuers)
            if name in configured:
                raise IngestError(
                    f"issuer {name!r} has no CRLs configured (crl_url and issuer_key); "
                    f"issuers with CRLs: {with_crls}"
                )
            raise IngestError(f"unknown issuer {name!r}; known issuers: {', '.join(configured)}")
        urls = [matches[0].layout.url(p) for p in service.partitions(matches[0])]
    click.echo(json.dumps(urls))
