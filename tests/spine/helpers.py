"""Small builders for spine tests (FHIR resources as dicts, a controllable clock)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any


class Clock:
    """A manual clock for stores: recorded times under test control (naive UTC)."""

    def __init__(self, start: datetime = datetime(2024, 1, 1)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def tick(self, **kw: float) -> datetime:
        self.now += timedelta(**kw)
        return self.now


def patient(pid: str = "p1", family: str = "Doe") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "gender": "female",
        "birthDate": "1970-02-03",
        "name": [{"family": family, "given": ["Jane"]}],
    }


def glucose(
    oid: str,
    value: float,
    unit: str = "mg/dL",
    when: str = "2024-01-01T08:00:00Z",
    status: str = "final",
    pid: str = "p1",
    code: str = "2339-0",
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }


def ndjson(*resources: dict[str, Any]) -> str:
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in resources)


def query(store: Any, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a read-only SQL query (written to run on DuckDB and PostgreSQL) on a store."""
    return store.con.execute(sql).fetchall()  # duckdb or psycopg connection
