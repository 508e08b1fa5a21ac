"""SDE integrators against analytic oracles: exact GBM on the same Brownian path, exact OU
moments, and estimated strong / weak convergence slopes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from healthtwin.models.base import OutOfRangeError
from healthtwin.models.sde import (
    SDEModel,
    brownian_increments,
    euler_maruyama,
    gbm_exact,
    gbm_model,
    milstein,
    ou_exact_moments,
    ou_model,
)

T_END = 1.0
FINE = 2**9  # finest grid: dt = 1/512 (time unit a)
LEVELS = (2**3, 2**4, 2**5, 2**6, 2**7)  # coarse grids (steps over [0, 1])


def _coarsen(dw: np.ndarray, n_steps: int) -> np.ndarray:
    """Sum fine increments into ``n_steps`` coarse ones: the same Brownian path."""
    return dw.reshape(dw.shape[0], n_steps, -1).sum(axis=2)


def _slope(dts: list[float], errs: list[float]) -> float:
    return float(np.polyfit(np.log(dts), np.log(errs), 1)[0])


def _gbm_errors(method: str, mu: float, sigma: float, n_paths: int) -> tuple[list, list, list]:
    rng = np.random.default_rng(11)
    dw = brownian_increments(n_paths, FINE, T_END / FINE, rng)
    exact = gbm_exact(1.0, mu, sigma, T_END, dw.sum(axis=1))
    drift = lambda h, x, t: mu * h  # noqa: E731
    diff = lambda h, x, t: sigma * h  # noqa: E731
    ddiff = lambda h, x, t: sigma  # noqa: E731
    dts, strong, weak = [], [], []
    for n in LEVELS:
        dt = T_END / n
        c = _coarsen(dw, n)
        if method == "euler":
            x = euler_maruyama(drift, diff, 1.0, c, dt)[:, -1]
        else:
            x = milstein(drift, diff, ddiff, 1.0, c, dt)[:, -1]
        dts.append(dt)
        strong.append(float(np.mean(np.abs(x - exact))))
        weak.append(float(abs(np.mean(x - exact))))
    return dts, strong, weak


def test_strong_order_gbm_euler_and_milstein() -> None:
    # 2,000 paths: the coefficient of variation of |error| is ~0.8, so each mean strong error has
    # a relative MC SE of ~0.8/sqrt(2000) = 1.8 %; over 4 octaves of dt that moves the fitted
    # slope by < 0.02. The +-0.12 band covers that (x5) plus pre-asymptotic curvature.
    dts, strong_em, _ = _gbm_errors("euler", 0.5, 0.8, 2000)
    _, strong_mil, _ = _gbm_errors("milstein", 0.5, 0.8, 2000)
    assert _slope(dts, strong_em) == pytest.approx(0.5, abs=0.12)
    assert _slope(dts, strong_mil) == pytest.approx(1.0, abs=0.12)
    assert strong_mil[-1] < strong_em[-1]


def test_weak_order_gbm_euler_against_analytic_mean() -> None:
    mu, sigma = 1.0, 0.5
    # Weak error of the mean, estimated with the path-coupled estimator mean(X_dt - X_exact):
    # its SD is the strong error (~0.4 sqrt(dt)), so with 20,000 paths the SE is < 0.003 sqrt(dt),
    # far below the bias ~1.36 dt on these grids. Oracle: E[X_EM] = (1 + mu dt)^N exactly.
    dts, _, weak = _gbm_errors("euler", mu, sigma, 20000)
    assert _slope(dts, weak) == pytest.approx(1.0, abs=0.15)
    exact_bias = [abs((1 + mu * dt) ** round(1 / dt) - np.exp(mu)) for dt in dts]
    np.testing.assert_allclose(weak, exact_bias, rtol=0.1)


def test_ou_moments_match_exact() -> None:
    theta, mu, sigma, h0 = 1.5, 2.0, 0.7, -1.0
    m = ou_model(theta, mu, sigma, dt=1e-3, unit="mg/dL", time_unit="d")
    paths = m.simulate(h0, 2.0, n_paths=20000, record_every=500, seed=3)
    t = m.times(2.0, record_every=500)
    mean, var = ou_exact_moments(h0, theta, mu, sigma, t)
    n = paths.shape[0]
    # Tolerances: 4 MC standard errors (mean SE = sd/sqrt(n); variance SE ~ var sqrt(2/(n-1)));
    # the Euler bias of the variance at dt = 1e-3 is ~theta dt / 2 = 0.08 %, negligible.
    se_mean = np.sqrt(var[1:] / n)
    assert np.all(np.abs(paths[:, 1:].mean(axis=0) - mean[1:]) < 4 * se_mean)
    se_var = var[1:] * np.sqrt(2 / (n - 1))
    assert np.all(np.abs(paths[:, 1:].var(axis=0, ddof=1) - var[1:]) < 4 * se_var)


def test_ou_orders_against_fine_reference() -> None:
    theta, mu, sigma, h0 = 2.0, 0.0, 0.5, 2.0
    rng = np.random.default_rng(5)
    n_paths = 4000
    dw = brownian_increments(n_paths, FINE, T_END / FINE, rng)
    drift = lambda h, x, t: theta * (mu - h)  # noqa: E731
    diff = lambda h, x, t: sigma  # noqa: E731
    ref = euler_maruyama(drift, diff, h0, dw, T_END / FINE)[:, -1]
    dts, strong, weak = [], [], []
    for n in LEVELS[:-1]:
        x = euler_maruyama(drift, diff, h0, _coarsen(dw, n), T_END / n)[:, -1]
        dts.append(T_END / n)
        strong.append(float(np.mean(np.abs(x - ref))))
        weak.append(float(abs(np.mean(x**2 - ref**2))))
    # Additive noise: Euler = Milstein, strong order 1; weak order 1 (second moment). The
    # coupled estimators have relative MC SE < 2 % at 4,000 paths (see GBM test reasoning).
    assert _slope(dts, strong) == pytest.approx(1.0, abs=0.15)
    assert _slope(dts, weak) == pytest.approx(1.0, abs=0.2)


def test_quantile_bands_match_lognormal_quantiles() -> None:
    mu, sigma = 0.1, 0.3
    m = gbm_model(mu, sigma, method="milstein", dt=1e-2, unit="mg/dL", time_unit="a")
    bands = m.quantile_bands(100.0, 1.0, n_paths=20000, record_every=50, seed=7)
    assert bands.label == "simulated" and bands.unit == "mg/dL"
    q = bands.quantiles
    z = stats.norm.ppf(q)
    exact_q = 100.0 * np.exp((mu - 0.5 * sigma**2) + sigma * z)
    # SE of a sample quantile = sqrt(q(1-q)/n) / density at the quantile; 5 SE tolerance.
    dens = stats.lognorm.pdf(exact_q, s=sigma, scale=100.0 * np.exp(mu - 0.5 * sigma**2))
    se = np.sqrt(q * (1 - q) / bands.n_paths) / dens
    assert np.all(np.abs(bands.values[:, -1] - exact_q) < 5 * se)
    assert abs(bands.mean[-1] - 100.0 * np.exp(mu)) < 5 * bands.mean_se[-1]
    d = bands.as_dict()
    assert d["label"] == "simulated"


@settings(max_examples=30, deadline=None)
@given(
    mu=st.floats(-2.0, 2.0),
    n=st.integers(1, 200),
    h0=st.floats(0.1, 100.0),
)
def test_zero_noise_euler_is_exact_recursion(mu: float, n: int, h0: float) -> None:
    m = gbm_model(mu, 0.0, dt=1.0 / n)
    path = m.simulate(h0, 1.0, n_paths=3, seed=0)
    expected = h0 * (1 + mu / n) ** np.arange(n + 1)
    np.testing.assert_allclose(path, np.broadcast_to(expected, path.shape), rtol=1e-10)


def test_seeded_reproducible_and_covariates() -> None:
    x = np.array([0.0, 1.0, 2.0])
    m = SDEModel(
        drift=lambda h, x, t: -h + x,
        diffusion=lambda h, x, t: 0.1,
        dt=0.01,
        unit="mmol/L",
        time_unit="h",
    ).fit()
    a = m.simulate(np.zeros(3), 5.0, x=x, seed=42)
    b = m.simulate(np.zeros(3), 5.0, x=x, seed=42)
    np.testing.assert_array_equal(a, b)
    # the covariate shifts the long-run mean to x (within the stationary SD 0.1/sqrt(2) x 5)
    assert np.all(np.abs(a[:, -1] - x) < 0.36)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(OutOfRangeError, match="h0"):
        gbm_model(0.1, 0.2).simulate(-1.0, 1.0, n_paths=2)
    with pytest.raises(ValueError, match="whole number of steps"):
        gbm_model(0.1, 0.2, dt=0.3).simulate(1.0, 1.0, n_paths=2)
    with pytest.raises(ValueError, match="milstein"):
        SDEModel(lambda h, x, t: h, lambda h, x, t: h, method="milstein").fit()
    with pytest.raises(ValueError, match="n_paths"):
        gbm_model(0.1, 0.2).simulate(1.0, 1.0)
    with pytest.raises(ValueError, match="dw has shape"):
        gbm_model(0.1, 0.2, dt=0.5).simulate(1.0, 1.0, n_paths=2, dw=np.zeros((2, 3)))
