"""`healthtwin risk` command line."""

from __future__ import annotations

import json

from click.testing import CliRunner

from healthtwin.cli import main

BASE = [
    "--age",
    "55",
    "--sex",
    "female",
    "--race",
    "white",
    "--total-chol",
    "213",
    "--hdl",
    "50",
    "--sbp",
    "120",
    "--bp-treated",
    "no",
    "--smoker",
    "no",
    "--diabetes",
    "no",
]


def test_risk_cli_ascvd_prints_published_percent() -> None:
    r = CliRunner().invoke(main, ["risk", "ascvd", *BASE])
    assert r.exit_code == 0, r.output
    assert "10-year risk 2.1 %" in r.output


def test_risk_cli_json_and_mmol_units() -> None:
    mg = CliRunner().invoke(main, ["risk", "ascvd", *BASE, "--format", "json"])
    args = BASE.copy()
    args[args.index("213")] = f"{213 / 38.665} mmol/L"  # 1 mmol/L cholesterol = 38.665 mg/dL
    mmol = CliRunner().invoke(main, ["risk", "ascvd", *args, "--format", "json"])
    a, b = json.loads(mg.output), json.loads(mmol.output)
    assert a["risk_10y"]["unit"] == "%"
    assert abs(a["risk_10y"]["value"] - b["risk_10y"]["value"]) < 1e-3
    assert a["inputs"]["total_chol"] == {"value": 213.0, "unit": "mg/dL"}


def test_risk_cli_out_of_range_exits_2_naming_option_and_range() -> None:
    args = BASE.copy()
    args[args.index("55")] = "85"
    r = CliRunner().invoke(main, ["risk", "ascvd", *args])
    assert r.exit_code == 2
    assert "--age" in r.output and "40-79 a" in r.output
    ok = CliRunner().invoke(main, ["risk", "ascvd", *args, "--allow-extrapolation"])
    assert ok.exit_code == 0


def test_risk_cli_bad_unit_and_framingham() -> None:
    args = BASE.copy()
    args[args.index("50")] = "50 furlong"
    r = CliRunner().invoke(main, ["risk", "ascvd", *args])
    assert r.exit_code == 2 and "--hdl" in r.output and "not supported" in r.output
    fr = [
        "--age",
        "61",
        "--sex",
        "female",
        "--total-chol",
        "180",
        "--hdl",
        "47",
        "--sbp",
        "124",
        "--bp-treated",
        "no",
        "--smoker",
        "yes",
        "--diabetes",
        "no",
    ]
    out = CliRunner().invoke(main, ["risk", "framingham", *fr])
    assert out.exit_code == 0 and "10-year risk 10.5 %" in out.output
    low = CliRunner().invoke(main, ["risk", "framingham", *fr[:9], "80", *fr[10:]])
    assert low.exit_code == 2 and "--sbp" in low.output and "90-200 mm[Hg]" in low.output


def test_risk_cli_simulated_interval_from_input_error() -> None:
    r = CliRunner().invoke(
        main, ["risk", "ascvd", *BASE, "--sd-sbp", "8", "--cv-chol", "0.06", "--format", "json"]
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    iv = out["interval_95"]
    assert iv["unit"] == "%" and "simulated" in iv["method"]
    assert iv["lower"] < out["risk_10y"]["value"] < iv["upper"]
    plain = json.loads(
        CliRunner().invoke(main, ["risk", "ascvd", *BASE, "--format", "json"]).output
    )
    assert plain["interval_95"] is None and "no coefficient covariance" in plain["interval_note"]
