"""Batched HC3 ANCOVA equals statsmodels OLS(cov_type="HC3") replication by replication."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression

from healthtwin.research.procova import Procova, ancova, batched_ancova


def _data(
    rng: np.random.Generator, reps: int, n: int, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = rng.standard_normal((reps, n, k))
    t = (rng.random((reps, n)) < 0.5).astype(float)
    y = (
        x @ np.linspace(1, 0.2, k)
        + 0.3 * t
        + rng.standard_normal((reps, n)) * (1 + np.abs(x[..., 0]))
    )
    return y, t, x


@pytest.mark.parametrize("cov_type", ["HC3", "HC2", "HC0", "nonrobust"])
def test_batched_equals_statsmodels(cov_type: str) -> None:
    rng = np.random.default_rng(4)
    y, t, x = _data(rng, 5, 60, 2)
    y[1, :7] = np.nan  # missing outcomes are dropped
    b = batched_ancova(y, t, x, cov_type)
    for r in range(5):
        ok = np.isfinite(y[r])
        X = sm.add_constant(np.column_stack([t[r], x[r]])[ok])
        fit = sm.OLS(y[r][ok], X).fit(cov_type=cov_type)
        assert b.estimate[r] == pytest.approx(fit.params[1], rel=1e-10, abs=1e-12)
        assert b.se[r] == pytest.approx(fit.bse[1], rel=1e-9)
        assert b.df[r] == fit.df_resid


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(12, 80), k=st.integers(0, 3))
def test_single_trial_matches_statsmodels(seed: int, n: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    y, t, x = _data(rng, 1, n, max(k, 1))
    t[0, :2] = [0, 1]
    cov = x[0, :, :k] if k else None
    res = ancova(y[0], t[0], cov, unit="mg/dL")
    X = sm.add_constant(
        np.column_stack([t[0], *([] if cov is None else [cov])]), has_constant="add"
    )
    fit = sm.OLS(y[0], X).fit(cov_type="HC3", use_t=True)
    assert res.estimate == pytest.approx(fit.params[1], rel=1e-9, abs=1e-12)
    assert res.se == pytest.approx(fit.bse[1], rel=1e-8)
    lo, hi = fit.conf_int()[1]
    assert (res.ci_low, res.ci_high) == pytest.approx((lo, hi), rel=1e-8, abs=1e-10)
    assert res.p_value_two_sided == pytest.approx(fit.pvalues[1], rel=1e-6, abs=1e-12)
    assert res.unit == "mg/dL"


def test_procova_accepts_any_sklearn_regressor() -> None:
    rng = np.random.default_rng(0)
    xh = rng.standard_normal((500, 2))
    yh = np.sin(xh[:, 0]) * 2 + xh[:, 1] + 0.3 * rng.standard_normal(500)
    p = Procova(RandomForestRegressor(n_estimators=30, random_state=0), unit="kg").fit(xh, yh)
    x = rng.standard_normal((120, 2))
    t = np.tile([0.0, 1.0], 60)
    y = np.sin(x[:, 0]) * 2 + x[:, 1] + 0.3 * rng.standard_normal(120) + 0.5 * t
    res = p.analyze(x, y, t)
    m = p.score(x)
    fit = sm.OLS(y, sm.add_constant(np.column_stack([t, m - m.mean()]))).fit(cov_type="HC3")
    assert res.estimate == pytest.approx(fit.params[1], rel=1e-9)
    assert res.se < ancova(y, t).se  # adjustment helps a lot here
    assert res.ci_low < 0.5 < res.ci_high


def test_binary_variant_uses_predict_proba() -> None:
    rng = np.random.default_rng(1)
    xh = rng.standard_normal((400, 2))
    yh = (rng.random(400) < 1 / (1 + np.exp(-2 * xh[:, 0]))).astype(int)
    p = Procova(LogisticRegression(), binary=True).fit(xh, yh)
    s = p.score(xh[:5])
    assert np.all((s > 0) & (s < 1))
    np.testing.assert_allclose(s, p.model_.predict_proba(xh[:5])[:, 1])


def test_errors_are_explicit() -> None:
    with pytest.raises(ValueError, match="shape"):
        batched_ancova(np.zeros((2, 5)), np.zeros((2, 6)))
    with pytest.raises(ValueError, match="too few"):
        batched_ancova(np.array([1.0, np.nan, np.nan, np.nan]), np.array([0.0, 1, 0, 1]))
    with pytest.raises(ValueError, match="cov_type"):
        batched_ancova(np.arange(6.0), np.array([0.0, 1, 0, 1, 0, 1]), cov_type="HC9")
    with pytest.raises(RuntimeError, match="not fitted"):
        Procova(LogisticRegression()).score(np.zeros((2, 2)))
