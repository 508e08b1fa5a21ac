"""The cohort twin wired to the store: target cohort from facts, run records in the journal."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from click.testing import CliRunner

from healthtwin.cli import main
from healthtwin.research.cohort_data import CohortDataError, cohort_frame
from healthtwin.thread.fhir.ingest import ingest_paths
from healthtwin.twin.store.duckdb_store import DuckDBStore

LOINC = "http://loinc.org"
CODES = {"39156-5": "bmi", "8480-6": "sbp", "2093-3": "chol", "4548-4": "hba1c"}
N_ADULTS = 7


def _obs(oid: str, pid: str, code: str, value: float, unit: str, when: str, **kw: Any) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": kw.get("status", "final"),
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }


def _bp(oid: str, pid: str, sbp: float, when: str) -> dict:
    q = {"unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "component": [
            {
                "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                "valueQuantity": {"value": sbp, **q},
            },
            {
                "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                "valueQuantity": {"value": 70.0, **q},
            },
        ],
    }


def _bundle(resources: list[dict]) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"http://example.org/fhir/{r['resourceType']}/{r['id']}", "resource": r}
            for r in resources
        ],
    }


def _cohort_resources() -> list[dict]:
    res: list[dict] = []
    for i in range(N_ADULTS):
        pid = f"p{i}"
        gender = "female" if i % 2 == 0 else "male"
        res.append(
            {
                "resourceType": "Patient",
                "id": pid,
                "gender": gender,
                "birthDate": f"{1960 + i}-01-15",
            }
        )
        res.append(_obs(f"bmi-old-{i}", pid, "39156-5", 20.0 + i, "kg/m2", "2019-01-01T09:00:00Z"))
        res.append(_obs(f"bmi-new-{i}", pid, "39156-5", 25.0 + i, "kg/m2", "2021-06-01T09:00:00Z"))
        res.append(_bp(f"bp-{i}", pid, 110.0 + i, "2021-06-01T09:00:00Z"))
        res.append(_obs(f"chol-{i}", pid, "2093-3", 150.0 + i, "mg/dL", "2021-03-01T09:00:00Z"))
        res.append(_obs(f"a1c-{i}", pid, "4548-4", 5.0 + i / 10, "%", "2021-06-01T09:00:00Z"))
    # an HbA1c entered in error after the real one: must not count (value nor age reference)
    res.append(
        _obs(
            "a1c-err", "p0", "4548-4", 99.0, "%", "2022-01-01T09:00:00Z", status="entered-in-error"
        )
    )
    # a child with one BMI, and an adult without any observation
    res.append(
        {"resourceType": "Patient", "id": "child", "gender": "female", "birthDate": "2015-01-01"}
    )
    res.append(_obs("bmi-child", "child", "39156-5", 16.0, "kg/m2", "2021-06-01T09:00:00Z"))
    res.append(
        {"resourceType": "Patient", "id": "none", "gender": "other", "birthDate": "1950-01-01"}
    )
    return res


@pytest.fixture
def cohort_store(tmp_path: Path) -> Path:
    path = tmp_path / "cohort.duckdb"
    bundle = tmp_path / "cohort.json"
    bundle.write_bytes(orjson.dumps(_bundle(_cohort_resources())))
    store = DuckDBStore(path)
    ingest_paths(store, [str(bundle)])
    # a correction: p1's latest BMI re-sent with a new value supersedes the old version
    fix = tmp_path / "fix.json"
    fix.write_bytes(
        orjson.dumps(_obs("bmi-new-1", "p1", "39156-5", 40.0, "kg/m2", "2021-06-01T09:00:00Z"))
    )
    ingest_paths(store, [str(fix)])
    store.close()
    return path


def test_cohort_frame_from_own_fixture(cohort_store: Path) -> None:
    with DuckDBStore(cohort_store, read_only=True) as store:
        df = cohort_frame(store, list(CODES), min_age=18).set_index("patient")
        everyone = cohort_frame(store, list(CODES), require_observation=False)
        past = cohort_frame(store, ["39156-5"], at=date(2020, 1, 1)).set_index("patient")
    assert list(df.columns) == ["age", "female", "bmi", "sbp", "chol", "hba1c"]
    assert df.attrs["units"] == {
        "age": "a",
        "female": "1",
        "bmi": "kg/m2",
        "sbp": "mm[Hg]",
        "chol": "mg/dL",
        "hba1c": "%",
    }
    assert df.attrs["codes"] == {v: k for k, v in CODES.items()}
    assert sorted(df.index) == [f"Patient/p{i}" for i in range(N_ADULTS)]  # child, none dropped
    assert set(everyone["patient"]) == {*df.index, "Patient/child", "Patient/none"}
    for i in range(N_ADULTS):
        row = df.loc[f"Patient/p{i}"]
        assert row["bmi"] == (40.0 if i == 1 else 25.0 + i)  # latest, corrected version
        assert row["sbp"] == 110.0 + i  # from the blood-pressure panel component
        assert row["chol"] == 150.0 + i
        assert row["hba1c"] == pytest.approx(5.0 + i / 10)  # not the entered-in-error 99
        assert row["female"] == (1.0 if i % 2 == 0 else 0.0)
        expected_age = (date(2021, 6, 1) - date(1960 + i, 1, 15)).days / 365.25
        assert row["age"] == pytest.approx(expected_age, abs=1e-12)
        # reference date: facts after it are ignored, age is taken at it
        assert past.loc[f"Patient/p{i}", "bmi"] == 20.0 + i
        assert past.loc[f"Patient/p{i}", "age"] == pytest.approx(
            (date(2020, 1, 1) - date(1960 + i, 1, 15)).days / 365.25, abs=1e-12
        )
    assert "Patient/child" not in past.index  # its only BMI is after the reference date


def test_cohort_frame_errors(tmp_path: Path, cohort_store: Path) -> None:
    with (
        DuckDBStore(tmp_path / "empty.duckdb") as empty,
        pytest.raises(CohortDataError, match="no current Patient"),
    ):
        cohort_frame(empty)
    with (
        DuckDBStore(cohort_store, read_only=True) as store,
        pytest.raises(CohortDataError, match="no LOINC codes"),
    ):
        cohort_frame(store, [" "])


def test_vpop_generate_from_store(tmp_path: Path, cohort_store: Path) -> None:
    out = tmp_path / "vp.csv"
    args = [
        "vpop",
        "generate",
        "--store",
        str(cohort_store),
        "--n",
        "300",
        "--method",
        "sample",
        "--out",
        str(out),
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert f"target cohort: {N_ADULTS} patients" in r.output and "bmi (kg/m2)" in r.output
    pop = pd.read_csv(out)
    assert {"age", "female", "bmi", "sbp", "chol", "hba1c"} <= set(pop.columns)
    assert len(pop) == 300 and (pop["label"] == "simulated").all()
    r = CliRunner().invoke(main, [*args, "--codes", "1234-5"])
    assert r.exit_code != 0 and str(cohort_store) in r.output and "1234-5" in r.output
    r = CliRunner().invoke(main, [*args, "--synthea", str(tmp_path)])
    assert r.exit_code != 0 and "exactly one of" in r.output


def _journal_rows(path: Path, kind: str) -> list[dict]:
    with DuckDBStore(path, read_only=True) as store:
        assert store.verify().ok
        rows = store.con.execute(
            "SELECT payload, provenance FROM journal WHERE kind = ? ORDER BY seq", [kind]
        ).fetchall()
    return [{"payload": json.loads(p), "provenance": json.loads(v)} for p, v in rows]


def test_simulate_and_report_are_journaled(tmp_path: Path) -> None:
    store = tmp_path / "runs.duckdb"
    spec = tmp_path / "spec.yaml"
    spec.write_text("n: 60\nseed: 11\n", encoding="utf-8")
    out = tmp_path / "trial.csv"
    r = CliRunner().invoke(
        main, ["trial", "simulate", str(spec), "--out", str(out), "--store", str(store)]
    )
    assert r.exit_code == 0, r.output
    rec = json.loads(out.with_suffix(".run.json").read_text(encoding="utf-8"))
    (ev,) = _journal_rows(store, "simulation.run")
    assert ev["payload"]["spec_sha256"] == rec["spec_sha256"] and len(rec["spec_sha256"]) == 64
    assert ev["payload"]["seed"] == rec["seed"] == 11
    assert ev["payload"]["spec"] == rec["spec"] and ev["payload"]["code_version"]
    assert ev["provenance"]["command"] == "healthtwin trial simulate"

    rep = tmp_path / "report"
    r = CliRunner().invoke(
        main,
        [
            "trial",
            "report",
            "--r2",
            "0.36",
            "--reps",
            "40",
            "--seed",
            "4",
            "--out",
            str(rep),
            "--store",
            str(store),
        ],
    )
    assert r.exit_code == 0, r.output
    saved = json.loads((rep / "run.json").read_text(encoding="utf-8"))
    (ev,) = _journal_rows(store, "report.created")
    assert ev["payload"]["spec_sha256"] == saved["spec_sha256"]
    assert ev["payload"]["seed"] == saved["seed"] == 4
    assert ev["payload"]["code_version"] == saved["code_version"]
    assert len(_journal_rows(store, "simulation.run")) == 1  # still one, chain still verifies


def _latest_from_bundles(files: list[Path]) -> dict[str, dict[str, Any]]:
    """Independent reference: per patient, birthDate, gender and the latest value(s) per code."""
    out: dict[str, dict[str, Any]] = {}
    for f in files:
        pid, row, latest = None, {}, {}
        for e in orjson.loads(f.read_bytes()).get("entry", []):
            r = e.get("resource", {})
            if r.get("resourceType") == "Patient":
                pid = r["id"]
                row = {"birth": date.fromisoformat(r["birthDate"]), "gender": r.get("gender")}
            elif r.get("resourceType") == "Observation" and r.get("status") != "entered-in-error":
                when = datetime.fromisoformat(r["effectiveDateTime"]).astimezone(UTC)
                for c in [r, *r.get("component", [])]:
                    vq = c.get("valueQuantity") or {}
                    for coding in c.get("code", {}).get("coding", []):
                        code = coding.get("code")
                        if code in CODES and "value" in vq:
                            prev = latest.get(code)
                            if prev is None or when > prev[0]:
                                latest[code] = (when, {float(vq["value"])}, vq.get("code"))
                            elif when == prev[0]:
                                prev[1].add(float(vq["value"]))
        assert pid is not None, f
        out[f"Patient/{pid}"] = {**row, "latest": latest}
    return out


def test_cohort_frame_matches_synthea_bundles(shared_data: Path, tmp_path: Path) -> None:
    files = sorted((shared_data / "fhir" / "synthea-bundles").glob("*.json"))[:8]
    if not files:
        pytest.skip("no Synthea bundles in shared data")
    with DuckDBStore(tmp_path / "s.duckdb") as store:
        ingest_paths(store, [str(f) for f in files])
        df = cohort_frame(store, list(CODES), require_observation=False).set_index("patient")
    ref = _latest_from_bundles(files)
    assert set(df.index) == set(ref)
    checked = 0
    for subject, exp in ref.items():
        row = df.loc[subject]
        assert row["female"] == (1.0 if exp["gender"] == "female" else 0.0)
        for code, name in CODES.items():
            if code not in exp["latest"]:
                assert pd.isna(row[name]), (subject, name)
                continue
            _, values, unit = exp["latest"][code]
            assert unit == df.attrs["units"][name]
            assert any(row[name] == pytest.approx(v) for v in values), (subject, name, values)
            checked += 1
        if exp["latest"]:
            last = max(w for w, _, _ in exp["latest"].values()).date()
            assert row["age"] == pytest.approx((last - exp["birth"]).days / 365.25, abs=1e-9)
        else:
            assert pd.isna(row["age"])
    assert checked >= 10
