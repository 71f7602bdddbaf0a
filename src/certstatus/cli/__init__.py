"""The `certstatus` command: one module per command group, each command a thin wrapper over the
library, and the helpers they share here.

The promise to an operator: every user error is exactly one line on stderr (per problem),
verbatim, with exit status 2, and nothing is written when a command is refused. Errors and
notes therefore go out through plain `click.echo`, never through rich: rich wraps at 80 columns
into a pipe or a file and reads `[[issuers]]` as markup. rich draws only the progress bar and
the cluster status table.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from certstatus.config import Config, ConfigError, load_config
from certstatus.ingest.api import IngestError
from certstatus.keys.base import KeyFileError
from certstatus.keys.certificates import CertificateError
from certstatus.store.base import StoreError

USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    IngestError,
    StoreError,
    KeyFileError,
    CertificateError,
)


def fail(message: str) -> NoReturn:
    """A user error: the message as it is, on stderr, and exit status 2. A message of several
    problems (a configuration's) is one line per problem, each marked as an error."""
    for line in message.splitlines() or [""]:
        click.echo(f"error: {line}", err=True)
    sys.exit(2)


def note(message: str) -> None:
    """A line for the operator (progress, what is running): stderr, so stdout stays data."""
    click.echo(message, err=True)


@contextmanager
def user_errors(*extra: type[Exception]) -> Iterator[None]:
    """Turn expected failures (and a command's own `extra` ones) into one clear message and
    exit status 2, never a traceback."""
    try:
        yield
    except (*USER_ERRORS, *extra) as exc:
        fail(str(exc))


def config_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """`--config`, the one way every command is told its deployment."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        default=lambda: os.environ.get("CERTSTATUS_CONFIG", "certstatus.toml"),
        show_default="$CERTSTATUS_CONFIG or ./certstatus.toml",
        help="Deployment configuration (TOML).",
    )(function)


def dir_option(env: str, default: str, help: str) -> Callable[..., Any]:
    """`--dir`, the one way the local-infrastructure commands (cluster, cache) are told their
    working directory."""
    return click.option(
        "--dir",
        "directory",
        type=click.Path(path_type=Path),
        default=lambda: os.environ.get(env, default),
        show_default=f"${env} or ./{default}",
        help=help,
    )


def load(config_path: Path) -> Config:
    return load_config(config_path)


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr; none at all when there is nothing to do (no "signing 0/0")."""
    if total <= 0:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


class CertstatusGroup(click.Group):
    """click's own usage errors (a missing argument, a bad option value) are several lines of
    usage text; here they are one line like every other user error, with where to look."""

    def main(  # type: ignore[override]
        self, args: Any = None, prog_name: str | None = None, **extra: Any
    ) -> Any:
        if extra.get("standalone_mode", True) is False:
            return super().main(args, prog_name, **extra)
        extra["standalone_mode"] = False
        try:
            code = super().main(args, prog_name, **extra)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            fail(f"{exc.format_message()}{where}")
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=CertstatusGroup)
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
@click.version_option(package_name="certstatus")
def main(verbose: bool) -> None:
    """certstatus: records issuance and revocation, pre-signs OCSP responses, serves them."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # each failed connection attempt, in two lines: the error says it once
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def _register() -> None:
    """Attach every command group's commands to `main` (imported here: they use the helpers)."""
    from certstatus.cli.api import api
    from certstatus.cli.audit import audit
    from certstatus.cli.cache import cache
    from certstatus.cli.checkconfig import check_config
    from certstatus.cli.cluster import cluster
    from certstatus.cli.crl import crl
    from certstatus.cli.demo import demo
    from certstatus.cli.drill import drill
    from certstatus.cli.imports import import_group
    from certstatus.cli.monitor import monitor
    from certstatus.cli.records import add, revoke, stats
    from certstatus.cli.respondercert import responder_cert
    from certstatus.cli.responseformat import response_format
    from certstatus.cli.signing import serve, sign, signer
    from certstatus.cli.site import site

    commands = (
        check_config,
        add,
        revoke,
        stats,
        sign,
        signer,
        serve,
        crl,
        monitor,
        response_format,
    )
    groups = (api, audit, import_group, responder_cert, cache, cluster, drill, demo, site)
    for command in (*commands, *groups):
        main.add_command(command)


_register()
