"""cohort_frame on a PostgreSQL store equals cohort_frame on DuckDB (the oracle), same data."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from test_cohort_store import CODES, cohort_store  # noqa: F401  (fixture)

from healthtwin.research.cohort_data import CohortDataError, cohort_frame
from healthtwin.thread.fhir.ingest import ingest_paths
from healthtwin.twin.store.duckdb_store import DuckDBStore
from healthtwin.twin.store.postgres_store import PostgresStore


def test_cohort_frame_postgres_equals_duckdb(cohort_store: Path, pg_cluster) -> None:  # noqa: F811
    folder = cohort_store.parent  # the fixture's inputs: cohort.json, then the fix.json
    pg = PostgresStore(f"{pg_cluster.url}?schema=cohort")
    with pytest.raises(CohortDataError, match="no current Patient"):
        cohort_frame(pg, list(CODES))
    for name in ("cohort.json", "fix.json"):
        ingest_paths(pg, [str(folder / name)])
    calls = [
        {"codes": list(CODES), "min_age": 18},
        {"codes": list(CODES), "require_observation": False},
        {"codes": ["39156-5"], "at": date(2020, 1, 1)},
        {"codes": ["4548-4", "8480-6"], "at": date(2021, 6, 1)},
    ]
    with DuckDBStore(cohort_store, read_only=True) as duck:
        for kw in calls:
            want = cohort_frame(duck, **kw)
            got = cohort_frame(pg, **kw)
            assert len(want) > 0
            pd.testing.assert_frame_equal(got, want)
            assert got.attrs == want.attrs
    pg.close()
