"""Trajectory ODEs: closed-form solution and an independent integrator (scipy solve_ivp) as
oracles; parameter recovery and interval coverage over repeated simulations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from healthtwin.models.base import OutOfRangeError
from healthtwin.models.trajectory import LinearTrajectoryODE, TrajectoryODE, linear_solution

ALPHA, BETA, GAMMA, SIGMA = -0.3, 1.5, 4.0, 2.0  # /a, mg/dL/(a.unit X), mg/dL/a, mg/dL


def _panel(n: int, m: int, seed: int) -> tuple[np.ndarray, ...]:
    """Irregular visit times, a constant covariate, a treatment switched on at a random visit."""
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.uniform(0.2, 1.5, size=(n, m)), axis=1)  # a
    h0 = rng.normal(120.0, 10.0, n)  # mg/dL
    x = rng.normal(0.0, 1.0, n)
    start = rng.integers(0, m, n)
    tr = (np.arange(m)[None, :] >= start[:, None]).astype(float)
    return times, h0, x, tr


def _truth(times: np.ndarray, h0: np.ndarray, x: np.ndarray, tr: np.ndarray) -> np.ndarray:
    u = BETA * x[:, None] - GAMMA * tr
    return linear_solution(ALPHA, h0, times, u)


@settings(max_examples=40, deadline=None)
@given(
    alpha=st.floats(-2.0, 1.0),
    u=st.floats(-10.0, 10.0),
    h0=st.floats(-50.0, 50.0),
    t=st.floats(0.01, 5.0),
)
def test_linear_solution_matches_closed_form(alpha: float, u: float, h0: float, t: float) -> None:
    got = linear_solution(alpha, [h0], [[t]], [[u]])[0, 0]
    if abs(alpha) < 1e-12:
        exact = h0 + u * t
    else:
        # expm1, not exp(.) - 1: the oracle itself must not lose digits for tiny alpha
        exact = np.exp(alpha * t) * h0 + u / alpha * np.expm1(alpha * t)
    assert got == pytest.approx(exact, rel=1e-9, abs=1e-9)


def test_piecewise_inputs_match_solve_ivp() -> None:
    times = np.array([[0.5, 1.2, 2.0, 3.7]])
    u = np.array([[1.0, -2.0, 0.5, 3.0]])
    got = linear_solution(-0.4, [10.0], times, u)[0]
    edges = np.concatenate([[0.0], times[0]])

    def rhs(t: float, h: np.ndarray) -> np.ndarray:
        j = min(np.searchsorted(edges, t, side="left") - 1, 3)
        return -0.4 * h + u[0, max(j, 0)]

    h, ref = np.array([10.0]), []
    for j in range(4):
        sol = solve_ivp(rhs, (edges[j], edges[j + 1]), h, rtol=1e-11, atol=1e-12)
        h = sol.y[:, -1]
        ref.append(h[0])
    np.testing.assert_allclose(got, ref, rtol=1e-8)


def test_fit_recovers_parameters_within_intervals() -> None:
    times, h0, x, tr = _panel(400, 6, seed=1)
    rng = np.random.default_rng(2)
    y = _truth(times, h0, x, tr) + rng.normal(0, SIGMA, times.shape)
    y[rng.random(y.shape) < 0.2] = np.nan  # missed visits
    m = LinearTrajectoryODE(unit="mg/dL", time_unit="a").fit(times, y, h0, X=x, T=tr)
    tab = m.summary_.table
    truth = {"alpha": ALPHA, "beta_0": BETA, "gamma": GAMMA, "sigma": SIGMA}
    for name, val in truth.items():
        # 4 SE: a single fit, not a coverage claim (coverage is tested below)
        assert abs(tab.loc[name, "estimate"] - val) < 4 * tab.loc[name, "se"], name
    est, lo, hi = m.predict_interval(times[:3], h0[:3], X=x[:3], T=tr[:3])
    assert np.all(lo <= est) and np.all(est <= hi)
    _, plo, phi = m.predict_interval(times[:3], h0[:3], X=x[:3], T=tr[:3], include_noise=True)
    # a new measurement's interval is at least 2 z sigma wide; 400 draws estimate the tail
    # quantiles to a few per cent, hence the 0.85 factor
    assert np.all(phi - plo > 0.85 * 2 * 1.96 * SIGMA)


def test_interval_coverage_over_repeated_simulations() -> None:
    # 80 replications x 4 parameters at nominal 95 %: the binomial SE of the coverage per
    # parameter is sqrt(.95 .05 / 80) = 2.4 %, so we require >= 85 % (4 SE below nominal).
    reps = 80
    names = ["alpha", "beta_0", "gamma", "sigma"]
    truth = np.array([ALPHA, BETA, GAMMA, SIGMA])
    hits = np.zeros(4)
    for r in range(reps):
        times, h0, x, tr = _panel(120, 5, seed=1000 + r)
        rng = np.random.default_rng(5000 + r)
        y = _truth(times, h0, x, tr) + rng.normal(0, SIGMA, times.shape)
        tab = LinearTrajectoryODE().fit(times, y, h0, X=x, T=tr).summary_.table.loc[names]
        hits += ((tab.ci_low.to_numpy() <= truth) & (tab.ci_high.to_numpy() >= truth)).astype(float)
    assert np.all(hits / reps >= 0.85), dict(zip(names, hits / reps, strict=True))


def test_general_ode_with_linear_f_agrees_with_linear_model() -> None:
    times, h0, x, tr = _panel(150, 5, seed=3)
    rng = np.random.default_rng(4)
    y = _truth(times, h0, x, tr) + rng.normal(0, SIGMA, times.shape)
    lin = LinearTrajectoryODE().fit(times, y, h0, X=x, T=tr)

    def f(h, inp, th, t):  # type: ignore[no-untyped-def]
        return th[0] * h + th[1] * inp["X"] - th[2] * inp["T"]

    gen = TrajectoryODE(f, ["alpha", "beta", "gamma"], [0.0, 0.0, 0.0], n_substeps=8)
    gen.fit(times, y, h0, inputs={"X": x, "T": tr})
    np.testing.assert_allclose(gen.theta_, lin.theta_[:3], atol=2e-3)
    assert gen.sigma_ == pytest.approx(lin.sigma_, rel=1e-3)
    np.testing.assert_allclose(
        gen.summary_.table["se"].to_numpy(), lin.summary_.table["se"].to_numpy(), rtol=0.05
    )
    # RK4 (8 substeps of <= 0.19 a, |alpha h| < 0.06) vs the closed form: the global error
    # ~ (alpha h)^4 H / 120 is < 1e-5 mg/dL here
    np.testing.assert_allclose(
        gen.predict(times, h0, {"X": x, "T": tr}, theta=[ALPHA, BETA, GAMMA]),
        _truth(times, h0, x, tr),
        rtol=0,
        atol=1e-5,
    )


def test_general_nonlinear_ode_recovers_parameters() -> None:
    # logistic recovery towards a set point K under treatment effect: dH/dt = r H (1 - H/K) - g T
    def f(h, inp, th, t):  # type: ignore[no-untyped-def]
        return th[0] * h * (1 - h / th[1]) - th[2] * inp["T"]

    rng = np.random.default_rng(8)
    n, m = 200, 6
    times = np.cumsum(rng.uniform(0.3, 1.0, (n, m)), axis=1)
    h0 = rng.uniform(10, 40, n)
    tr = (rng.random((n, m)) < 0.5).astype(float)
    model = TrajectoryODE(f, ["r", "K", "g"], [0.5, 80.0, 1.0], unit="mg/dL", lower=0.0)
    truth = np.array([0.8, 100.0, 3.0])
    y = model.simulate(times, h0, {"T": tr}, theta=truth, sigma=1.5, seed=9)
    model.fit(times, y, h0, inputs={"T": tr})
    tab = model.summary_.table
    for name, val in zip(["r", "K", "g", "sigma"], [*truth, 1.5], strict=True):
        assert abs(tab.loc[name, "estimate"] - val) < 4 * tab.loc[name, "se"], name


def test_bad_inputs_are_named() -> None:
    times, h0, x, tr = _panel(5, 3, seed=0)
    y = _truth(times, h0, x, tr)
    m = LinearTrajectoryODE()
    with pytest.raises(ValueError, match="strictly increasing"):
        m.fit(times[:, ::-1], y, h0)
    with pytest.raises(ValueError, match="h0 must have shape"):
        m.fit(times, y, h0[:2])
    with pytest.raises(ValueError, match=r"times\[0, 0\]"):
        m.fit(times - 100, y, h0)
    with pytest.raises(ValueError, match="X must be"):
        m.fit(times, y, h0, X=np.ones((5, 3, 2, 1)))
    with pytest.raises(ValueError, match="no finite"):
        m.fit(times, np.full_like(y, np.nan), h0)
    fitted = m.fit(times, y + 0.01 * np.arange(3), h0, X=x, T=tr)
    with pytest.raises(ValueError, match="T is required"):
        fitted.predict(times, h0, X=x)

    def f(h, inp, th, t):  # type: ignore[no-untyped-def]
        return th[0] * h

    g = TrajectoryODE(f, ["r"], [1.0], unit="mg/dL", lower=0.0, upper=200.0)
    with pytest.raises(OutOfRangeError, match="predicted H"):
        g.predict(np.array([[1.0, 5.0]]), [100.0], theta=[1.0])


def test_profile_interval_for_alpha_agrees_with_wald_and_chi2() -> None:
    times, h0, x, tr = _panel(300, 6, seed=21)
    rng = np.random.default_rng(22)
    y = _truth(times, h0, x, tr) + rng.normal(0, SIGMA, times.shape)
    m = LinearTrajectoryODE().fit(times, y, h0, X=x, T=tr)
    lo, hi = m.profile_interval_alpha()
    tab = m.summary_.table.loc["alpha"]
    assert lo < m.alpha_ < hi
    # with 1,800 observations the likelihood is near-quadratic: profile ~ Wald (5 % of width)
    width = tab.ci_high - tab.ci_low
    assert abs(lo - tab.ci_low) < 0.05 * width and abs(hi - tab.ci_high) < 0.05 * width
    # at each end the likelihood-ratio statistic equals the chi-square(1) 95 % point
    t_, ya, h, xx, trr = m._data_
    best = m._profile(m.alpha_, t_, ya, h, xx, trr)[0]
    for end in (lo, hi):
        lr = 2 * (m._profile(end, t_, ya, h, xx, trr)[0] - best)
        assert lr == pytest.approx(3.841458820694124, rel=1e-6)
