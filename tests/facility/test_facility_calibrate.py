"""Calibration: NHPP arrival fit and LOS fits against known generating processes and scipy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from healthtwin.operations.calibrate import (
    CalibrationError,
    calibrate,
    encounters_from_csv,
    encounters_from_fhir,
    fit_arrivals,
    fit_duration,
)

DATA = Path(__file__).parent / "data"


def _nhpp(
    rates_h: np.ndarray, weekday: np.ndarray, days: int, rng: np.random.Generator
) -> pd.Series:
    """Exact NHPP sample: Poisson count per hour cell, uniform times inside the cell."""
    start = pd.Timestamp("2025-01-06", tz="UTC")  # a Monday
    out = []
    for d in range(days):
        lam = rates_h * weekday[(start + pd.Timedelta(days=d)).dayofweek]
        k = rng.poisson(lam)
        for h in np.flatnonzero(k):
            off = (d * 24 + h + rng.random(k[h])) * 3600.0
            out.append(start + pd.to_timedelta(off, unit="s"))
    return pd.Series(pd.DatetimeIndex(np.concatenate([np.asarray(x) for x in out])))


def test_fit_arrivals_recovers_profile_with_coverage() -> None:
    rng = np.random.default_rng(1)
    rates = 4 + 3 * np.sin(np.arange(24) / 24 * 2 * np.pi)
    wk = np.array([1.2, 1.0, 1.0, 1.0, 1.0, 0.9, 0.9])
    wk = wk / np.mean(wk)  # identifiable scale (balanced weeks: mean factor 1)
    t = _nhpp(rates, wk, 56, rng)
    fit = fit_arrivals(t)
    inside = (fit.hourly_low <= rates) & (rates <= fit.hourly_high)
    # 95 % intervals: expect about 23 of 24 inside; fewer than 19 has probability < 1e-3
    assert inside.sum() >= 19
    assert np.allclose(fit.weekday, wk, rtol=0.08)
    assert fit.dispersion_p > 1e-3  # the data are Poisson: the dispersion test should not reject


def test_fit_arrivals_flags_overdispersion() -> None:
    rng = np.random.default_rng(2)
    rates = np.full(24, 3.0)
    days = [rng.gamma(2.0, 0.5) for _ in range(56)]  # day-level random effect: over-dispersed
    parts = [
        _nhpp(rates * g, np.ones(7), 1, rng) + pd.Timedelta(days=i) for i, g in enumerate(days)
    ]
    fit = fit_arrivals(pd.concat(parts))
    assert fit.dispersion_p < 1e-3


@pytest.mark.parametrize("family", ["lognormal", "gamma", "exponential"])
def test_fit_duration_picks_generating_family(family: str) -> None:
    rng = np.random.default_rng(3)
    x = {
        "lognormal": rng.lognormal(4.0, 0.8, 3000),
        "gamma": rng.gamma(4.0, 20.0, 3000),
        "exponential": rng.exponential(60.0, 3000),
    }[family]
    fit = fit_duration(x)
    ok = {"exponential": {"exponential", "gamma", "weibull"}}.get(family, {family})
    assert fit.best in ok
    assert fit.dist.expected() == pytest.approx(x.mean(), rel=0.05)
    row = fit.table.set_index("family").loc["lognormal"]
    assert row["ks_stat"] == pytest.approx(
        stats.kstest(x, stats.lognorm(*stats.lognorm.fit(x, floc=0)).cdf).statistic, rel=1e-6
    )


def test_fit_duration_rejects_bad_input() -> None:
    with pytest.raises(CalibrationError, match="> 0 min"):
        fit_duration([1.0, 2.0, 0.0, 3.0, 4.0, 5.0])
    with pytest.raises(CalibrationError, match=">= 5"):
        fit_duration([1.0, 2.0])


def test_fhir_fixture_calibration() -> None:
    encs = [json.loads(x) for x in (DATA / "encounters_small.ndjson").read_text().splitlines()]
    df = encounters_from_fhir(encs)
    assert len(df) == len(encs)
    rep = calibrate(df[df["status"] == "finished"])
    # generator: exponential gaps of mean 40 min -> 1.5 /h; LOS lognormal mean 180 min
    rate = np.mean(rep["arrivals"]["hourly_rate[/h]"])
    n = rep["arrivals"]["events"]
    assert abs(rate - 1.5) <= 4 * np.sqrt(1.5 / (n / 1.5)) * 1.5
    los = rep["length_of_stay[min]"]["EMER"]
    assert los["best"] in {"lognormal", "gamma"}
    assert los["spec_dist"]["mean"] == pytest.approx(180, rel=0.1)


def test_fhir_adapter_rejects_other_resources() -> None:
    with pytest.raises(CalibrationError, match=r"encounters\[0\]: resourceType is 'Patient'"):
        encounters_from_fhir([{"resourceType": "Patient"}])


def test_csv_calibration(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    start = pd.Timestamp("2025-03-03", tz="UTC") + pd.to_timedelta(
        np.cumsum(rng.exponential(30, 700)), unit="min"
    )
    end = start + pd.to_timedelta(rng.gamma(3.0, 40.0, 700), unit="min")
    p = tmp_path / "enc.csv"
    pd.DataFrame(
        {"start": start.strftime("%Y-%m-%dT%H:%M:%S%z"), "end": end.strftime("%Y-%m-%dT%H:%M:%S%z")}
    ).to_csv(p, index=False)
    rep = calibrate(encounters_from_csv(p), by=None)
    assert rep["length_of_stay[min]"]["all"]["spec_dist"]["mean"] == pytest.approx(120, rel=0.1)


@pytest.mark.shared
def test_synthea_encounters(shared_data: Path) -> None:
    path = shared_data / "fhir" / "synthea-bulk-10" / "Encounter.000.ndjson"
    with path.open() as fh:
        df = encounters_from_fhir(json.loads(x) for x in fh)
    assert len(df) == 1215 and df["los"].notna().all()
    rep = calibrate(df)
    amb = rep["length_of_stay[min]"]["AMB"]
    assert amb["n"] == int(
        (df["class"] == "AMB").sum() - (df.loc[df["class"] == "AMB", "los"] <= 0).sum()
    )
    assert {c["family"] for c in amb["candidates"]} == {
        "exponential",
        "lognormal",
        "gamma",
        "weibull",
    }
    # Synthea encounter start times are far from a stationary Poisson process; the
    # goodness-of-fit test must say so rather than pass silently.
    assert rep["arrivals"]["gof"]["p_value"] < 0.05
