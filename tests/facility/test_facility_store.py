"""``healthtwin ops`` against a real DuckDB store: calibrate and forecast from it, journal runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from healthtwin.cli import main
from healthtwin.operations.spec import SpecError, load_spec
from healthtwin.operations.store_link import census_from_store, map_location
from healthtwin.thread.fhir.ingest import ingest_paths
from healthtwin.twin.store.duckdb_store import DuckDBStore

DATA = Path(__file__).parent / "data"
ENCOUNTERS = DATA / "encounters_small.ndjson"


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("store") / "ht.duckdb"
    with DuckDBStore(str(p)) as st:
        ingest_paths(st, [str(ENCOUNTERS)])
    return p


def _runs(path: Path) -> list[dict[str, Any]]:
    with DuckDBStore(str(path), read_only=True) as st:
        rows = st.con.execute(
            "SELECT seq, twin_id, payload FROM journal WHERE kind = 'simulation.run' ORDER BY seq"
        ).fetchall()
        assert st.verify().ok
    return [{"seq": s, "twin_id": t, "payload": json.loads(p)} for s, t, p in rows]


def _copy(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes())
    return dst


def test_calibrate_from_store_matches_file(store_path: Path) -> None:
    run = CliRunner()
    r = run.invoke(main, ["ops", "calibrate", "--store", str(store_path)])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    f = run.invoke(main, ["ops", "calibrate", "--fhir-encounters", str(ENCOUNTERS)])
    assert f.exit_code == 0, f.output
    ref = json.loads(f.output)
    # same 469 encounters from the store as from the file; 464 finished stays
    assert rep["arrivals"]["events"] == ref["arrivals"]["events"] == 469
    assert rep["arrivals"]["gof"]["p_value"] == pytest.approx(ref["arrivals"]["gof"]["p_value"])
    assert rep["length_of_stay[min]"]["all"]["n"] == 464
    assert rep["length_of_stay[min]"]["all"]["candidates"][0]["ks_p"] > 0.01
    # generated as lognormal, mean 180 min
    los_mean = rep["length_of_stay[min]"]["all"]["spec_dist"]["mean"]
    assert 150 < los_mean < 210


def test_calibrate_store_errors(tmp_path: Path) -> None:
    run = CliRunner()
    r = run.invoke(main, ["ops", "calibrate", "--store", str(tmp_path / "nope.duckdb")])
    assert r.exit_code != 0 and "does not exist" in r.output
    empty = tmp_path / "empty.duckdb"
    DuckDBStore(str(empty)).close()
    r = run.invoke(main, ["ops", "calibrate", "--store", str(empty)])
    assert r.exit_code != 0 and "no Encounter" in r.output
    r = run.invoke(
        main, ["ops", "calibrate", "--store", str(empty), "--fhir-encounters", str(ENCOUNTERS)]
    )
    assert r.exit_code != 0 and "exactly one" in r.output


def test_census_from_store_default_map(store_path: Path) -> None:
    sp = load_spec("ed")
    with DuckDBStore(str(store_path), read_only=True) as st:
        cen = census_from_store(st, sp)
    by_id = {p.id: p for p in cen.patients}
    assert set(by_id) == {f"enc-04{i}" for i in range(65, 70)}
    assert cen.as_of.isoformat() == "2026-01-19T00:40:00+00:00"  # latest location start
    assert (by_id["enc-0467"].cls, by_id["enc-0467"].step) == ("minor", "treat")
    assert by_id["enc-0467"].in_service
    assert (by_id["enc-0469"].cls, by_id["enc-0469"].step) == ("major", "admit")
    assert (by_id["enc-0465"].step, by_id["enc-0465"].in_service) == ("triage", False)


def test_map_location_rules_and_errors() -> None:
    sp = load_spec("ed")
    ward = {"resourceType": "Location", "name": "Main Inpatient Unit"}
    assert map_location(sp, "Location/L1", ward) == ("ward", "major", "admit")
    assert map_location(sp, "Location/x", {"name": "Reception"})[0] == "triage"
    with pytest.raises(SpecError, match=r"'Location/L9'.*car park.*--location-map"):
        map_location(sp, "Location/L9", {"name": "Car park"})


def test_forecast_from_store_journaled(store_path: Path, tmp_path: Path) -> None:
    db = _copy(store_path, tmp_path / "fc.duckdb")
    r = CliRunner().invoke(
        main,
        ["ops", "forecast", "ed", "--store", str(db), "--reps", "4", "--seed", "11"]
        + ["--twin", "Facility/ed-1", "--out", str(tmp_path / "fc.csv")],
    )
    assert r.exit_code == 0, r.output
    assert "5 patients" in r.output and "simulation.run" in r.output
    (ev,) = _runs(db)
    pl = ev["payload"]
    assert ev["twin_id"] == "Facility/ed-1"
    assert pl["spec_hash"] == load_spec("ed").digest() and pl["seed"] == 11
    assert pl["command"] == "forecast" and pl["simulated"] is True and pl["replications"] == 4
    assert pl["census"] == {
        "as_of": "2026-01-19T00:40:00+00:00",
        "patients": 5,
        "hours": [4.0, 8.0, 24.0],
    }
    for h in ("4.0", "8.0", "24.0"):
        assert set(pl["kpis"][f"{h}/over_target_present[1]"]) == {"mean", "p05", "p95"}


def test_forecast_store_unmapped_location(tmp_path: Path) -> None:
    db = tmp_path / "bad.duckdb"
    enc = json.loads(ENCOUNTERS.read_text().splitlines()[-1])
    enc["location"][0]["location"]["reference"] = "Location/somewhere"
    (tmp_path / "e.ndjson").write_text(json.dumps(enc) + "\n")
    with DuckDBStore(str(db)) as st:
        ingest_paths(st, [str(tmp_path / "e.ndjson")])
    r = CliRunner().invoke(main, ["ops", "forecast", "ed", "--store", str(db), "--reps", "2"])
    assert r.exit_code != 0
    assert "Location/somewhere" in r.output and "--location-map" in r.output
    # an explicit map and a naive --as-of (read as UTC) override the defaults
    lm = tmp_path / "lm.yaml"
    lm.write_text("Location/somewhere: [ward, resus, admit]\n")
    r = CliRunner().invoke(
        main,
        ["ops", "forecast", "ed", "--store", str(db), "--reps", "2", "--hours", "4"]
        + ["--location-map", str(lm), "--as-of", "2026-01-19T02:00"],
    )
    assert r.exit_code == 0, r.output
    (ev,) = _runs(db)
    assert ev["payload"]["census"]["as_of"] == "2026-01-19T02:00:00+00:00"
    assert ev["twin_id"] is None and "4.0/busy/ward[1]" in ev["payload"]["kpis"]


def test_simulate_compare_optimize_journaled(store_path: Path, tmp_path: Path) -> None:
    db = _copy(store_path, tmp_path / "runs.duckdb")
    run = CliRunner()
    r = run.invoke(
        main,
        ["ops", "simulate", "treatment_centre", "--reps", "3", "--seed", "5"]
        + ["--out", str(tmp_path / "o"), "--store", str(db), "--twin", "Facility/tc"],
    )
    assert r.exit_code == 0, r.output
    r = run.invoke(
        main,
        ["ops", "compare", "treatment_centre", "--reps", "3", "--seed", "6", "--store", str(db)],
    )
    assert r.exit_code == 0, r.output
    r = run.invoke(
        main,
        ["ops", "optimize", "treatment_centre", "--station", "examination", "--reps", "2"]
        + ["--seed", "8", "--store", str(db)],
    )
    assert r.exit_code == 0, r.output
    runs = _runs(db)
    assert [e["payload"]["command"] for e in runs] == ["simulate", "compare", "optimize"]
    assert [e["payload"]["seed"] for e in runs] == [5, 6, 8]
    assert [e["twin_id"] for e in runs] == ["Facility/tc", None, None]
    h = load_spec("treatment_centre").digest()
    assert all(e["payload"]["spec_hash"] == h for e in runs)
    file_rec = json.loads((tmp_path / "o" / "run.json").read_text())
    assert runs[0]["payload"]["kpis"] == file_rec["kpis"]
    assert "+1 cubicle_1" in runs[1]["payload"]["kpis"]
    assert runs[2]["payload"]["chosen"] in runs[2]["payload"]["kpis"]


def test_twin_without_store_and_missing_store(tmp_path: Path) -> None:
    run = CliRunner()
    r = run.invoke(main, ["ops", "simulate", "treatment_centre", "--twin", "Facility/x"])
    assert r.exit_code != 0 and "--twin needs --store" in r.output
    missing = str(tmp_path / "missing.duckdb")
    r = run.invoke(main, ["ops", "compare", "treatment_centre", "--store", missing])
    assert r.exit_code != 0 and "does not exist" in r.output
