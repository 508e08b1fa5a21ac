"""LogisticRiskModel against statsmodels (Logit and GLM) and Monte Carlo coverage."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer

from healthtwin.models.base import OutOfRangeError
from healthtwin.models.risk import LogisticRiskModel


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    cols = [
        list(data.feature_names).index(c)
        for c in ("mean radius", "mean texture", "mean smoothness")
    ]
    X = data.data[:, cols]
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X, data.target.astype(float)


def test_risk_logistic_equals_statsmodels_logit(cancer: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = cancer
    ours = LogisticRiskModel().fit(X, y)
    ref = sm.Logit(y, sm.add_constant(X)).fit(disp=0)
    np.testing.assert_allclose(ours.params_, ref.params, rtol=1e-7)
    np.testing.assert_allclose(ours.bse_, ref.bse, rtol=1e-6)
    np.testing.assert_allclose(ours.conf_int_, ref.conf_int(alpha=0.05), rtol=1e-6)
    np.testing.assert_allclose(ours.pvalues_, ref.pvalues, rtol=1e-5, atol=1e-300)
    assert ours.loglik_ == pytest.approx(ref.llf, rel=1e-10)
    np.testing.assert_allclose(
        ours.predict_proba(X)[:, 1], ref.predict(sm.add_constant(X)), rtol=1e-8
    )


def test_risk_logistic_prediction_interval_equals_glm_delta_method(
    cancer: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = cancer
    ours = LogisticRiskModel(alpha=0.1).fit(X, y)
    glm = sm.GLM(y, sm.add_constant(X), family=sm.families.Binomial()).fit()
    # statsmodels GLM builds the interval on the linear (logit) scale and maps it through the link.
    frame = glm.get_prediction(sm.add_constant(X[:50])).summary_frame(alpha=0.1)
    pi = ours.predict_interval(X[:50])
    np.testing.assert_allclose(pi[:, 0], frame["mean"], rtol=1e-7)
    np.testing.assert_allclose(pi[:, 1], frame["mean_ci_lower"], rtol=1e-6)
    np.testing.assert_allclose(pi[:, 2], frame["mean_ci_upper"], rtol=1e-6)
    assert np.all((pi[:, 1] <= pi[:, 0]) & (pi[:, 0] <= pi[:, 2]))


def test_risk_logistic_without_intercept_equals_statsmodels() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 2))
    y = (rng.random(300) < 1 / (1 + np.exp(-(X @ [1.0, -0.5])))).astype(float)
    ours = LogisticRiskModel(fit_intercept=False).fit(X, y)
    ref = sm.Logit(y, X).fit(disp=0)
    np.testing.assert_allclose(ours.coef_, ref.params, rtol=1e-7)
    assert ours.intercept_ == 0.0


def test_risk_logistic_wald_interval_coverage_monte_carlo() -> None:
    # 400 replicate data sets (n=300, true slope 0.8). Coverage of the 95 % Wald interval has
    # Monte Carlo SE sqrt(0.95*0.05/400) = 0.011; we allow 4.5 SE (0.05).
    rng = np.random.default_rng(20261123)
    reps, n, beta = 400, 300, np.array([-0.5, 0.8])
    X = rng.normal(size=(reps, n))
    p = 1 / (1 + np.exp(-(beta[0] + beta[1] * X)))
    Y = (rng.random((reps, n)) < p).astype(float)
    covered = [
        (lambda ci: ci[1, 0] <= beta[1] <= ci[1, 1])(LogisticRiskModel().fit(X[r], Y[r]).conf_int_)
        for r in range(reps)
    ]
    assert abs(np.mean(covered) - 0.95) < 0.05


def test_risk_logistic_refuses_extrapolation(cancer: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = cancer
    m = LogisticRiskModel(feature_names=["radius", "texture", "smoothness"]).fit(X, y)
    far = X[:2].copy()
    far[1, 1] = X[:, 1].max() + 1
    with pytest.raises(OutOfRangeError, match="texture"):
        m.predict_proba(far)
    assert m.set_params(allow_extrapolation=True).predict_proba(far).shape == (2, 2)


def test_risk_logistic_input_errors() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 2))
    with pytest.raises(ValueError, match="only 0 and 1"):
        LogisticRiskModel().fit(X, np.full(50, 2.0))
    with pytest.raises(ValueError, match="single class"):
        LogisticRiskModel().fit(X, np.zeros(50))
    with pytest.raises(ValueError, match="separation"):
        LogisticRiskModel().fit(X, (X[:, 0] > 0).astype(float))
    with pytest.raises(ValueError, match="rank deficient|separation"):
        LogisticRiskModel().fit(
            np.column_stack([X[:, 0], X[:, 0]]), (rng.random(50) < 0.5).astype(float)
        )
    with pytest.raises(ValueError, match="non-finite"):
        LogisticRiskModel().fit(np.where(X > 2, np.nan, X), (rng.random(50) < 0.5).astype(float))


def test_risk_logistic_follows_sklearn_conventions(cancer: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = cancer
    m = LogisticRiskModel(alpha=0.01)
    c = clone(m)
    assert c.get_params()["alpha"] == 0.01
    assert c.fit(X, y) is c
    assert set(c.predict(X)) <= {0, 1}
    rows = c.summary()
    assert (
        rows[0]["name"] == "intercept" and rows[0]["lower"] < rows[0]["estimate"] < rows[0]["upper"]
    )
