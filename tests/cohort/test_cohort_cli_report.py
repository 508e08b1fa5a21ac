"""`healthtwin trial ...` / `healthtwin vpop generate` and the design report with its run record."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
import statsmodels.api as sm
from click.testing import CliRunner

from healthtwin.cli import main
from healthtwin.research.report import DesignSpec, design_report


@pytest.mark.parametrize(
    ("r2", "n"), [("0", "171"), ("0.16", "144"), ("0.36", "110"), ("0.5", "86")]
)
def test_trial_power_prints_total(r2: str, n: str) -> None:
    args = [
        "trial",
        "power",
        "--sigma",
        "1",
        "--delta",
        "0.5",
        "--r2",
        r2,
        "--power",
        "0.9",
        "--alpha",
        "0.025",
        "--ratio",
        "1",
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert res.output.strip() == n


def test_trial_power_bad_input() -> None:
    res = CliRunner().invoke(main, ["trial", "power", "--delta", "0.5", "--r2", "1.5"])
    assert res.exit_code != 0
    assert "r2" in res.output


def test_simulate_then_analyze_matches_statsmodels(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "n: 120\nseed: 3\nmodel_params: {coef: {bmi: 0.05}, centre: {bmi: 31}}\n", encoding="utf-8"
    )
    out = tmp_path / "trial.csv"
    r = CliRunner().invoke(main, ["trial", "simulate", str(spec), "--out", str(out)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert (df["label"] == "simulated").all() and len(df) == 120
    rec = json.loads(out.with_suffix(".run.json").read_text(encoding="utf-8"))
    assert rec["seed"] == 3 and len(rec["spec_sha256"]) == 64
    r = CliRunner().invoke(
        main, ["trial", "analyze", str(out), "--covariate", "bmi", "--unit", "%"]
    )
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    fit = sm.OLS(df["y"], sm.add_constant(np.column_stack([df["treated"], df["bmi"]]))).fit(
        cov_type="HC3"
    )
    assert got["estimate"] == pytest.approx(fit.params.iloc[1], rel=1e-9)
    assert got["se"] == pytest.approx(fit.bse.iloc[1], rel=1e-8)
    assert got["unit"] == "%"
    r = CliRunner().invoke(main, ["trial", "analyze", str(out), "--covariate", "nope"])
    assert r.exit_code != 0 and "nope" in r.output


def test_vpop_generate_from_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    target = tmp_path / "cohort.csv"
    pd.DataFrame({"age": rng.normal(60, 8, 200), "bmi": rng.normal(29, 4, 200)}).to_csv(
        target, index=False
    )
    out = tmp_path / "vp.csv"
    r = CliRunner().invoke(
        main, ["vpop", "generate", "--target", str(target), "--n", "5000", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "ks" in r.output and "kg/m2" in r.output
    assert len(pd.read_csv(out)) > 200
    r = CliRunner().invoke(main, ["vpop", "generate", "--out", str(out)])
    assert r.exit_code != 0


def test_design_report_writes_record(tmp_path: Path) -> None:
    spec = DesignSpec(r2_values=[0.0, 0.36], reps=400)
    rec = design_report(spec, tmp_path, seed=5)
    saved = orjson.loads((tmp_path / "run.json").read_bytes())
    assert (
        saved["spec_sha256"]
        == hashlib.sha256(orjson.dumps(asdict(spec), option=orjson.OPT_SORT_KEYS)).hexdigest()
    )
    assert saved["seed"] == 5 and saved["label"] == "simulated" and saved["code_version"]
    assert [r["n_total"] for r in saved["results"]] == [171, 110]
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Assumptions" in md and "power_curves.png" in md and "simulated" in md
    assert (tmp_path / "power_curves.png").read_bytes()[:4] == b"\x89PNG"
    # 400 replications: MCSE of power 0.9 is 0.015; 4 MCSE band
    for r in rec["results"]:
        assert abs(r["power_mc"] - 0.9) < 0.06


def test_tte_simulate_and_cox_analyze(tmp_path: Path) -> None:
    spec = tmp_path / "tte.json"
    spec.write_text(
        json.dumps(
            {"n": 300, "model": "markov", "endpoint": "tte", "binary_threshold": 1, "seed": 2}
        )
    )
    out = tmp_path / "tte.csv"
    assert (
        CliRunner().invoke(main, ["trial", "simulate", str(spec), "--out", str(out)]).exit_code == 0
    )
    r = CliRunner().invoke(main, ["trial", "analyze", str(out), "--event", "event", "--unit", "wk"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert 0 < got["ci_low"] < got["hazard_ratio"] < got["ci_high"]
    assert got["events"] == pd.read_csv(out)["event"].sum()


def test_external_command_prints_table() -> None:
    r = CliRunner().invoke(
        main, ["trial", "external", "--shift", "0", "--shift", "1", "--reps", "500"]
    )
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert "type1_external" in lines[0] and "simulated" in r.output
    last = lines[-1].split()
    assert float(last[1]) > 0.5 and float(last[3]) < 0.15  # shift 1: external inflated, PROCOVA not
