"""Virtual populations: fit to a target cohort, checked on a held-out part of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from healthtwin.models.base import OutOfRangeError
from healthtwin.research.vpop import (
    BOUNDS,
    SummaryStats,
    VirtualPopulation,
    fit_report,
    load_synthea_cohort,
)

RHO = np.array([[1.0, 0.5, 0.3], [0.5, 1.0, 0.4], [0.3, 0.4, 1.0]])


def _known_cohort(n: int, seed: int) -> pd.DataFrame:
    """Own fixture: a cohort from a known Gaussian-copula law (age N(55,9), BMI lognormal, SBP N(130,15))."""
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal(np.zeros(3), RHO, n)
    return pd.DataFrame(
        {
            "age": 55 + 9 * z[:, 0],
            "bmi": np.exp(np.log(28) + 0.15 * z[:, 1]),
            "sbp": 130 + 15 * z[:, 2],
        }
    )


TRUE_CDF = {
    "age": stats.norm(55, 9).cdf,
    "bmi": stats.lognorm(0.15, scale=28).cdf,
    "sbp": stats.norm(130, 15).cdf,
}


def test_selection_matches_held_out_cohort_and_true_law() -> None:
    cohort = _known_cohort(600, 1)
    train, held_out = cohort.iloc[:400], cohort.iloc[400:]
    vp = VirtualPopulation().fit(train)
    pop = vp.select(40_000, np.random.default_rng(2))
    assert len(pop) > 1000
    rep = fit_report(pop, held_out)
    assert min(rep.ks_pvalue.values()) > 0.01, rep.to_frame()
    for c, cdf in TRUE_CDF.items():
        # KS distance to the true law: at most the sampling error of 400 training patients
        # (KS 99% critical value 1.63/√400 ≈ 0.081)
        assert stats.kstest(pop[c], cdf).statistic < 0.081, c
    # correlation preserved: Spearman of a Gaussian copula = (6/π)·arcsin(ρ/2)
    sp = stats.spearmanr(pop.to_numpy()).statistic
    expected = 6 / np.pi * np.arcsin(RHO / 2)
    np.testing.assert_allclose(sp, expected, atol=0.1)


def test_importance_weights_and_ess() -> None:
    cohort = _known_cohort(500, 3)
    vp = VirtualPopulation().fit(cohort)
    pop, w, ess = vp.weights(30_000, np.random.default_rng(4))
    assert w.sum() == pytest.approx(1.0)
    assert 100 < ess < 30_000
    assert ess == pytest.approx(1 / np.sum(w**2))
    rep = fit_report(pop, cohort, w)
    assert rep.ess == pytest.approx(ess)
    for c in ("age", "sbp"):
        sd = cohort[c].std()
        assert abs(rep.mean_virtual[c] - cohort[c].mean()) < 0.1 * sd
    assert rep.corr_max_abs_diff < 0.12


def test_summary_statistics_target() -> None:
    target = SummaryStats(
        ["age", "hba1c", "female"],
        [60, 7.5, 0.4],
        [10, 1.0, 0.49],
        corr=[[1, 0.3, 0], [0.3, 1, 0], [0, 0, 1]],
    )
    pop = VirtualPopulation().fit(target).sample(50_000, np.random.default_rng(5))
    assert pop["age"].mean() == pytest.approx(60, abs=0.3)
    assert pop["hba1c"].std() == pytest.approx(1.0, abs=0.05)
    assert pop["female"].mean() == pytest.approx(0.4, abs=0.01)
    assert stats.pearsonr(pop["age"], pop["hba1c"]).statistic == pytest.approx(0.3, abs=0.03)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1000), spread=st.floats(1.0, 3.0))
def test_plausible_patients_respect_physiological_bounds(seed: int, spread: float) -> None:
    vp = VirtualPopulation(spread=spread).fit(_known_cohort(100, seed))
    pop, _ = vp.plausible(2000, np.random.default_rng(seed))
    for c in pop.columns:
        lo, hi = BOUNDS[c]
        assert pop[c].between(lo, hi).all(), c


def test_bad_targets_are_named() -> None:
    bad = _known_cohort(50, 0)
    bad.loc[3, "bmi"] = 150.0
    with pytest.raises(OutOfRangeError, match="bmi"):
        VirtualPopulation().fit(bad)
    with pytest.raises(KeyError, match="ldl"):
        VirtualPopulation().fit(pd.DataFrame({"ldl": np.arange(10.0)}))
    with pytest.raises(ValueError, match="at least 5"):
        VirtualPopulation().fit(pd.DataFrame({"age": [40.0, 50.0]}))
    with pytest.raises(RuntimeError, match="not fitted"):
        VirtualPopulation().sample(3, np.random.default_rng(0))


@pytest.mark.shared
def test_synthea_cohort_fit_on_held_out_patients(shared_data: Path) -> None:
    cohort = load_synthea_cohort(shared_data / "fhir" / "synthea-bundles")
    assert len(cohort) >= 30 and (cohort["age"] >= 18).all()
    assert cohort["bmi"].notna().all() and cohort["sbp"].between(70, 250).all()
    perm = np.random.default_rng(0).permutation(len(cohort))
    cut = int(0.7 * len(cohort))
    train, held_out = cohort.iloc[perm[:cut]], cohort.iloc[perm[cut:]]
    vp = VirtualPopulation().fit(train)
    pop = vp.select(30_000, np.random.default_rng(1))
    rep = fit_report(pop, held_out)
    continuous = [c for c in rep.ks if c != "female" and held_out[c].notna().sum() >= 5]
    assert continuous
    for c in continuous:
        assert rep.ks_pvalue[c] > 0.01, rep.to_frame()
    assert abs(rep.mean_virtual["female"] - train["female"].mean()) < 0.05
