"""Live start: initialise a run from the current census and forecast the next hours.

The census is a plain model (patients present with class, step/location, acuity and
since-when; staff on shift per station), so any source can feed it: a JSON/CSV file, or
FHIR Encounter dicts through :func:`census_from_fhir` (status arrived / triaged /
in-progress, ``location`` references mapped to stations). Forecasts are simulated: for each
horizon (default 4, 8, 24 h) occupancy per station, patients waiting, boarding and patients
over the 4-hour target, as mean and 90 % prediction interval across replications.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from healthtwin.operations.calibrate import ACTIVE_STATUSES
from healthtwin.operations.engine import InitialPatient, RunOptions, run_replications
from healthtwin.operations.spec import FacilitySpec, SpecError


class CensusPatient(BaseModel):
    """One patient present: ``cls``/``step`` name a class and pathway step of the spec."""

    model_config = ConfigDict(extra="forbid")
    id: str
    cls: str
    step: str
    acuity: int | None = Field(default=None, ge=1, le=5)
    arrived: datetime
    since: datetime | None = None
    in_service: bool = False


class StaffOnShift(BaseModel):
    """Servers on duty at a station now, until ``until`` (then the spec's schedule applies)."""

    model_config = ConfigDict(extra="forbid")
    station: str
    servers: int = Field(ge=0)
    until: datetime


class Census(BaseModel):
    """Who is where since when, and which staff are on shift, at ``as_of``."""

    model_config = ConfigDict(extra="forbid")
    as_of: datetime
    patients: list[CensusPatient] = Field(default_factory=list)
    staff: list[StaffOnShift] = Field(default_factory=list)

    @classmethod
    def from_file(cls, path: str | Path) -> Census:
        """JSON (this model) or CSV (patient rows; ``as_of`` = latest ``since``/``arrived``)."""
        p = Path(path)
        if p.suffix.lower() == ".csv":
            df = pd.read_csv(p)
            recs = df.to_dict(orient="records")
            pats = [
                CensusPatient.model_validate({k: v for k, v in r.items() if pd.notna(v)})
                for r in recs
            ]
            as_of = max((q.since or q.arrived) for q in pats)
            return cls(as_of=as_of, patients=pats)
        return cls.model_validate_json(p.read_text())

    def to_options(self, spec: FacilitySpec) -> RunOptions:
        """Engine options (times in min relative to ``as_of``); checks names against the spec."""
        init: list[InitialPatient] = []
        for i, q in enumerate(self.patients):
            where = f"census.patients[{i}] ({q.id})"
            if q.cls not in spec.classes:
                raise SpecError(f"{where}.cls: unknown class {q.cls!r}")
            steps = [s.name for s in spec.classes[q.cls].pathway]
            if q.step not in steps:
                raise SpecError(f"{where}.step: {q.step!r} is not a step of class {q.cls!r}")
            arrived = (q.arrived - self.as_of).total_seconds() / 60.0
            since = ((q.since or q.arrived) - self.as_of).total_seconds() / 60.0
            if arrived > 1e-9 or since > 1e-9:
                raise SpecError(f"{where}: arrived/since is after as_of {self.as_of.isoformat()}")
            init.append(InitialPatient(q.cls, q.step, arrived, since, q.in_service))
        cap: dict[str, tuple[int, float]] = {}
        for i, s in enumerate(self.staff):
            if s.station not in spec.stations:
                raise SpecError(f"census.staff[{i}].station: unknown station {s.station!r}")
            cap[s.station] = (s.servers, (s.until - self.as_of).total_seconds() / 60.0)
        return RunOptions(initial=init, capacity=cap)


def census_from_fhir(
    encounters: Iterable[Mapping[str, Any]],
    location_map: Mapping[str, tuple[str, str, str]],
    as_of: datetime,
    in_service_statuses: Sequence[str] = ("in-progress",),
) -> Census:
    """Active FHIR Encounter dicts -> :class:`Census` (pure function).

    ``location_map`` maps a Location reference (``Location/123`` or a display) to
    ``(station, class, step)``. Encounters with status arrived / triaged / in-progress /
    onleave are kept; ``period.start`` is the arrival; the latest ``location[].period.start``
    (else the arrival) is since-when; in-progress means in service. Unmapped locations raise.
    """
    pats: list[CensusPatient] = []
    for i, e in enumerate(encounters):
        if e.get("resourceType") != "Encounter" or e.get("status") not in ACTIVE_STATUSES:
            continue
        start = (e.get("period") or {}).get("start")
        if start is None:
            raise SpecError(f"encounters[{i}] ({e.get('id')}): active but no period.start")
        locs = e.get("location") or []
        if not locs:
            raise SpecError(f"encounters[{i}] ({e.get('id')}): active but no location")
        last = locs[-1]
        loc = last.get("location") or {}
        ref = str(loc.get("reference") or loc.get("display") or "")
        if ref not in location_map:
            raise SpecError(f"encounters[{i}].location: {ref!r} not in location_map")
        _, cls, step = location_map[ref]
        since = (last.get("period") or {}).get("start") or start
        pats.append(
            CensusPatient(
                id=str(e.get("id")),
                cls=cls,
                step=step,
                arrived=pd.Timestamp(start).to_pydatetime(),
                since=pd.Timestamp(since).to_pydatetime(),
                in_service=e.get("status") in in_service_statuses,
            )
        )
    return Census(as_of=as_of, patients=pats)


def forecast(
    spec: FacilitySpec,
    census: Census,
    hours: Sequence[float] = (4, 8, 24),
    n_reps: int = 50,
    seed: int = 0,
    workers: int = 1,
) -> pd.DataFrame:
    """Simulated forecast from the census: rows = (horizon h, quantity) with mean, p05, p95.

    Quantities at each horizon: busy servers per station (1), patients present, in the
    emergency area, waiting, boarding and over the target (1); and cumulative from ``as_of``:
    mean wait of service starts (min), boarding hours (h) and patients who left unseen (1).
    The spec's clock is moved to ``census.as_of`` (hour of day, weekday) and its warm-up is 0.
    """
    h_max = max(hours) * 60.0
    sp = spec.model_copy(
        update={
            "horizon": h_max,
            "warmup": 0.0,
            "start_hour": census.as_of.hour + census.as_of.minute / 60.0,
            "start_weekday": census.as_of.weekday(),
            "sample_every": 60.0,
        }
    )
    opt = census.to_options(sp)
    opt.horizons = [h * 60.0 for h in hours]
    res = run_replications(sp, n_reps, seed, workers, opt)
    rows = []
    for h in hours:
        t = h * 60.0
        keys = res[0].horizon_stats[t].keys()
        for k in keys:
            v = np.array([r.horizon_stats[t][k] for r in res])
            rows.append((h, k, v.mean(), *np.percentile(v, [5, 95])))
        idx = int(round(t / 60.0))
        for si, st in enumerate(res[0].stations):
            v = np.array(
                [r.occupancy[min(idx, r.occupancy.shape[0] - 1), si] for r in res], dtype=float
            )
            rows.append((h, f"busy/{st}[1]", v.mean(), *np.percentile(v, [5, 95])))
    out = pd.DataFrame(rows, columns=["horizon[h]", "quantity", "mean", "p05", "p95"])
    out.attrs["simulated"] = True
    return out
