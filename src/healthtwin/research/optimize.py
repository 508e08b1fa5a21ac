"""Dose and cohort (enrichment) optimisation under safety constraints.

Dose: efficacy Δ(d) = Eₘₐₓ·d/(ED50 + d) (outcome unit), adverse-event probability
P_AE(d) = expit(θ₀ + θ₁·d) (unit "1", d in "mg"). Parameter uncertainty is propagated by
drawing (Eₘₐₓ, ED50, θ₀, θ₁) from normal approximations; the chosen dose maximises the mean
power (PROCOVA formula, see :mod:`power`) subject to the upper 95% bound of P_AE ≤ ``max_ae``.

Enrichment: among virtual patients with biomarker ≥ c, the mean individual treatment effect
Δ(c) and outcome sd σ(c) give the power at fixed n; c maximises power subject to a minimum
eligible fraction (enrolment feasibility) and a maximum predicted AE probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from healthtwin.models.base import check_range

F = NDArray[np.float64]


def _power(n: float, sigma: F, delta: F, r2: float, alpha: float, ratio: float) -> F:
    za = stats.norm.ppf(1 - alpha)
    core = (
        np.maximum(n - za**2 / 2, 0) * ratio * delta**2 / ((1 + ratio) ** 2 * sigma**2 * (1 - r2))
    )
    return np.asarray(stats.norm.cdf(np.sign(delta) * np.sqrt(core) - za), dtype=float)


@dataclass(frozen=True)
class DoseChoice:
    """Result of a dose search; the table has one row per candidate dose (simulated)."""

    dose: float
    power: float
    p_ae: float
    p_ae_upper: float
    table: pd.DataFrame


def optimise_dose(
    doses: ArrayLike,
    n: int,
    sigma: float,
    e_max: tuple[float, float],
    ed50: tuple[float, float],
    ae_intercept: tuple[float, float],
    ae_slope: tuple[float, float],
    max_ae: float = 0.2,
    r2: float = 0.0,
    alpha: float = 0.025,
    ratio: float = 1.0,
    draws: int = 4000,
    seed: int = 0,
) -> DoseChoice:
    """Dose (mg) maximising expected power with the 95% upper bound of P_AE ≤ ``max_ae``.

    Each uncertain parameter is given as (mean, sd).
    """
    d = np.asarray(doses, dtype=float)
    check_range("doses", d, 0.0, np.inf, "mg")
    check_range("max_ae", max_ae, 0.0, 1.0, "1")
    rng = np.random.default_rng(seed)
    em = rng.normal(*e_max, draws)[:, None]
    e50 = np.abs(rng.normal(*ed50, draws))[:, None]
    t0 = rng.normal(*ae_intercept, draws)[:, None]
    t1 = rng.normal(*ae_slope, draws)[:, None]
    delta = em * d / (e50 + d)
    pw = _power(n, np.full_like(delta, sigma), delta, r2, alpha, ratio)
    pae = 1 / (1 + np.exp(-(t0 + t1 * d)))
    table = pd.DataFrame(
        {
            "dose_mg": d,
            "effect_mean": delta.mean(axis=0),
            "power_mean": pw.mean(axis=0),
            "p_ae_mean": pae.mean(axis=0),
            "p_ae_low95": np.quantile(pae, 0.025, axis=0),
            "p_ae_up95": np.quantile(pae, 0.975, axis=0),
        }
    )
    table["feasible"] = table["p_ae_up95"] <= max_ae
    feas = table[table["feasible"]]
    if feas.empty:
        raise ValueError(f"no candidate dose has a 95% upper AE probability ≤ max_ae = {max_ae}")
    best = feas.loc[feas["power_mean"].idxmax()]
    return DoseChoice(
        float(best["dose_mg"]),
        float(best["power_mean"]),
        float(best["p_ae_mean"]),
        float(best["p_ae_up95"]),
        table,
    )


def optimise_enrichment(
    biomarker: ArrayLike,
    ite: ArrayLike,
    y_control: ArrayLike,
    n: int,
    p_ae: ArrayLike | None = None,
    max_ae: float = 1.0,
    min_fraction: float = 0.2,
    r2: float = 0.0,
    alpha: float = 0.025,
    thresholds: ArrayLike | None = None,
) -> pd.DataFrame:
    """Power of enriched designs (enrol biomarker ≥ c) at total size n, from virtual patients.

    ``ite`` (known individual effects) and ``y_control`` share the outcome unit; ``p_ae`` is
    each patient's predicted AE probability. Returns one row per threshold with the eligible
    fraction, mean effect (with a 95% interval from its standard error), σ, power, mean
    P_AE and a ``best`` flag on the feasible threshold of highest power.
    """
    b = np.asarray(biomarker, float)
    e = np.asarray(ite, float)
    y0 = np.asarray(y_control, float)
    pa = np.zeros_like(b) if p_ae is None else np.asarray(p_ae, float)
    cs = (
        np.quantile(b, np.linspace(0, 0.9, 19))
        if thresholds is None
        else np.asarray(thresholds, float)
    )
    elig = b[None, :] >= cs[:, None]
    cnt = elig.sum(axis=1)
    frac = cnt / b.size
    safe = np.maximum(cnt, 1)
    mean_e = (elig * e).sum(axis=1) / safe
    var_e = (elig * (e - mean_e[:, None]) ** 2).sum(axis=1) / np.maximum(cnt - 1, 1)
    m0 = (elig * y0).sum(axis=1) / safe
    sd0 = np.sqrt((elig * (y0 - m0[:, None]) ** 2).sum(axis=1) / np.maximum(cnt - 1, 1))
    mean_ae = (elig * pa).sum(axis=1) / safe
    pw = _power(n, sd0, mean_e, r2, alpha, 1.0)
    se = np.sqrt(var_e / safe)
    df = pd.DataFrame(
        {
            "threshold": cs,
            "eligible_fraction": frac,
            "effect_mean": mean_e,
            "effect_low95": mean_e - 1.96 * se,
            "effect_up95": mean_e + 1.96 * se,
            "sigma": sd0,
            "power": pw,
            "p_ae_mean": mean_ae,
        }
    )
    ok = (frac >= min_fraction) & (mean_ae <= max_ae) & (cnt > 1)
    df["feasible"] = ok
    df["best"] = False
    if ok.any():
        df.loc[df.index[ok][np.argmax(pw[ok])], "best"] = True
    return df
