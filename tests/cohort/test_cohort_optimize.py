"""Dose and enrichment optimisation against analytic power and Emax curves."""

from __future__ import annotations

import numpy as np
import pytest

from healthtwin.research.optimize import optimise_dose, optimise_enrichment
from healthtwin.research.power import procova_power


def test_dose_choice_is_largest_safe_dose_and_power_matches_formula() -> None:
    doses = np.array([10, 25, 50, 100, 200, 400.0])
    ch = optimise_dose(
        doses,
        n=150,
        sigma=1.0,
        e_max=(0.8, 1e-9),
        ed50=(50, 1e-9),
        ae_intercept=(-3.0, 1e-9),
        ae_slope=(0.01, 1e-9),
        max_ae=0.3,
    )
    # P_AE(d) = expit(−3 + 0.01 d) ≤ 0.3  <=>  d ≤ (logit 0.3 + 3)/0.01 = 215.3 mg
    assert ch.dose == 200
    delta = 0.8 * 200 / 250
    assert ch.power == pytest.approx(float(procova_power(150, 1.0, delta)), abs=1e-6)
    assert ch.p_ae == pytest.approx(1 / (1 + np.exp(3 - 2.0)), abs=1e-6)
    assert not ch.table.loc[ch.table["dose_mg"] == 400, "feasible"].item()


def test_uncertainty_makes_the_choice_more_cautious() -> None:
    doses = np.linspace(10, 400, 40)
    kw = {
        "n": 150,
        "sigma": 1.0,
        "e_max": (0.8, 0.1),
        "ed50": (50, 10),
        "ae_intercept": (-3.0, 0.3),
        "max_ae": 0.3,
    }
    sure = optimise_dose(doses, ae_slope=(0.01, 1e-9), **kw)  # type: ignore[arg-type]
    unsure = optimise_dose(doses, ae_slope=(0.01, 0.003), **kw)  # type: ignore[arg-type]
    assert unsure.dose < sure.dose
    assert (unsure.table["p_ae_low95"] <= unsure.table["p_ae_mean"]).all()
    with pytest.raises(ValueError, match="no candidate dose"):
        optimise_dose(
            doses,
            ae_slope=(0.01, 0.0),
            max_ae=0.01,
            **{k: v for k, v in kw.items() if k != "max_ae"},
        )  # type: ignore[arg-type]


def test_enrichment_finds_responders_under_constraints() -> None:
    rng = np.random.default_rng(0)
    b = rng.normal(0, 1, 50_000)  # biomarker (1)
    ite = 0.1 + 0.4 * (b > 0.5)  # responders above 0.5
    y0 = rng.normal(0, 1, b.size)
    p_ae = 0.05 + 0.1 * (b > 1.5)
    tab = optimise_enrichment(
        b,
        ite,
        y0,
        n=100,
        p_ae=p_ae,
        max_ae=0.12,
        min_fraction=0.1,
        thresholds=[-5, 0.0, 0.5, 1.0, 1.5],
    )
    best = tab[tab["best"]].iloc[0]
    assert best["threshold"] in (0.5, 1.0)  # 1.5 is unsafe, lower ones dilute the effect
    row = tab[tab["threshold"] == 0.5].iloc[0]
    assert row["power"] == pytest.approx(
        float(procova_power(100, row["sigma"], row["effect_mean"])), rel=1e-9
    )
    assert row["effect_mean"] == pytest.approx(0.5)
    # threshold 0: E[ITE | b ≥ 0] = 0.1 + 0.4·P(b > 0.5)/P(b ≥ 0) (normal oracle), within 4 SE
    # (a 95% CI would miss 5% of the time by design; SE = half-width / 1.96)
    from scipy import stats

    expected = 0.1 + 0.4 * stats.norm.sf(0.5) / 0.5
    r0 = tab[tab["threshold"] == 0.0].iloc[0]
    se = (r0["effect_up95"] - r0["effect_low95"]) / (2 * 1.96)
    assert abs(r0["effect_mean"] - expected) < 4 * se
    assert not tab.loc[tab["threshold"] == 1.5, "feasible"].item()
