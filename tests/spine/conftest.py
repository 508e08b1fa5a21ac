"""The ``backend`` fixture: every store-level spine test runs on DuckDB and on PostgreSQL."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any

import pytest

from healthtwin.twin.store import open_store
from healthtwin.twin.store.base import Store


class Backend:
    """Where a test's store lives: a DuckDB file, or a fresh schema in the session's cluster.

    ``open()`` opens (and on first use creates) the store at the current location; ``fresh()``
    moves to a new, empty location; ``sql()`` runs statements on a separate connection (as an
    intruder editing the database would), so close the store first on DuckDB.
    """

    def __init__(self, name: str, tmp_path: Path, pg_url: str | None) -> None:
        self.name = name
        self._tmp = tmp_path
        self._pg_url = pg_url
        self._n = itertools.count()
        self.location = ""
        self.fresh()

    def fresh(self) -> str:
        if self.name == "duckdb":
            self.location = str(self._tmp / f"store{next(self._n)}.duckdb")
        else:
            assert self._pg_url is not None
            self.location = f"{self._pg_url}?schema=t_{uuid.uuid4().hex[:12]}"
        return self.location

    def open(self, *, clock: Any = None, read_only: bool = False) -> Store:
        return open_store(self.location, clock=clock, read_only=read_only)

    def new(self, *, clock: Any = None) -> Store:
        """A store at a new, empty location (DuckDB: in memory, as fast as it gets)."""
        if self.name == "duckdb":
            return open_store(":memory:", clock=clock)
        self.fresh()
        return self.open(clock=clock)

    def sql(self, statements: str) -> None:
        """Run ``;``-separated statements on a new connection and commit."""
        stmts = [s for s in statements.split(";") if s.strip()]
        if self.name == "duckdb":
            import duckdb

            con = duckdb.connect(self.location)
            try:
                for s in stmts:
                    con.execute(s)
            finally:
                con.close()
            return
        import psycopg
        from psycopg import sql

        from healthtwin.twin.store.postgres_store import split_schema

        dsn, schema = split_schema(self.location)
        with psycopg.connect(dsn) as con:
            con.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema or "")))
            for s in stmts:
                con.execute(s)


BACKENDS = ["duckdb", "postgres"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("pg_cluster").url
    return Backend(request.param, tmp_path, url)
