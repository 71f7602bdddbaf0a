"""`certstatus cache up|status|down`: a local Varnish in front of the responders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from certstatus.cli import dir_option, fail, note, user_errors


def _cache_dir(function: Any) -> Any:
    return dir_option(
        "CERTSTATUS_CACHE", "certstatus-cache", "Directory of the cache's state and files."
    )(function)


def _cache_error() -> type[Exception]:
    from certstatus.cache.varnish import CacheError

    return CacheError


@click.group(short_help="A local Varnish in front of the responders.")
def cache() -> None:
    """A local Varnish in front of the responders (deploy/varnish/certstatus.vcl)."""


@cache.command("up", short_help="Start Varnish in front of responders.")
@_cache_dir
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

    with user_errors(_cache_error()):
        state = LocalVarnish(directory).up(list(origins), port, memory)
    note(f"cache listening on {state.url} in front of {', '.join(state.origins)}")
    note("to purge it on status changes, add to certstatus.toml:")
    click.echo(f'[[caches]]\nname = "local"\nkind = "varnish"\nurl = "{state.url}"')


@cache.command("status", short_help="Whether the cache runs; hits, misses, origins.")
@_cache_dir
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cache_status(directory: Path, as_json: bool) -> None:
    """Whether the cache runs, its hit/miss counters and each origin's probe verdict."""
    from certstatus.cache.varnish import LocalVarnish

    local = LocalVarnish(directory)
    state = local.state()
    if state is None:
        fail(f"no cache running from {directory}")
    with user_errors(_cache_error()):
        counters, health = local.stats(), local.origin_health()
    if as_json:
        click.echo(json.dumps({"url": state.url, "stats": counters, "origins": health}, indent=2))
        return
    click.echo(f"cache {state.url} (pid {state.pid})")
    for name, value in counters.items():
        click.echo(f"{name:>16}: {value}")
    for (name, healthy), address in zip(health.items(), state.origins, strict=False):
        click.echo(f"{name:>16}: {address} {'healthy' if healthy else 'SICK'}")


@cache.command("down", short_help="Stop the cache.")
@_cache_dir
def cache_down(directory: Path) -> None:
    """Stop the cache started from --dir."""
    from certstatus.cache.varnish import LocalVarnish

    stopped = LocalVarnish(directory).down()
    note("cache stopped" if stopped else "no cache was running")
