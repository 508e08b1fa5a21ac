"""A real app on a real DuckDB store with ingested fixtures; tokens minted with test keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_helpers import SECRET, write_fixture_ndjson

from healthtwin.serve.app import create_app
from healthtwin.serve.auth import mint_token
from healthtwin.serve.settings import Settings
from healthtwin.thread.fhir.ingest import ingest_paths
from healthtwin.twin.store.duckdb_store import DuckDBStore


@pytest.fixture(scope="session")
def store_file(tmp_path_factory: pytest.TempPathFactory, fixtures: Path) -> Path:
    d = tmp_path_factory.mktemp("serve")
    write_fixture_ndjson(d)
    path = d / "store.duckdb"
    with DuckDBStore(path) as st:
        ingest_paths(st, [str(d / "two-patients.ndjson"), str(fixtures / "fhir" / "bulk")])
    return path


@pytest.fixture
def store(store_file: Path, tmp_path: Path) -> Iterator[DuckDBStore]:
    """A private copy of the session store (tests may write)."""
    p = tmp_path / "s.duckdb"
    p.write_bytes(store_file.read_bytes())
    st = DuckDBStore(p)
    yield st
    st.close()


@pytest.fixture
def settings() -> Settings:
    return Settings(jwt_secret=SECRET, audit_flush_s=0.01, sim_rate=0.2, sim_burst=2)


@pytest.fixture
def token() -> Callable[..., str]:
    def make(
        scope: str = "user/*.cruds",
        patient: str | None = None,
        role: str | None = None,
        sub: str = "tester",
    ) -> str:
        return mint_token(SECRET, sub=sub, scope=scope, patient=patient, role=role)

    return make


@pytest.fixture
def client(settings: Settings, store: DuckDBStore) -> Iterator[TestClient]:
    """The real app (lifespan run) over httpx, on the real store."""
    app = create_app(settings, store=store)
    with TestClient(app) as c:
        yield c
