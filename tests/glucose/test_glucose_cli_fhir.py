"""CLI (``healthtwin glucose ...``) and FHIR R4 write-back builders (validated by fhir.resources)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from healthtwin.care.glucose import fhir as F
from healthtwin.care.glucose.alerts import AlertEvent
from healthtwin.cli import main

SIM = ["glucose", "simulate", "--patients", "adult#001,child#003", "--hours", "6", "--meal",
       "60:50", "--bolus", "60:auto", "--basal", "auto", "--seed", "1", "--no-noise",
       "--format", "csv"]  # fmt: skip


def test_simulate_command_rows_and_agreement_with_simglucose() -> None:
    res = CliRunner().invoke(main, SIM)
    assert res.exit_code == 0, res.output
    df = pd.read_csv(io.StringIO(res.output))
    assert len(df) == 2 * 360
    assert list(df.columns) == ["time_min", "patient", "bg_mg_dl", "gsub_mg_dl", "cgm_mg_dl",
                                "insulin_u_min", "cho_g_min", "simulated"]  # fmt: skip
    assert df.simulated.all()
    pytest.importorskip("simglucose")
    from simglucose.patient.t1dpatient import Action, T1DPatient

    a = df[df.patient == "child#003"].reset_index(drop=True)
    pat = T1DPatient.withName("child#003")
    for k in range(120):
        assert abs(pat.observation.Gsub - a.gsub_mg_dl[k]) < 0.5
        pat.step(Action(CHO=float(50.0 if k == 60 else 0.0), insulin=float(a.insulin_u_min[k])))
    # 50 g eaten at 5 g/min from minute 60; CGM without noise equals Gs at sample times
    assert a.cho_g_min.sum() == pytest.approx(50.0)
    assert np.allclose(a.cgm_mg_dl[::3], a.gsub_mg_dl[::3], atol=1e-3)


def test_simulate_rejects_bad_input() -> None:
    r = CliRunner().invoke(main, ["glucose", "simulate", "--patients", "adult#999"])
    assert r.exit_code != 0 and "unknown virtual patient" in r.output
    r = CliRunner().invoke(main, ["glucose", "simulate", "--meal", "sixty:50"])
    assert r.exit_code != 0 and "--meal" in r.output


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("glucose")
    res = CliRunner().invoke(main, ["glucose", "simulate", "--hours", "8", "--meal", "60:60",
                                    "--bolus", "60:auto", "--meal", "300:40", "--bolus", "300:auto",
                                    "--seed", "2"])  # fmt: skip
    df = pd.read_csv(io.StringIO(res.output))
    cgm = df[df.time_min % 5 == 0][["time_min", "cgm_mg_dl"]].rename(
        columns={"cgm_mg_dl": "glucose_mg_dl"}
    )
    cgm.to_csv(d / "cgm.csv", index=False)
    pd.DataFrame({"time_min": [60, 300], "units": [6.0, 4.0]}).to_csv(d / "ins.csv", index=False)
    pd.DataFrame({"time_min": [60, 300], "grams": [60.0, 40.0]}).to_csv(
        d / "carbs.csv", index=False
    )
    (d / "s1.yaml").write_text("name: usual\nhours: 4\nmeals: [[30, 50]]\nboluses: [[30, auto]]\n")
    (d / "s2.yaml").write_text(
        "name: missed\nhours: 4\nmeals: [[30, 50]]\nboluses: [[30, auto]]\nmissed: [30]\n"
    )
    return {k: str(d / f) for k, f in (("cgm", "cgm.csv"), ("ins", "ins.csv"), ("carbs", "carbs.csv"),
                                        ("s1", "s1.yaml"), ("s2", "s2.yaml"))}  # fmt: skip


def _common(r: dict[str, str]) -> list[str]:
    return ["--cgm", r["cgm"], "--insulin", r["ins"], "--carbs", r["carbs"], "--weight", "102.32",
            "--basal", "1.27"]  # fmt: skip


def test_personalize_forecast_whatif_control_commands(records: dict[str, str]) -> None:
    run = CliRunner().invoke
    r = run(main, ["glucose", "personalize", *_common(records)])
    assert r.exit_code == 0, r.output
    est = pd.read_csv(io.StringIO(r.output))
    assert set(est.parameter) == {"SI", "p1", "Gb", "tau_m"}
    assert (est.low_95 <= est["mean"]).all() and (est["mean"] <= est.high_95).all()
    r = run(main, ["glucose", "forecast", *_common(records), "--fhir"])
    assert r.exit_code == 0, r.output
    bundle = json.loads(r.output)
    from fhir.resources.R4B.bundle import Bundle

    Bundle.model_validate(bundle)
    r = run(main, ["glucose", "whatif", "--scenario", records["s1"], "--scenario", records["s2"]])
    assert r.exit_code == 0, r.output
    w = pd.read_csv(io.StringIO(r.output))
    peak = w.groupby("scenario").p50_mg_dl.max()
    assert peak["missed"] > peak["usual"] and w.simulated.all()
    r = run(main, ["glucose", "control", *_common(records)])
    assert r.exit_code == 0, r.output
    assert "CR = " in r.output and "simulated" in r.output


def test_fhir_builders_validate_against_r4b() -> None:
    from fhir.resources.R4B.careplan import CarePlan
    from fhir.resources.R4B.detectedissue import DetectedIssue
    from fhir.resources.R4B.medicationrequest import MedicationRequest
    from fhir.resources.R4B.observation import Observation
    from fhir.resources.R4B.provenance import Provenance
    from fhir.resources.R4B.riskassessment import RiskAssessment

    now = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    model = F.ModelRef("healthtwin-glucose-enkf", "0.1.0", F.input_hash(np.arange(3.0), {"a": 1}))
    obs = F.forecast_observation("Patient/p1", now, 30, 120.0, 100.0, 140.0, 0.9, model)
    risk = F.hypo_risk_assessment("Patient/p1", now, 0.4, 30, model)
    issue = F.alert_detected_issue(
        "Patient/p1", now, AlertEvent(0, 15.0, "hypo-predicted", 0.4, "x"), model
    )
    med = F.insulin_proposal("Patient/p1", now, 2.5, "meal bolus", model)
    cp = F.bolus_parameters_careplan(
        "Patient/p1", now, (10.0, 8.0, 12.0), (40.0, 30.0, 50.0), model
    )
    prov = F.provenance([obs, risk, issue, med, cp], now, model, inputs=["Observation/cgm-1"])
    for cls, res in ((Observation, obs), (RiskAssessment, risk), (DetectedIssue, issue),
                     (MedicationRequest, med), (CarePlan, cp), (Provenance, prov)):  # fmt: skip
        cls.model_validate(res)
    assert med["intent"] == "proposal" and cp["intent"] == "proposal"
    assert {t["code"] for t in obs["meta"]["tag"]} == {"predicted", "simulated"}
    assert obs["effectiveDateTime"].startswith("2026-01-02T03:34")
    assert len(prov["target"]) == 5 and model.version in prov["agent"][0]["who"]["display"]
    assert model.input_hash in prov["entity"][-1]["what"]["identifier"]["value"]
    # deterministic ids: the same output gives the same resource id
    assert (
        F.forecast_observation("Patient/p1", now, 30, 120.0, 100.0, 140.0, 0.9, model)["id"]
        == obs["id"]
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        F.hypo_risk_assessment("Patient/p1", datetime(2026, 1, 1), 0.1, 30, model)
    with pytest.raises(ValueError, match="outside"):
        F.insulin_proposal("Patient/p1", now, 500.0, "x", model)


def test_input_hash_changes_with_inputs(tmp_path: Path) -> None:
    a = F.input_hash(np.array([1.0, 2.0]))
    assert a == F.input_hash(np.array([1.0, 2.0]))
    assert a != F.input_hash(np.array([1.0, 2.5]))
    assert a != F.input_hash(np.array([1.0, 2.0], dtype=np.float32))
