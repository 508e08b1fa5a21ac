"""Simulation endpoints joined to their engines: the glucose twin's thread, the facility DES.

Oracles: physiology (a recorded insulin bolus lowers, a recorded meal raises the forecast of
the same CGM), the thread's documented input hash recomputed from the stored originals, the
journal (a GET-like forecast writes no twin state), the facility spec's warm-up.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from serve_helpers import SECRET, auth, on_store

from healthtwin.care.glucose import codes as C
from healthtwin.care.glucose import thread as T
from healthtwin.serve.settings import Settings
from healthtwin.thread.fhir.ingest import ingest_paths

END = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the last CGM reading
INSULIN = {"coding": [{"system": C.SNOMED, "code": "67866001", "display": "Insulin"}]}


@pytest.fixture
def settings() -> Settings:
    """Room for a few simulations in a row (the rate limit is tested in test_access.py)."""
    return Settings(jwt_secret=SECRET, audit_flush_s=0.01, sim_rate=1.0, sim_burst=10)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _q(v: float, unit: str) -> dict[str, Any]:
    return {"value": v, "unit": unit, "system": C.UCUM, "code": unit}


def _patient_records(pid: str, bolus_u: float = 0.0, carbs_g: float = 0.0) -> list[dict]:
    """2 h of the same CGM (150 mg/dL, every 5 min), weight, basal; a bolus / meal 20 min
    before the last reading when asked."""
    subj = {"reference": f"Patient/{pid}"}
    t0 = END - timedelta(hours=2)
    rows: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": pid},
        {"resourceType": "Observation", "id": f"{pid}-w", "status": "final",
         "code": {"coding": [{"system": C.LOINC, "code": "29463-7"}]}, "subject": subj,
         "effectiveDateTime": _iso(t0), "valueQuantity": _q(70.0, "kg")},
        {"resourceType": "MedicationStatement", "id": f"{pid}-basal", "status": "active",
         "medicationCodeableConcept": INSULIN, "subject": subj,
         "effectivePeriod": {"start": _iso(t0 - timedelta(days=1))},
         "dosage": [{"doseAndRate": [{"rateQuantity": _q(1.0, "[IU]/h")}]}]},
    ]  # fmt: skip
    for k in range(0, 121, 5):
        rows.append({"resourceType": "Observation", "id": f"{pid}-cgm-{k}", "status": "final",
                     "code": {"coding": [{"system": C.LOINC, "code": "99504-3"}]},
                     "subject": subj, "effectiveDateTime": _iso(t0 + timedelta(minutes=k)),
                     "valueQuantity": _q(150.0 + (k % 10) / 5, "mg/dL")})  # fmt: skip
    when = _iso(END - timedelta(minutes=20))
    if bolus_u:
        rows.append({"resourceType": "MedicationAdministration", "id": f"{pid}-bolus",
                     "status": "completed", "medicationCodeableConcept": INSULIN, "subject": subj,
                     "effectiveDateTime": when, "dosage": {"dose": _q(bolus_u, "[IU]")}})  # fmt: skip
    if carbs_g:
        rows.append({"resourceType": "Observation", "id": f"{pid}-carbs", "status": "final",
                     "code": {"coding": [{"system": C.LOINC, "code": "9059-7"}]},
                     "subject": subj, "effectiveDateTime": when,
                     "valueQuantity": _q(carbs_g, "g")})  # fmt: skip
    return rows


def _st(client: TestClient, fn: Callable[[Any], Any]) -> Any:
    """``fn(store)`` on the server's store thread."""
    return on_store(client, fn, client.app.state.gateway.store)


def _load(client: TestClient, tmp_path: Path, rows: list[dict]) -> None:
    path = tmp_path / "glucose.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _st(client, lambda st: ingest_paths(st, [str(path)]))


def _events(client: TestClient, twin: str, kind: str) -> list[dict[str, Any]]:
    rows = _st(client, lambda st: st.history(twin))
    return [r["payload"] for r in rows if r["kind"] == kind]


def _forecast(client: TestClient, tok: str, pid: str) -> dict[str, Any]:
    r = client.post(f"/twins/Patient/{pid}/glucose/forecast",
                    json={"horizons_min": [30, 60, 120], "seed": 3}, headers=auth(tok))  # fmt: skip
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_glucose_forecast_reads_insulin_and_carbohydrate_records(
    client: TestClient, token: Callable[..., str], tmp_path: Path
) -> None:
    _load(client, tmp_path, _patient_records("g-plain") + _patient_records("g-bolus", bolus_u=4)
          + _patient_records("g-meal", carbs_g=60))  # fmt: skip
    tok = token(role="clinician")
    fc = {p: _forecast(client, tok, p) for p in ("g-plain", "g-bolus", "g-meal")}
    med = {p: {x["horizon_min"]: x["median"] for x in f["points"]} for p, f in fc.items()}
    # same CGM: 4 [IU] lower, 60 g raise the forecast, more so at 2 h than at 30 min
    for h, gap in ((60, 10.0), (120, 20.0)):
        assert med["g-bolus"][h] < med["g-plain"][h] - gap, (h, med)
        assert med["g-meal"][h] > med["g-plain"][h] + gap, (h, med)
    assert med["g-plain"][120] - med["g-bolus"][120] > med["g-plain"][30] - med["g-bolus"][30]
    for f in fc.values():
        assert f["simulated"] is True and f["model"] == T.MODEL_NAME
        assert f["model_version"] == T.MODEL_VERSION
        assert f["readings_used"] == 25
        assert datetime.fromisoformat(f["last_reading_at"]) == END
        assert all(x["low"] <= x["median"] <= x["high"] for x in f["points"])
    assert "1 insulin bolus(es)" in "; ".join(fc["g-bolus"]["assumptions"])
    assert "1 carbohydrate record(s)" in "; ".join(fc["g-meal"]["assumptions"])
    # input hash = the thread's documented scheme over the stored originals (recomputed here)
    raws = _st(client, lambda st: list(st.originals("Patient/g-bolus")))
    pairs = []
    for raw in raws:
        obj = orjson.loads(raw)
        if obj["resourceType"] != "Patient":
            pairs.append((f"{obj['resourceType']}/{obj['id']}", hashlib.sha256(raw.encode())))
    lines = [T.HASH_SCHEME, "prev none"] + sorted(f"{r} {h.hexdigest()}" for r, h in pairs)
    assert fc["g-bolus"]["input_hash"] == hashlib.sha256("\n".join(lines).encode()).hexdigest()
    # journaled as a simulation; nothing written back, no twin state saved by a forecast
    sims = _events(client, "Patient/g-bolus", "simulation.run")
    assert [s["input_hash"] for s in sims] == [fc["g-bolus"]["input_hash"]]
    assert sims[0]["simulated"] is True and sims[0]["from_state"] is None
    assert _events(client, "Patient/g-bolus", T.STATE_EVENT) == []


def test_glucose_forecast_and_whatif_start_from_the_saved_twin_state(
    client: TestClient, token: Callable[..., str], tmp_path: Path
) -> None:
    rows = _patient_records("g-saved")
    _load(client, tmp_path, rows)
    rep = _st(client, lambda st: T.sync(st, "Patient/g-saved", seed=5))
    assert rep.updated
    tok = token(role="clinician")
    f = _forecast(client, tok, "g-saved")
    assert any("started from the saved twin state" in a for a in f["assumptions"])
    assert f["readings_used"] == 25
    # same filter state as sync's; only the forecast's random draws differ (seed): the
    # medians agree within Monte Carlo error (50 members)
    for p, q in zip(f["points"], rep.forecast, strict=True):
        assert abs(p["median"] - q["median_mg_dl"]) < 12.0, (p, q)
    body = {"scenarios": [{"name": "meal", "hours": 2, "meals": [[0, 50]]},
                          {"name": "meal+bolus", "hours": 2, "meals": [[0, 50]],
                           "boluses": [[0, "auto"]]}]}  # fmt: skip
    r = client.post("/twins/Patient/g-saved/glucose/whatif", json=body, headers=auth(tok))
    assert r.status_code == 200, r.text
    w = r.json()
    assert w["simulated"] is True and w["personalised_from_readings"] == 25
    meal, both = w["results"]
    assert both["p50"][-1] < meal["p50"][-1]
    sims = _events(client, "Patient/g-saved", "simulation.run")
    mine = [s for s in sims if s.get("what") in ("glucose.forecast", "glucose.whatif")]
    assert [s["from_state"] for s in mine] == [rep.state_hash] * 2
    assert len(_events(client, "Patient/g-saved", T.STATE_EVENT)) == 1  # sync's only


def test_facility_horizon_within_the_warmup_is_a_422(
    client: TestClient, token: Callable[..., str]
) -> None:
    ops = token(role="operations")
    fac = client.get("/twins", headers=auth(ops), params={"kind": "facility"}).json()["items"]
    url = f"/twins/{fac[0]['twin_id']}/facility/simulate"
    # the bundled ED spec discards a 1440-min (1-day) warm-up
    r = client.post(url, json={"spec": "ed", "horizon_days": 0.5, "replications": 1},
                    headers=auth(ops))  # fmt: skip
    assert r.status_code == 422, r.text
    msg = r.json()["detail"]
    assert "horizon_days" in msg and "0.5" in msg and "1440" in msg
    r = client.post(url, json={"spec": "ed", "horizon_days": 1.5, "replications": 1},
                    headers=auth(ops))  # fmt: skip
    assert r.status_code == 200, r.text
