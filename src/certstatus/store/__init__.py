"""Storage: one interface (base.Store), SQLite now, PostgreSQL behind the same interface later."""

from __future__ import annotations

from pathlib import Path

from certstatus.store.base import Store, StoreError


def open_store(url: str, base_dir: Path | None = None) -> Store:
    """Open the store a database URL names: `sqlite:///abs.db`, `sqlite:rel.db` or a plain path."""
    if url.startswith(("postgres://", "postgresql://")):
        from certstatus.store.postgres import PostgresStore

        return PostgresStore(url)
    from certstatus.store.sqlite import SqliteStore

    return SqliteStore(sqlite_path(url, base_dir))


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


__all__ = ["Store", "StoreError", "open_store", "sqlite_path"]
