"""Live start from a census (plain model and FHIR Encounter adapter) and forecasts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from healthtwin.operations.live import (
    Census,
    CensusPatient,
    StaffOnShift,
    census_from_fhir,
    forecast,
)
from healthtwin.operations.spec import SpecError, load_spec, parse_spec

DATA = Path(__file__).parent / "data"
NOW = datetime(2026, 1, 19, 1, 0, tzinfo=UTC)


def _inf_spec() -> dict:
    return {
        "name": "beds",
        "horizon": 60,
        "stations": {"ward": {"servers": 0, "infinite": True, "kind": "ward"}},
        "classes": {
            "p": {
                "share": 1.0,
                "pathway": [
                    {
                        "name": "stay",
                        "station": "ward",
                        "service": {"dist": "exponential", "mean": 600.0},
                    }
                ],
            }
        },
        "arrivals": {"profile": [0.0]},
    }


def test_forecast_exponential_census_is_binomial() -> None:
    # 40 patients in service with exponential stays (mean 600 min), no arrivals: at 4 h each
    # remains with probability exp(-240/600) (memoryless) -> Binomial(40, p) still present.
    spec = parse_spec(_inf_spec())
    census = Census(
        as_of=NOW,
        patients=[
            CensusPatient(
                id=str(i), cls="p", step="stay", arrived=NOW - timedelta(hours=3), in_service=True
            )
            for i in range(40)
        ],
    )
    fc = forecast(spec, census, hours=(4,), n_reps=200, seed=1)
    row = fc[(fc["quantity"] == "busy/ward[1]")].iloc[0]
    p = np.exp(-240 / 600)
    # mean of 200 binomial draws: SE = sqrt(40 p (1-p) / 200); 4-SE band
    assert abs(row["mean"] - 40 * p) <= 4 * np.sqrt(40 * p * (1 - p) / 200)
    lo, hi = stats.binom(40, p).ppf([0.05, 0.95])
    assert lo - 2 <= row["p05"] <= lo + 2 and hi - 2 <= row["p95"] <= hi + 2
    over = fc[fc["quantity"] == "over_target_present[1]"].iloc[0]
    assert over["mean"] == 0  # ward patients are not in the emergency area


def test_census_validation_names_field() -> None:
    spec = load_spec("ed")
    bad = Census(as_of=NOW, patients=[CensusPatient(id="x", cls="major", step="nope", arrived=NOW)])
    with pytest.raises(SpecError, match=r"census.patients\[0\] \(x\).step"):
        bad.to_options(spec)
    late = Census(
        as_of=NOW,
        patients=[
            CensusPatient(id="y", cls="major", step="treat", arrived=NOW + timedelta(minutes=5))
        ],
    )
    with pytest.raises(SpecError, match="after as_of"):
        late.to_options(spec)
    staff = Census(as_of=NOW, staff=[StaffOnShift(station="nowhere", servers=2, until=NOW)])
    with pytest.raises(SpecError, match=r"census.staff\[0\].station"):
        staff.to_options(spec)


def test_census_from_fhir_fixture_and_ed_forecast() -> None:
    encs = [json.loads(x) for x in (DATA / "encounters_small.ndjson").read_text().splitlines()]
    lm = {
        "Location/ed-waiting": ("assessment", "major", "assess"),
        "Location/ed-cubicles": ("cubicles", "major", "treat"),
        "Location/ward-a": ("ward", "major", "admit"),
    }
    census = census_from_fhir(encs, lm, NOW)
    assert len(census.patients) == 5
    assert sum(p.in_service for p in census.patients) == 3
    waiting = [p for p in census.patients if not p.in_service]
    assert {p.step for p in waiting} == {"assess"}
    census.staff.append(
        StaffOnShift(station="assessment", servers=1, until=NOW + timedelta(hours=2))
    )
    fc = forecast(load_spec("ed"), census, hours=(4, 8, 24), n_reps=8, seed=2)
    assert set(fc["horizon[h]"]) == {4, 8, 24}
    assert {"wait_mean_so_far[min]", "boarding_so_far[h]", "lwbs_so_far[1]"} <= set(fc["quantity"])
    cum = fc[fc["quantity"] == "boarding_so_far[h]"].sort_values("horizon[h]")["mean"].to_numpy()
    assert (np.diff(cum) >= -1e-12).all()  # cumulative quantities never decrease
    assert (fc["p05"] <= fc["mean"] + 1e-9).all() and (fc["mean"] <= fc["p95"] + 1e-9).all()
    with pytest.raises(SpecError, match="not in location_map"):
        census_from_fhir(encs, {}, NOW)


def test_census_csv(tmp_path: Path) -> None:
    p = tmp_path / "census.csv"
    p.write_text(
        "id,cls,step,arrived,since,in_service\n"
        "a,major,treat,2026-01-19T00:00:00+00:00,2026-01-19T00:30:00+00:00,true\n"
        "b,minor,assess,2026-01-19T00:40:00+00:00,,false\n"
    )
    c = Census.from_file(p)
    assert c.as_of == datetime(2026, 1, 19, 0, 40, tzinfo=UTC)
    opt = c.to_options(load_spec("ed"))
    assert [ip.since for ip in opt.initial] == [-10.0, 0.0]


def test_staff_override_then_schedule() -> None:
    # Station with a schedule 0-8 h: 1 server, 8-24 h: 3 servers; run from 06:00. Census says
    # 0 servers until 07:00 then the schedule: 1 server 07-08, 3 from 08:00. Deterministic
    # 30-min services of 4 waiting patients: starts at 60 (1 server), 90 -> at 120 three free.
    from healthtwin.operations.engine import run_replication

    spec = parse_spec(
        {
            "name": "shift",
            "horizon": 600,
            "start_hour": 6,
            "stations": {
                "s": {
                    "servers": 1,
                    "schedule": [{"start_hour": 0, "servers": 1}, {"start_hour": 8, "servers": 3}],
                }
            },
            "classes": {
                "p": {
                    "share": 1.0,
                    "pathway": [
                        {
                            "name": "x",
                            "station": "s",
                            "service": {"dist": "deterministic", "mean": 30},
                        }
                    ],
                }
            },
            "arrivals": {"profile": [0.0]},
        }
    )
    census = Census(
        as_of=datetime(2026, 1, 19, 6, 0, tzinfo=UTC),
        patients=[
            CensusPatient(
                id=str(i), cls="p", step="x", arrived=datetime(2026, 1, 19, 6, 0, tzinfo=UTC)
            )
            for i in range(4)
        ],
        staff=[StaffOnShift(station="s", servers=0, until=datetime(2026, 1, 19, 7, 0, tzinfo=UTC))],
    )
    r = run_replication(spec, 0, 0, census.to_options(spec))
    assert sorted(r.class_time_in_system["p"].tolist()) == pytest.approx(
        [90.0, 120.0, 150.0, 150.0]
    )


def test_facility_twin_interface() -> None:
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    from healthtwin.models.base import OutOfRangeError
    from healthtwin.operations.twin import FacilityTwin

    twin = FacilityTwin("ed", n_reps=3, seed=1)
    with pytest.raises(NotFittedError):
        twin.simulate()
    encs = [json.loads(x) for x in (DATA / "encounters_small.ndjson").read_text().splitlines()]
    twin.fit(encs)
    # fixture generator: 1.5 arrivals /h at every hour
    assert np.mean(twin.spec_.arrivals.profile) == pytest.approx(1.5, rel=0.15)
    x = twin.simulate()
    assert x.shape == (3, len(twin.kpi_names_))
    assert clone(twin).get_params() == twin.get_params()
    census = Census(as_of=NOW)
    with pytest.raises(OutOfRangeError, match="hours = 200 h"):
        twin.forecast(census, hours=(4, 200))
    assert set(twin.forecast(census, hours=(4,))["horizon[h]"]) == {4}
