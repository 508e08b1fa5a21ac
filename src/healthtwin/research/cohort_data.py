"""A target cohort given as data in the store: one row per patient, one column per observable.

``cohort_frame(store, codes)`` runs one SQL query on the DuckDB store's ``records`` (current
Patient resources: birthDate, gender) and ``facts`` tables (current facts only:
``superseded_at IS NULL`` and status not ``entered-in-error``), takes the latest canonical value
per (patient, LOINC code) and pivots it. No per-patient loop.

Columns: ``patient`` (the FHIR subject, e.g. ``Patient/123``), ``age`` (a), ``female`` (1: 1.0
female, 0.0 male, NaN otherwise/unknown), and one column per code, named by the short names the
virtual-population model knows (``bmi``, ``sbp``, ``chol``, ``hba1c``) or ``loinc_<code>``.
Units are in ``df.attrs["units"]`` (column -> canonical UCUM unit) and the codes in
``df.attrs["codes"]`` (column -> LOINC code).

This is built on ``DuckDBStore.con`` (the public connection), not on a Store method: the Store
interface has no cohort/pivot query. On a ``PostgresStore`` the same query runs in PostgreSQL's
dialect through ``PostgresStore.read_sql``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from healthtwin.research.vpop import LOINC

LOINC_SYSTEM = "http://loinc.org"
DEFAULT_CODES: tuple[str, ...] = tuple(LOINC)  # BMI, systolic BP, total cholesterol, HbA1c


class CohortDataError(ValueError):
    """The store cannot give the requested cohort (no patients, mixed units, bad codes)."""


def column_name(code: str) -> str:
    """Short observable name for a LOINC code (``39156-5`` -> ``bmi``), else ``loinc_<code>``."""
    return LOINC.get(code, "loinc_" + code.replace("-", "_"))


_SQL = """
WITH pat AS (
  SELECT rid AS subject,
         TRY_CAST(json_extract_string(raw, '$.birthDate') AS DATE) AS birth,
         json_extract_string(raw, '$.gender') AS gender
  FROM records
  WHERE rtype = 'Patient' AND superseded_at IS NULL AND NOT deleted
),
f AS (
  SELECT subject, code, num_canonical, unit_canonical, effective,
         row_number() OVER (
           PARTITION BY subject, code ORDER BY effective DESC NULLS LAST, seq DESC
         ) AS rn
  FROM facts
  WHERE superseded_at IS NULL
    AND coalesce(status, '') <> 'entered-in-error'
    AND system = $system
    AND list_contains($codes, code)
    AND num_canonical IS NOT NULL
    AND ($at IS NULL OR effective <= $at)
)
SELECT p.subject, p.birth, p.gender, f.code, f.num_canonical, f.unit_canonical, f.effective
FROM pat p LEFT JOIN f ON f.subject = p.subject AND f.rn = 1
ORDER BY p.subject, f.code
"""

# The same query in PostgreSQL's dialect (PostgresStore); partial or invalid birth dates -> NULL.
_PG_SQL = """
WITH pat AS (
  SELECT rid AS subject, raw::jsonb ->> 'birthDate' AS birth_text,
         raw::jsonb ->> 'gender' AS gender
  FROM records
  WHERE rtype = 'Patient' AND superseded_at IS NULL AND NOT deleted
),
f AS (
  SELECT subject, code, num_canonical, unit_canonical, effective,
         row_number() OVER (
           PARTITION BY subject, code ORDER BY effective DESC NULLS LAST, seq DESC
         ) AS rn
  FROM facts
  WHERE superseded_at IS NULL
    AND coalesce(status, '') <> 'entered-in-error'
    AND system = %(system)s
    AND code = ANY(%(codes)s)
    AND num_canonical IS NOT NULL
    AND (%(at)s::timestamp IS NULL OR effective <= %(at)s::timestamp)
)
SELECT p.subject, p.birth_text AS birth, p.gender, f.code, f.num_canonical, f.unit_canonical,
       f.effective
FROM pat p LEFT JOIN f ON f.subject = p.subject AND f.rn = 1
ORDER BY p.subject, f.code
"""


def _pg_frame(store: Any, params: dict[str, Any]) -> pd.DataFrame:
    cols, rows = store.read_sql(_PG_SQL, params)
    raw = pd.DataFrame(rows, columns=cols)
    raw["birth"] = pd.to_datetime(raw["birth"], format="%Y-%m-%d", errors="coerce")
    raw["effective"] = pd.to_datetime(raw["effective"])
    raw["num_canonical"] = pd.to_numeric(raw["num_canonical"])
    return raw


def cohort_frame(
    store: Any,
    codes: Sequence[str] = DEFAULT_CODES,
    *,
    at: date | datetime | None = None,
    min_age: float | None = None,
    require_observation: bool = True,
) -> pd.DataFrame:
    """Patient × observable frame from a DuckDB store (see module docstring).

    ``at``: reference date. When given, only facts effective on or before it count and age is
    taken at ``at``; when None, age is taken at each patient's latest selected observation.
    ``min_age``: keep patients at least this old (a). ``require_observation``: drop patients
    with none of the codes observed.
    """
    codes = list(dict.fromkeys(c.strip() for c in codes if c.strip()))
    if not codes:
        raise CohortDataError("no LOINC codes given")
    names = [column_name(c) for c in codes]
    pg = hasattr(store, "read_sql")  # PostgresStore: its own SQL dialect
    con = None if pg else getattr(store, "con", None)
    if con is None and not pg:
        raise CohortDataError(
            f"{type(store).__name__} has no SQL connection; cohort_frame needs DuckDBStore "
            "or PostgresStore"
        )
    at_ts = None
    if at is not None:
        at_ts = pd.Timestamp(at)
        if at_ts.tzinfo is not None:  # the store keeps naive UTC timestamps
            at_ts = at_ts.tz_convert("UTC").tz_localize(None)
        if not isinstance(at, datetime):  # a date means the whole day
            at_ts = at_ts + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
    params = {
        "system": LOINC_SYSTEM,
        "codes": codes,
        "at": None if at_ts is None else at_ts.to_pydatetime(),
    }
    raw = con.execute(_SQL, params).df() if con is not None else _pg_frame(store, params)
    if raw.empty:
        raise CohortDataError("the store holds no current Patient resources")

    units: dict[str, str] = {"age": "a", "female": "1"}
    obs = raw.dropna(subset=["code"])
    for code, name in zip(codes, names, strict=True):
        u = sorted(set(obs.loc[obs["code"] == code, "unit_canonical"].dropna()))
        if len(u) > 1:
            raise CohortDataError(
                f"LOINC {code} ({name}) has mixed canonical units in the store: {u}"
            )
        units[name] = u[0] if u else ""

    pats = raw.drop_duplicates("subject").set_index("subject")[["birth", "gender"]]
    values = obs.pivot(index="subject", columns="code", values="num_canonical")
    values = values.reindex(index=pats.index, columns=codes)
    values.columns = pd.Index(names)
    last = obs.groupby("subject")["effective"].max().reindex(pats.index)

    birth = pd.to_datetime(pats["birth"])
    ref = (
        pd.Series(at_ts.normalize(), index=pats.index) if at_ts is not None else last.dt.normalize()
    )
    age = (ref - birth).dt.days / 365.25
    female = pats["gender"].map({"female": 1.0, "male": 0.0}).astype(float)

    df = pd.DataFrame({"age": age, "female": female}).join(values)
    df.index.name = "patient"
    if require_observation:
        df = df[values.notna().any(axis=1)]
    if min_age is not None:
        df = df[df["age"] >= min_age]
    df = df.reset_index()
    df[["age", "female", *names]] = df[["age", "female", *names]].astype(np.float64)
    df.attrs["units"] = units
    df.attrs["codes"] = dict(zip(names, codes, strict=True))
    df.attrs["reference"] = None if at is None else str(at)
    return df
