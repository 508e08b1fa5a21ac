"""Evaluation metrics against scikit-learn / statsmodels and analytic results."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special
from sklearn.calibration import calibration_curve as sk_calibration_curve
from sklearn.metrics import (
    brier_score_loss,
    mean_absolute_error,
    mean_absolute_percentage_error,
    mean_squared_error,
    roc_auc_score,
)

from healthtwin.models import evaluation as ev


def _data(n: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 5, n)
    y = (rng.random(n) < np.clip(1.3 * p, 0, 1)).astype(float)
    return y, p


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 10)), min_size=2, max_size=60).filter(
        lambda r: 0 < sum(b for b, _ in r) < len(r)
    )
)
def test_risk_eval_auroc_and_brier_equal_sklearn(rows: list[tuple[bool, int]]) -> None:
    y = np.array([b for b, _ in rows], dtype=float)
    p = np.array([k / 10 for _, k in rows])  # coarse grid: many ties
    assert ev.auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert ev.brier_score(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)


def test_risk_eval_batched_rows_equal_single_rows() -> None:
    y, p = _data()
    idx = np.random.default_rng(0).integers(0, y.size, (5, y.size))
    batch = ev.auroc(y[idx], p[idx])
    np.testing.assert_allclose(batch, [roc_auc_score(y[i], p[i]) for i in idx], rtol=1e-12)
    np.testing.assert_allclose(
        ev.calibration_slope(y[idx], p[idx]),
        [ev.calibration_slope(y[i], p[i]) for i in idx],
        rtol=1e-9,
    )


def test_risk_eval_calibration_slope_intercept_equal_statsmodels_glm() -> None:
    y, p = _data()
    lp = special.logit(p)
    slope_fit = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial()).fit()
    citl_fit = sm.GLM(y, np.ones_like(lp), family=sm.families.Binomial(), offset=lp).fit()
    assert ev.calibration_slope(y, p) == pytest.approx(slope_fit.params[1], rel=1e-8)
    assert ev.calibration_intercept(y, p) == pytest.approx(citl_fit.params[0], rel=1e-8)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_risk_eval_calibration_curve_equals_sklearn(strategy: str) -> None:
    y, p = _data()
    prob_true, prob_pred = sk_calibration_curve(y, p, n_bins=8, strategy=strategy)
    ours = ev.calibration_curve(y, p, n_bins=8, strategy=strategy)
    np.testing.assert_allclose(ours["observed"], prob_true, rtol=1e-12)
    np.testing.assert_allclose(ours["mean_predicted"], prob_pred, rtol=1e-12)
    assert np.all(ours["observed_lower"] <= ours["observed"]) and np.all(
        ours["observed"] <= ours["observed_upper"]
    )


def test_risk_eval_ici_recovers_known_miscalibration() -> None:
    # True risk q; predictions p = expit(logit(q) + 1) are miscalibrated by a known amount,
    # so ICI -> mean|p - q| (the lowess smooth of y on p estimates q). With n = 3000 the
    # ICI - mean|p - q| has Monte Carlo SD 0.008 (bias -0.003) over 20 seeds at n = 3000;
    # we allow 0.02 (about 2.5 SD). Calibrated predictions gave ICI <= 0.017; we allow 0.03.
    rng = np.random.default_rng(7)
    q = rng.uniform(0.05, 0.6, 3000)
    y = (rng.random(q.size) < q).astype(float)
    p = special.expit(special.logit(q) + 1.0)
    assert ev.ici(y, p) == pytest.approx(np.mean(np.abs(p - q)), abs=0.02)
    assert ev.ici(y, q) < 0.03


def test_risk_eval_net_benefit_matches_definition() -> None:
    y, p = _data()
    t = np.array([0.05, 0.1, 0.2, 0.3, 0.5])
    nb = ev.net_benefit(y, p, t)
    n = y.size
    for i, th in enumerate(t):
        treat = p >= th
        tp = np.sum(treat & (y == 1))
        fp = np.sum(treat & (y == 0))
        assert nb["net_benefit"][i] == pytest.approx(tp / n - fp / n * th / (1 - th))
    # treat-all equals the model's curve when the threshold is below every prediction
    low = ev.net_benefit(y, p, [p.min() / 2])
    assert low["net_benefit"][0] == pytest.approx(low["treat_all"][0])
    assert np.all(nb["treat_none"] == 0)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        ev.net_benefit(y, p, [0.0])


def test_risk_eval_continuous_equal_sklearn() -> None:
    rng = np.random.default_rng(2)
    y = rng.uniform(70, 250, 300)  # glucose, mg/dL
    yhat = y + rng.normal(0, 15, 300)
    assert ev.rmse(y, yhat) == pytest.approx(np.sqrt(mean_squared_error(y, yhat)))
    assert ev.mae(y, yhat) == pytest.approx(mean_absolute_error(y, yhat))
    assert ev.mard(y, yhat) == pytest.approx(100 * mean_absolute_percentage_error(y, yhat))
    lo, hi = yhat - 20, yhat + 20
    assert ev.interval_coverage(y, lo, hi) == np.mean(np.abs(y - yhat) <= 20)
    res = ev.evaluate_continuous(y, yhat, lo, hi, unit="mg/dL", n_boot=200)
    assert res["rmse"].unit == "mg/dL" and res["mard"].unit == "%"
    assert res["coverage"].lower <= res["coverage"].value <= res["coverage"].upper
    with pytest.raises(ValueError, match="strictly positive"):
        ev.mard(np.array([0.0, 1.0]), np.array([1.0, 1.0]))


def test_risk_eval_bootstrap_mean_matches_normal_theory() -> None:
    # Bootstrap percentile CI of a mean vs the analytic mean +/- 1.96 s / sqrt(n). The endpoint
    # Monte Carlo error with B = 2000 is about 0.05 s/sqrt(n) (quantile SE); allow 0.15 s/sqrt(n).
    rng = np.random.default_rng(11)
    x = rng.normal(5.0, 2.0, 400)
    est = ev.bootstrap(
        lambda a: np.mean(a, axis=-1), x, n_boot=2000, seed=3, name="mean", unit="mmol/L"
    )
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert est.lower == pytest.approx(x.mean() - 1.96 * se, abs=0.15 * se)
    assert est.upper == pytest.approx(x.mean() + 1.96 * se, abs=0.15 * se)
    again = ev.bootstrap(lambda a: np.mean(a, axis=-1), x, n_boot=2000, seed=3)
    assert (again.lower, again.upper) == (est.lower, est.upper)  # seeded, reproducible


def test_risk_eval_binary_report_and_subgroups() -> None:
    y, p = _data()
    rep = ev.evaluate_binary(y, p, n_boot=100)
    assert set(rep) == {"auroc", "brier", "calibration_intercept", "calibration_slope", "ici"}
    for e in rep.values():
        assert e.lower <= e.value <= e.upper and e.n_valid == 100
    groups = np.array(["a"] * 380 + ["tiny"] * 15 + ["one-class"] * 5)
    y2 = y.copy()
    y2[-5:] = 0
    tab = ev.subgroup_breakdown(y2, p, groups, min_size=30, n_boot=50)
    assert set(tab["group"]) == {"a", "tiny", "one-class"}  # nothing dropped
    assert (
        tab.loc[tab.group == "tiny", "small"].all() and not tab.loc[tab.group == "a", "small"].any()
    )
    oc = tab[tab.group == "one-class"].set_index("metric")
    assert np.isnan(oc.loc["auroc", "value"]) and "single outcome class" in oc.loc["auroc", "note"]
    assert np.isfinite(oc.loc["brier", "value"])


def test_risk_eval_input_errors() -> None:
    with pytest.raises(ValueError, match="only 0 and 1"):
        ev.auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        ev.brier_score([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match="shape"):
        ev.rmse([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="unknown metric"):
        ev.evaluate_binary([0, 1], [0.2, 0.8], metrics=["accuracy"])


def test_risk_eval_ici_large_n_interpolation_matches_exact_lowess() -> None:
    from statsmodels.nonparametric.smoothers_lowess import lowess

    rng = np.random.default_rng(4)
    p = rng.uniform(0.02, 0.9, 2500)
    y = (rng.random(p.size) < p**1.3).astype(float)
    exact = np.mean(np.abs(p - np.clip(lowess(y, p, frac=0.75, it=0, return_sorted=False), 0, 1)))
    assert ev.ici(y, p) == pytest.approx(exact, abs=1e-3)


def test_risk_eval_continuous_subgroups_and_shape_checks() -> None:
    rng = np.random.default_rng(8)
    y = rng.uniform(70, 250, 120)
    yhat = y + rng.normal(0, 10, 120)
    g = np.array(["cgm"] * 100 + ["meter"] * 20)
    tab = ev.subgroup_breakdown(y, yhat, g, kind="continuous", min_size=30, n_boot=50)
    assert set(tab["metric"]) == {"rmse", "mae", "mard"}
    meter = tab[(tab.group == "meter") & (tab.metric == "mae")].iloc[0]
    assert meter["small"] and meter["value"] == pytest.approx(
        mean_absolute_error(y[100:], yhat[100:])
    )
    with pytest.raises(ValueError, match="differ in length"):
        ev.subgroup_breakdown(y, yhat, g[:5], kind="continuous")
    with pytest.raises(ValueError, match="kind must be"):
        ev.subgroup_breakdown(y, yhat, g, kind="ordinal")
    with pytest.raises(ValueError, match="1-D"):
        ev.net_benefit(np.zeros((2, 3)), np.full((2, 3), 0.5), [0.2])
