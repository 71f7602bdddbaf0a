"""`certstatus site drain|restore|status`: take a whole site out of service in one command.

The founding incident's remedy: when a site's replicas cannot be trusted, every responder of
that site must stop receiving traffic at once. A drain is a row in the database (site_drains),
so it replicates to every responder, including those that read only replicas, and it
survives their restarts; each responder of the site then fails /readyz within its staleness
bound, and load balancers and the cache tier stop sending to it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from certstatus.cli import config_option, fail, load, user_errors
from certstatus.config import Config


def _known_sites(config: Config) -> set[str]:
    """Sites this deployment names: its replicas', its responder's, its monitor targets'."""
    sites = {r.site for r in config.replicas if r.site}
    sites |= {t.site for t in config.monitor_targets if t.site}
    if config.responder.site:
        sites.add(config.responder.site)
    return sites


def _store(config: Config) -> Any:
    from certstatus.store import open_existing_store

    return open_existing_store(config.database, config.base_dir)


@click.group(short_help="Drain and restore a whole site's responders.")
def site() -> None:
    """Drain a site (its responders fail /readyz), restore it, or list each site's state."""


@site.command("drain", short_help="Make every responder of SITE fail /readyz.")
@config_option
@click.argument("name")
@click.option("--note", default="", help="Why (shown by `site status`).")
def site_drain(config_path: Path, name: str, note: str) -> None:
    """Drain SITE: every responder configured with `site = SITE` fails /readyz within its
    max_staleness, until `certstatus site restore SITE`, restarts included."""
    with user_errors():
        config = load(config_path)
        known = _known_sites(config)
        if name not in known:
            fail(
                f"unknown site {name!r}; sites in {config_path}: {', '.join(sorted(known)) or 'none'}"
            )
        store = _store(config)
        try:
            store.drain_site(name, note, int(time.time()))
        finally:
            store.close()
    click.echo(f"site {name}: drained (its responders fail /readyz within seconds)")


@site.command("restore", short_help="Undo `site drain`.")
@config_option
@click.argument("name")
def site_restore(config_path: Path, name: str) -> None:
    """Restore SITE: its responders are ready again as soon as they have a fresh source."""
    with user_errors():
        store = _store(load(config_path))
        try:
            was = store.restore_site(name)
        finally:
            store.close()
    click.echo(f"site {name}: restored" if was else f"site {name}: was not drained")


@site.command("status", short_help="Each site: drained or not, its responders' readiness.")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def site_status(config_path: Path, as_json: bool) -> None:
    """Each site: whether it is drained, and each of its responders (the monitor's origin
    targets with a site) as the monitor probes them: /readyz and its reason."""
    from certstatus.monitor.targets import fetch

    with user_errors():
        config = load(config_path)
        store = _store(config)
        try:
            drained = store.drained_sites()
        finally:
            store.close()
    sites: dict[str, dict[str, Any]] = {}
    for name in sorted(_known_sites(config) | set(drained)):
        at, note = drained.get(name, (None, ""))
        sites[name] = {"site": name, "drained": name in drained, "drained_at": at, "note": note}
        sites[name]["responders"] = []
    for target in config.monitor_targets:
        if target.kind != "origin" or not target.site:
            continue
        answer = fetch(target.url.rstrip("/") + "/readyz", timeout=2)
        reason = answer.body.decode(errors="replace").strip() if answer.status else "unreachable"
        sites[target.site]["responders"].append(
            {"name": target.name, "url": target.url, "ready": answer.status == 200, "why": reason}
        )
    rows = list(sites.values())
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        state = "DRAINED" if row["drained"] else "in service"
        extra = ""
        if row["drained"]:
            since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(row["drained_at"]))
            extra = f" since {since}" + (f": {row['note']}" if row["note"] else "")
        click.echo(f"site {row['site']}: {state}{extra}")
        for r in row["responders"]:
            click.echo(f"  {r['name']:<12} {'ready' if r['ready'] else 'NOT READY':<10} {r['why']}")
