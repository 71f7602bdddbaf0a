"""`certstatus api`: the issuance API role (its own listener, never the OCSP port)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from certstatus.cli import config_option, note, user_errors

if TYPE_CHECKING:
    from certstatus.api.app import ApiApp
    from certstatus.config import Config


def build_app(config_path: Path) -> tuple[Config, ApiApp]:
    """The configuration and the API app over its store (and its replicas, for ?wait=replicated)."""
    from certstatus.api.app import ApiApp
    from certstatus.config import ConfigError, load_config, load_issuer_certificates
    from certstatus.ingest.api import Ingest
    from certstatus.responder.server import listen_problem
    from certstatus.store import open_store

    config = load_config(config_path)
    problems = config.api.serving_problems()
    if problems:
        raise ConfigError([(f"api.{k}", m) for k, m in problems], config.path)
    if config.api.listen == config.responder.listen:
        raise ConfigError([("api.listen", "must not be the responder's listen")], config.path)
    busy = listen_problem(config.api.listen_host, config.api.listen_port)
    if busy is not None:
        raise ConfigError([("api.listen", busy)], config.path)
    ingest = Ingest(open_store(config.database, config.base_dir), load_issuer_certificates(config))
    replicas = []
    if config.replicas:
        from certstatus.store.postgres import PostgresStore

        replicas = [PostgresStore(r.url, read_only=True, name=r.name) for r in config.replicas]
    return config, ApiApp(config, ingest, replicas)


@click.command("api", short_help="Serve the issuance API (mutual TLS).")
@config_option
def api(config_path: Path) -> None:
    """Serve the issuance API on [api] listen: HTTPS with required client certificates, each
    client named in [[api.clients]] with its permissions; every change and refusal audited."""
    from certstatus.api.server import run_api

    with user_errors():
        config, app = build_app(config_path)
        scheme = "http" if config.api.insecure_loopback else "https"
        note(f"issuance API on {scheme}://{config.api.listen}/v1/")
        run_api(config, app)
