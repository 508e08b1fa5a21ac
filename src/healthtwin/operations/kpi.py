"""KPI summaries with confidence intervals, replication-count choice and warm-up (MSER-5).

Every KPI key carries its UCUM unit in brackets, e.g. ``wait_mean[min]``; all values are
simulated. Intervals are Student-t intervals across independent replications.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from healthtwin.operations.engine import RepResult
from healthtwin.operations.spec import FacilitySpec


def kpi_frame(results: Sequence[RepResult]) -> pd.DataFrame:
    """One row per replication, one column per KPI (first axis = replications)."""
    return pd.DataFrame([r.kpis for r in results])


def t_interval(x: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, half-width, lower, upper of a t interval over replications (NaNs dropped)."""
    v = np.asarray(x, float)
    v = v[np.isfinite(v)]
    n = v.size
    if n == 0:
        return (math.nan,) * 4
    m = float(v.mean())
    if n < 2:
        return m, math.inf, -math.inf, math.inf
    hw = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return m, hw, m - hw, m + hw


def summarise(results: Sequence[RepResult] | pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per KPI: mean, half-width, CI bounds, sd, n (rows = KPIs). Values are simulated."""
    df = results if isinstance(results, pd.DataFrame) else kpi_frame(results)
    rows = {}
    for col in df.columns:
        v = df[col].to_numpy(float)
        m, hw, lo, hi = t_interval(v, level)
        fin = v[np.isfinite(v)]
        rows[col] = {
            "mean": m,
            "half_width": hw,
            "ci_low": lo,
            "ci_high": hi,
            "sd": float(fin.std(ddof=1)) if fin.size > 1 else math.nan,
            "n": int(fin.size),
        }
    out = pd.DataFrame(rows).T
    out.index.name = "kpi"
    out.attrs["simulated"] = True
    out.attrs["level"] = level
    return out


def replications_needed(
    run: Callable[[int, int], Sequence[RepResult]],
    kpi: str,
    rel_precision: float = 0.05,
    n0: int = 5,
    n_max: int = 200,
    level: float = 0.95,
) -> tuple[int, list[RepResult]]:
    """Sequential procedure (Law & Kelton): add replications until half-width/|mean| <= gamma'.

    ``run(first_rep, n)`` returns ``n`` replications starting at ``first_rep``; the stopping
    rule uses the adjusted precision ``gamma/(1+gamma)``. Returns (n, results).
    """
    res = list(run(0, n0))
    adj = rel_precision / (1 + rel_precision)
    while True:
        m, hw, _, _ = t_interval(np.array([r.kpis[kpi] for r in res]), level)
        if (abs(m) > 0 and hw / abs(m) <= adj) or len(res) >= n_max:
            return len(res), res
        # Jump close to the projected requirement n* = n (hw / (adj |m|))^2.
        target = math.ceil(len(res) * (hw / (adj * abs(m))) ** 2) if m else len(res) + 1
        step = max(1, min(target - len(res), n_max - len(res), len(res)))
        res.extend(run(len(res), step))


def mser5(series: np.ndarray) -> int:
    """MSER-5 warm-up truncation point (index into ``series``, in observations).

    Batches of 5, truncation d minimises sum((y - mean_d)^2) / (n - d)^2 over the first half.
    """
    y = np.asarray(series, float)
    nb = y.size // 5
    if nb < 4:
        return 0
    b = y[: nb * 5].reshape(nb, 5).mean(axis=1)
    best, arg = math.inf, 0
    for d in range(nb // 2):
        tail = b[d:]
        v = float(np.sum((tail - tail.mean()) ** 2) / tail.size**2)
        if v < best:
            best, arg = v, d
    return arg * 5


def paired_difference(base: pd.DataFrame, other: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Paired (common random numbers) difference ``other - base`` per KPI with t intervals."""
    cols = [c for c in base.columns if c in other.columns]
    n = min(len(base), len(other))
    rows = {}
    for c in cols:
        d = other[c].to_numpy(float)[:n] - base[c].to_numpy(float)[:n]
        m, hw, lo, hi = t_interval(d, level)
        rows[c] = {
            "base": float(np.nanmean(base[c])),
            "scenario": float(np.nanmean(other[c])),
            "diff": m,
            "ci_low": lo,
            "ci_high": hi,
            "significant": bool(lo > 0 or hi < 0),
        }
    out = pd.DataFrame(rows).T
    out.index.name = "kpi"
    return out


def choose_warmup(spec: FacilitySpec, n_pilot: int = 5, seed: int = 0) -> float:
    """Warm-up (min) by MSER-5 on the pilot-mean total occupancy series (all stations).

    Runs ``n_pilot`` replications with warm-up 0 and returns the truncation point times the
    sampling interval; cap: half the horizon (MSER-5 searches the first half only).
    """
    from healthtwin.operations.engine import run_replications

    pilot = spec.model_copy(update={"warmup": 0.0})
    res = run_replications(pilot, n_pilot, seed)
    series = np.mean([r.occupancy.sum(axis=1) for r in res], axis=0)
    return float(mser5(series) * spec.sample_every)
