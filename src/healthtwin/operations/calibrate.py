"""Calibration from encounter history: arrival profiles and length-of-stay distributions.

* :func:`encounters_from_fhir` is a pure adapter: iterable of FHIR R4 Encounter dicts (as
  parsed JSON, e.g. from a store's ``iter_resources("Encounter")``) -> a tidy frame.
* :func:`encounters_from_csv` reads ``start,end[,class]`` columns (ISO 8601 timestamps).
* :func:`fit_arrivals` fits a non-homogeneous Poisson process with rate
  ``lambda(h, d) = r_h * f_d`` (/h; hour-of-day profile x weekday factor) by maximum
  likelihood, with exact Poisson (Garwood) intervals and a Poisson dispersion goodness-of-fit test.
* :func:`fit_duration` fits exponential, lognormal, gamma and Weibull by maximum likelihood
  (min), ranks them by AIC and reports the Kolmogorov-Smirnov statistic and p-value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from healthtwin.operations.spec import Dist

ACTIVE_STATUSES = frozenset({"arrived", "triaged", "in-progress", "onleave"})


class CalibrationError(ValueError):
    """Encounter data cannot be calibrated (names the input and the reason)."""


def _ref_id(ref: Mapping[str, Any] | None) -> str | None:
    if not ref:
        return None
    r = ref.get("reference")
    return str(r) if r is not None else (str(ref["display"]) if "display" in ref else None)


def encounters_from_fhir(encounters: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """FHIR R4 Encounter dicts -> frame with id, patient, status, class, start, end (UTC),
    los (min), location. Non-Encounter resources raise; missing period.start is skipped.
    """
    rows = []
    for i, e in enumerate(encounters):
        rt = e.get("resourceType")
        if rt != "Encounter":
            raise CalibrationError(f"encounters[{i}]: resourceType is {rt!r}, expected 'Encounter'")
        period = e.get("period") or {}
        start = period.get("start")
        if start is None:
            continue
        cls = e.get("class") or {}
        if isinstance(cls, list):  # R5-style
            cls = (cls[0].get("coding") or [{}])[0] if cls else {}
        locs = e.get("location") or []
        loc = _ref_id(locs[-1].get("location")) if locs else None
        types = e.get("type") or []
        tcode = None
        if types and types[0].get("coding"):
            tcode = types[0]["coding"][0].get("code")
        rows.append(
            {
                "id": e.get("id"),
                "patient": _ref_id(e.get("subject")),
                "status": e.get("status"),
                "class": cls.get("code"),
                "type": tcode,
                "start": start,
                "end": period.get("end"),
                "location": loc,
            }
        )
    df = pd.DataFrame(
        rows, columns=["id", "patient", "status", "class", "type", "start", "end", "location"]
    )
    df["start"] = pd.to_datetime(df["start"], utc=True, format="ISO8601")
    df["end"] = pd.to_datetime(df["end"], utc=True, format="ISO8601")
    df["los"] = (df["end"] - df["start"]).dt.total_seconds() / 60.0
    return df


def encounters_from_csv(path: str | Path) -> pd.DataFrame:
    """CSV with columns ``start`` and optionally ``end``, ``class`` (ISO 8601) -> frame."""
    df = pd.read_csv(path)
    if "start" not in df.columns:
        raise CalibrationError(f"{path}: needs a 'start' column (found {list(df.columns)})")
    df["start"] = pd.to_datetime(df["start"], utc=True, format="ISO8601")
    if "end" in df.columns:
        df["end"] = pd.to_datetime(df["end"], utc=True, format="ISO8601")
        df["los"] = (df["end"] - df["start"]).dt.total_seconds() / 60.0
    return df


@dataclass
class ArrivalFit:
    """Fitted NHPP: ``hourly`` rates r_h (/h), weekday factors f_d (mean 1), intervals, GOF."""

    hourly: np.ndarray
    hourly_low: np.ndarray
    hourly_high: np.ndarray
    weekday: np.ndarray
    n_events: int
    days: float
    dispersion_chi2: float
    dispersion_df: int
    dispersion_p: float

    def to_spec(self) -> dict[str, Any]:
        """The ``arrivals`` block of a facility spec."""
        return {
            "period_min": 60.0,
            "profile": [round(float(x), 6) for x in self.hourly],
            "weekday_factors": [round(float(x), 6) for x in self.weekday],
        }

    def report(self) -> dict[str, Any]:
        return {
            "model": "NHPP lambda(h,d) = r_h * f_d [/h]",
            "events": self.n_events,
            "days_observed": self.days,
            "hourly_rate[/h]": self.hourly.tolist(),
            "hourly_rate_ci95[/h]": [self.hourly_low.tolist(), self.hourly_high.tolist()],
            "weekday_factor[1]": self.weekday.tolist(),
            "gof": {
                "test": "Poisson dispersion (Pearson chi-square of daily counts per hour-weekday cell)",
                "chi2": self.dispersion_chi2,
                "df": self.dispersion_df,
                "p_value": self.dispersion_p,
            },
        }


def fit_arrivals(
    times: pd.Series | Iterable[Any], tz: str | None = None, level: float = 0.95
) -> ArrivalFit:
    """Fit r_h * f_d to arrival timestamps (whole days between first and last arrival).

    MLE of the multiplicative Poisson model by iterative proportional fitting on the
    hour x weekday count table with exposure (number of each weekday observed).
    """
    t = pd.to_datetime(pd.Series(list(times)), utc=True, format="ISO8601")
    if tz:
        t = t.dt.tz_convert(tz)
    if len(t) < 2:
        raise CalibrationError(f"fit_arrivals: need at least 2 arrival times, got {len(t)}")
    day0 = t.min().floor("D")
    day1 = t.max().floor("D") + pd.Timedelta(days=1)
    days = pd.date_range(day0, day1, freq="D", inclusive="left")
    exposure = np.bincount(days.dayofweek, minlength=7).astype(float)  # days per weekday
    counts = np.zeros((7, 24))
    np.add.at(counts, (t.dt.dayofweek.to_numpy(), t.dt.hour.to_numpy()), 1.0)
    r = counts.sum(axis=0) / exposure.sum()
    f = np.ones(7)
    for _ in range(200):
        denom_f = exposure * r.sum()
        f_new = np.where(denom_f > 0, counts.sum(axis=1) / np.maximum(denom_f, 1e-300), 0.0)
        seen = exposure > 0
        f_new[seen] = f_new[seen] / (np.sum(f_new[seen] * exposure[seen]) / exposure[seen].sum())
        f_new[~seen] = 1.0
        r_new = counts.sum(axis=0) / max(float(np.sum(exposure * f_new)), 1e-300)
        done = np.allclose(r_new, r) and np.allclose(f_new, f)
        r, f = r_new, f_new
        if done:
            break
    expo_eff = float(np.sum(exposure * f))
    k = counts.sum(axis=0)
    a = 1 - level
    low = np.where(k > 0, stats.chi2.ppf(a / 2, 2 * k) / 2, 0.0) / expo_eff
    high = stats.chi2.ppf(1 - a / 2, 2 * k + 2) / 2 / expo_eff
    # dispersion test: daily counts per (weekday, hour) cell vs fitted mean
    day_idx = ((t.dt.floor("D") - day0).dt.days).to_numpy()
    daily = np.zeros((len(days), 24))
    np.add.at(daily, (day_idx, t.dt.hour.to_numpy()), 1.0)
    mu = np.outer(f[days.dayofweek], r)
    ok = mu > 0
    chi2 = float(np.sum((daily[ok] - mu[ok]) ** 2 / mu[ok]))
    dof = max(int(ok.sum()) - 24 - 6, 1)
    p = float(stats.chi2.sf(chi2, dof))
    return ArrivalFit(r, low, high, f, int(len(t)), float(len(days)), chi2, dof, p)


@dataclass
class DurationFit:
    """Best-by-AIC duration distribution (min) and the table of all candidates."""

    best: str
    dist: Dist
    table: pd.DataFrame  # per family: params, loglik, aic, ks_stat, ks_p, mean


def fit_duration(values: Iterable[float]) -> DurationFit:
    """Fit exponential, lognormal, gamma, Weibull to durations (min, > 0) by MLE (loc = 0)."""
    x = np.asarray(list(values), float)
    x = x[np.isfinite(x)]
    if x.size < 5:
        raise CalibrationError(f"fit_duration: need >= 5 finite durations, got {x.size}")
    if np.any(x <= 0):
        raise CalibrationError(
            f"fit_duration: durations must be > 0 min ({int(np.sum(x <= 0))} are not)"
        )
    fams = {
        "exponential": stats.expon,
        "lognormal": stats.lognorm,
        "gamma": stats.gamma,
        "weibull": stats.weibull_min,
    }
    rows = []
    for name, fam in fams.items():
        params = fam.fit(x, floc=0)
        ll = float(np.sum(fam.logpdf(x, *params)))
        k = len(params) - 1
        ks = stats.kstest(x, fam.cdf, args=params)
        m, v = (float(z) for z in fam.stats(*params, moments="mv"))
        rows.append(
            {
                "family": name,
                "params": tuple(float(p) for p in params),
                "loglik": ll,
                "aic": 2 * k - 2 * ll,
                "ks_stat": float(ks.statistic),
                "ks_p": float(ks.pvalue),
                "mean[min]": m,
                "sd[min]": math.sqrt(v) if v > 0 else 0.0,
            }
        )
    table = pd.DataFrame(rows).sort_values("aic").reset_index(drop=True)
    best = str(table.loc[0, "family"])
    m = float(table.loc[0, "mean[min]"])
    sd = float(table.loc[0, "sd[min]"])
    if best == "exponential":
        d = Dist(dist="exponential", mean=m)
    elif best == "lognormal":
        d = Dist(dist="lognormal", mean=m, sd=sd)
    else:  # gamma / weibull: moment-matched gamma keeps the spec vocabulary small
        d = Dist(dist="gamma", mean=m, sd=sd)
    return DurationFit(best, d, table)


def calibrate(encounters: pd.DataFrame, by: str | None = "class") -> dict[str, Any]:
    """Arrival NHPP and LOS fit (overall and per ``by`` group with >= 5 stays). JSON-able."""
    if encounters.empty:
        raise CalibrationError("calibrate: no encounters")
    out: dict[str, Any] = {"arrivals": fit_arrivals(encounters["start"]).report()}
    out["spec_arrivals"] = fit_arrivals(encounters["start"]).to_spec()
    los: dict[str, Any] = {}
    groups: list[tuple[str, pd.DataFrame]] = [("all", encounters)]
    if by and by in encounters.columns:
        groups += [(str(k), g) for k, g in encounters.groupby(by)]
    for name, g in groups:
        v = g["los"].to_numpy(float) if "los" in g else np.zeros(0)
        v = v[np.isfinite(v) & (v > 0)]
        if v.size < 5:
            continue
        fit = fit_duration(v)
        los[name] = {
            "n": int(v.size),
            "best": fit.best,
            "spec_dist": fit.dist.model_dump(exclude_none=True),
            "candidates": fit.table.to_dict(orient="records"),
        }
    out["length_of_stay[min]"] = los
    return out
