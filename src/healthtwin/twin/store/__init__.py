"""healthtwin.twin.store: the Store interface and its backends.

``open_store(location)`` picks the backend from the location: a ``postgresql://`` (or
``postgres://``) URL opens a :class:`PostgresStore`, anything else is a DuckDB file path
(``":memory:"`` for a throwaway store).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from healthtwin.twin.store.base import Store, StoreError


def is_postgres_url(location: str) -> bool:
    """True for ``postgresql://...`` / ``postgres://...`` connection URLs."""
    return location.startswith(("postgresql://", "postgres://"))


def open_store(
    location: str | Path, *, read_only: bool = False, clock: Any = None, **kw: Any
) -> Store:
    """Open the store at ``location``: a PostgreSQL URL or a DuckDB file path.

    PostgreSQL URLs may carry ``?schema=NAME`` (default: the server's ``search_path``).
    ``read_only`` on PostgreSQL makes every transaction read-only and requires the store to
    exist. Extra keywords go to the backend's constructor. Raises :class:`StoreError` when
    the store cannot be opened.
    """
    loc = str(location)
    if is_postgres_url(loc):
        from healthtwin.twin.store.postgres_store import PostgresStore

        return PostgresStore(loc, read_only=read_only, clock=clock, **kw)
    from healthtwin.twin.store.duckdb_store import DuckDBStore

    if read_only and loc != ":memory:" and not Path(loc).exists():
        raise StoreError(f"store {loc!r} does not exist (run `healthtwin ingest` first)")
    return DuckDBStore(loc, read_only=read_only, clock=clock, **kw)


__all__ = ["Store", "StoreError", "is_postgres_url", "open_store"]
