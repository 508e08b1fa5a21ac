"""``healthtwin ops`` commands end to end (small replication counts)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from healthtwin.cli import main

DATA = Path(__file__).parent / "data"


def test_simulate_writes_outputs_and_record(tmp_path: Path) -> None:
    out = tmp_path / "o"
    r = CliRunner().invoke(
        main,
        ["ops", "simulate", "treatment_centre", "--reps", "3", "--seed", "4", "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    assert "simulated" in r.output
    rec = json.loads((out / "run.json").read_text())
    assert rec["seed"] == 4 and rec["replications"] == 3 and rec["simulated"] is True
    assert rec["code_version"] and len(rec["spec_hash"]) == 64
    assert {"kpis.csv", "summary.json", "events.csv", "occupancy.png"} <= set(rec["outputs"])
    assert (out / "events.csv").read_text().startswith("time[min],patient,class,event,station")
    # same seed -> same KPIs
    r2 = CliRunner().invoke(
        main,
        [
            "ops",
            "simulate",
            "treatment_centre",
            "--reps",
            "3",
            "--seed",
            "4",
            "--out",
            str(tmp_path / "p"),
        ],
    )
    assert r2.exit_code == 0
    assert (out / "kpis.csv").read_text() == (tmp_path / "p" / "kpis.csv").read_text()


def test_simulate_primary_care_and_bad_spec(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        main, ["ops", "simulate", "primary_care", "--reps", "2", "--out", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    assert "after_hours_share[1]" in r.output
    r = CliRunner().invoke(
        main, ["ops", "simulate", "ed", "--reps", "2", "--out", str(tmp_path / "ed")]
    )
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "ed" / "run.json").read_text())
    assert rec["kpis"]["boarding_hours[h]"]["mean"] is not None
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "horizon": -1}))
    r = CliRunner().invoke(main, ["ops", "simulate", str(bad)])
    assert r.exit_code != 0 and "horizon" in r.output


def test_calibrate_forecast_compare_optimize(tmp_path: Path) -> None:
    run = CliRunner()
    r = run.invoke(
        main,
        [
            "ops",
            "calibrate",
            "--fhir-encounters",
            str(DATA / "encounters_small.ndjson"),
            "--out",
            str(tmp_path / "cal.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "length_of_stay[min]" in json.loads((tmp_path / "cal.json").read_text())
    r = run.invoke(
        main,
        [
            "ops",
            "calibrate",
            "--fhir-encounters",
            str(DATA / "encounters_small.ndjson"),
            "--spec",
            "ed",
            "--spec-out",
            str(tmp_path / "ed_cal.yaml"),
        ],
    )
    assert r.exit_code == 0, r.output
    from healthtwin.operations.spec import load_spec

    cal = load_spec(tmp_path / "ed_cal.yaml")
    assert len(cal.arrivals.profile) == 24 and cal.stations == load_spec("ed").stations
    lm = tmp_path / "lm.yaml"
    lm.write_text(
        yaml.safe_dump(
            {
                "Location/ed-waiting": ["assessment", "major", "assess"],
                "Location/ed-cubicles": ["cubicles", "major", "treat"],
                "Location/ward-a": ["ward", "major", "admit"],
            }
        )
    )
    r = run.invoke(
        main,
        [
            "ops",
            "forecast",
            "ed",
            "--fhir-encounters",
            str(DATA / "encounters_small.ndjson"),
            "--location-map",
            str(lm),
            "--as-of",
            "2026-01-19T01:00:00+00:00",
            "--reps",
            "4",
            "--out",
            str(tmp_path / "fc.csv"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "over_target_present[1]" in (tmp_path / "fc.csv").read_text()
    r = run.invoke(main, ["ops", "compare", "treatment_centre", "--reps", "4"])
    assert r.exit_code == 0, r.output
    assert "+1 cubicle_1" in r.output
    r = run.invoke(
        main, ["ops", "optimize", "treatment_centre", "--station", "examination", "--reps", "3"]
    )
    assert r.exit_code == 0, r.output
    assert "chosen:" in r.output and "roster (OPTIMAL" in r.output
    r = run.invoke(main, ["ops", "optimize", "treatment_centre", "--station", "nowhere"])
    assert r.exit_code != 0 and "unknown station" in r.output


def test_forecast_from_census_json(tmp_path: Path) -> None:
    census = {
        "as_of": "2026-01-19T14:00:00+00:00",
        "patients": [
            {
                "id": "a",
                "cls": "major",
                "step": "treat",
                "arrived": "2026-01-19T11:00:00+00:00",
                "since": "2026-01-19T13:30:00+00:00",
                "in_service": True,
            },
            {"id": "b", "cls": "minor", "step": "assess", "arrived": "2026-01-19T13:00:00+00:00"},
        ],
        "staff": [{"station": "assessment", "servers": 2, "until": "2026-01-19T16:00:00+00:00"}],
    }
    p = tmp_path / "census.json"
    p.write_text(json.dumps(census))
    r = CliRunner().invoke(
        main, ["ops", "forecast", "ed", "--census", str(p), "--reps", "3", "--hours", "4,8"]
    )
    assert r.exit_code == 0, r.output
    assert "2 patients; simulated" in r.output and "busy/ward[1]" in r.output
