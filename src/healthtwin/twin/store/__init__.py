"""healthtwin.twin.store: the Store interface and its backends.

``open_store(location)`` picks the backend from the location: a ``postgresql://`` (or
``postgres://``) URL opens a :class:`PostgresStore`, anything else is a DuckDB file path
(``":memory:"`` for a throwaway store).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from healthtwin.twin.store.base import Store, StoreError


def is_postgres_url(location: str) -> bool:
    """True for ``postgresql://...`` / ``postgres://...`` connection URLs."""
    return location.startswith(("postgresql://", "postgres://"))


def mask_password(location: str) -> str:
    """The location with any password in a URL replaced by ``***`` (for messages)."""
    if not is_postgres_url(location):
        return location
    parts = urlsplit(location)
    if parts.password is not None:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1))
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "password" for k, _ in query):
        masked = [(k, "***" if k == "password" else v) for k, v in query]
        parts = parts._replace(query=urlencode(masked, safe="*"))
    return urlunsplit(parts)


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


__all__ = ["Store", "StoreError", "is_postgres_url", "mask_password", "open_store"]
