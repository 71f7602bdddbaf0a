"""Storage: an interface per role (base.py), SQLite and PostgreSQL behind them, the SQL both
engines share written once (shared.py, purgequeue.py, monitoring.py)."""

from __future__ import annotations

from pathlib import Path

from certstatus.store.base import Heartbeat, ReplicationReads, Store, StoreError


def open_store(url: str, base_dir: Path | None = None) -> Store:
    """Open the store a database URL names: `sqlite:///abs.db`, `sqlite:rel.db` or a plain path."""
    if url.startswith(("postgres://", "postgresql://")):
        from certstatus.store.postgres import PostgresStore

        return PostgresStore(url)
    from certstatus.store.sqlite import SqliteStore

    return SqliteStore(sqlite_path(url, base_dir))


def open_existing_store(url: str, base_dir: Path | None = None) -> Store:
    """open_store for commands that read or change what is recorded (stats, revoke, audit,
    site, response-format): a SQLite file that does not exist is a mistyped path, refused,
    rather than an empty database created there whose answers ("0 certificates", "unknown
    serial") mislead. The processes of a deployment (add, serve, signer, monitor, api) still
    create it, in whatever order they start."""
    if not url.startswith(("postgres://", "postgresql://")):
        path = sqlite_path(url, base_dir)
        if not path.exists():
            raise StoreError(
                f"database: {path} does not exist; check `database` in the configuration "
                "(a new deployment's database is created by `certstatus add`, `serve`, `signer`, "
                "`monitor` or `api`)"
            )
    return open_store(url, base_dir)


def heartbeat_of(store: Store) -> Heartbeat | None:
    """The store's heartbeat when its engine has one (PostgreSQL: replicas to measure), else
    None (one SQLite file has no replica to fall behind). Callers ask this instead of
    branching on the configured engine."""
    return store if isinstance(store, Heartbeat) else None


def replication_of(store: Store) -> ReplicationReads | None:
    """The primary's replication view (slots, WAL retention, heartbeat) on PostgreSQL, else
    None: what the monitor's replication probe reads."""
    return store if isinstance(store, ReplicationReads) else None


def sqlite_path(url: str, base_dir: Path | None = None) -> Path:
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite://") :])
    elif url.startswith("sqlite:"):
        path = Path(url[len("sqlite:") :])
    else:
        path = Path(url)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


__all__ = [
    "Heartbeat",
    "ReplicationReads",
    "Store",
    "StoreError",
    "heartbeat_of",
    "open_existing_store",
    "open_store",
    "replication_of",
    "sqlite_path",
]
