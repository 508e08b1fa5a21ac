"""Markov progression: published Sick-Sicker results, analytic oracles (matrix powers,
fundamental matrix, closed-form MLE), an independent optimiser for the gap likelihood, and
Monte Carlo checks of the microsimulation with tolerances from the MC standard error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

from healthtwin.models.markov import (
    CovariateMarkovModel,
    MarkovCohortModel,
    MarkovTransitionEstimator,
    absorbing_states,
    calculate_icers,
    cohort_trace,
    discount_weights,
    expected_stay_length,
    expected_time_to_absorption,
    fundamental_matrix,
    microsimulate,
    prob_to_rate,
    rate_to_prob,
    sick_sicker_strategies,
    validate_transition,
    within_cycle_weights,
)

# The three-state example of the Vallée viewpoint (seed 004): healthy, predisease, disease.
T_SEED = np.array([[0.90, 0.08, 0.02], [0.10, 0.75, 0.15], [0.00, 0.10, 0.90]])
# An absorbing chain used for sojourn checks: well, ill, dead.
T_ABS = np.array([[0.85, 0.10, 0.05], [0.20, 0.60, 0.20], [0.0, 0.0, 1.0]])


def test_seed_example_trace_equals_matrix_powers() -> None:
    p0 = np.array([0.95, 0.04, 0.01])
    tr = cohort_trace(p0, T_SEED, 20)
    for t in (1, 5, 20):
        np.testing.assert_allclose(tr[t], p0 @ np.linalg.matrix_power(T_SEED, t), atol=1e-14)
    # long run: the stationary distribution (left eigenvector for eigenvalue 1)
    w, v = np.linalg.eig(T_SEED.T)
    pi = np.real(v[:, np.argmin(np.abs(w - 1))])
    pi /= pi.sum()
    np.testing.assert_allclose(cohort_trace(p0, T_SEED, 2000)[-1], pi, atol=1e-10)


def test_sick_sicker_reproduces_published_table() -> None:
    """Alarid-Escudero et al., Med Decis Making 2023;43(1):3-20 (PMC9742144, arXiv 2001.07824),
    Tables 'Total expected discounted QALYs and costs' and 'Cost-effectiveness analysis
    results': costs to the dollar, QALYs to 0.001, ICERs to the dollar."""
    published = {  # strategy: (cost USD, QALYs)
        "Standard of care": (151_580, 20.711),
        "Strategy A": (284_805, 21.499),
        "Strategy B": (259_100, 22.184),
        "Strategy AB": (378_875, 23.137),
    }
    costs, qalys = [], []
    for name, spec in sick_sicker_strategies().items():
        res = MarkovCohortModel(
            spec["transition"],
            state_costs=spec["costs"],
            state_utilities=spec["utilities"],
            discount_cost=0.03,
            discount_effect=0.03,
            wcc="darth-simpson",
        ).evaluate([1, 0, 0, 0], 75)
        assert round(res.total_cost) == published[name][0]
        assert round(res.total_qaly, 3) == pytest.approx(published[name][1], abs=1e-9)
        costs.append(res.total_cost)
        qalys.append(res.total_qaly)
    cea = calculate_icers(costs, qalys, list(sick_sicker_strategies())).set_index("strategy")
    assert list(cea.index) == ["Standard of care", "Strategy B", "Strategy AB", "Strategy A"]
    assert round(cea.loc["Strategy B", "inc_cost"]) == 107_521
    assert round(cea.loc["Strategy B", "inc_effect"], 3) == pytest.approx(1.473)
    assert round(cea.loc["Strategy B", "icer"]) == 72_988
    assert round(cea.loc["Strategy AB", "inc_cost"]) == 119_775
    assert round(cea.loc["Strategy AB", "inc_effect"], 3) == pytest.approx(0.952)
    assert round(cea.loc["Strategy AB", "icer"]) == 125_764
    assert cea.loc["Strategy A", "status"] == "D"


def test_icers_extended_dominance() -> None:
    # B lies above the line from A to C: extendedly dominated; D strongly dominated by C.
    df = calculate_icers([0, 50, 60, 80], [0, 0.2, 1.0, 0.9], ["A", "B", "C", "D"])
    st_ = dict(zip(df.strategy, df.status, strict=True))
    assert st_ == {"A": "ND", "B": "ED", "C": "ND", "D": "D"}
    assert df.set_index("strategy").loc["C", "icer"] == pytest.approx(60.0)


def test_wcc_and_discount_weights() -> None:
    np.testing.assert_allclose(within_cycle_weights(4, "simpson"), [1, 4, 2, 4, 1] / np.array(3))
    np.testing.assert_allclose(within_cycle_weights(3, "half-cycle"), [0.5, 1, 1, 0.5])
    # Simpson integrates a cubic exactly over [0, n]
    t = np.arange(11.0)
    f = 2 * t**3 - t + 1
    assert within_cycle_weights(10, "simpson") @ f == pytest.approx(2 * 10**4 / 4 - 50 + 10)
    np.testing.assert_allclose(discount_weights(0.03, 2), [1, 1 / 1.03, 1 / 1.03**2])
    with pytest.raises(ValueError, match="even"):
        within_cycle_weights(3, "simpson")


def test_fundamental_matrix_and_sojourn() -> None:
    n, tt = fundamental_matrix(T_ABS)
    assert tt.tolist() == [0, 1]
    q = T_ABS[:2, :2]
    # N = sum_k Q^k (Neumann series) as the independent oracle
    series = sum(np.linalg.matrix_power(q, k) for k in range(400))
    np.testing.assert_allclose(n, series, rtol=1e-10)
    np.testing.assert_allclose(expected_stay_length(T_ABS)[:2], [1 / 0.15, 1 / 0.4])
    assert absorbing_states(T_ABS).tolist() == [2]
    with pytest.raises(ValueError, match="no absorbing"):
        fundamental_matrix(T_SEED)


def test_microsim_matches_cohort_and_sojourn() -> None:
    n_ind, n_cyc = 40_000, 30
    res = microsimulate(np.zeros(n_ind, dtype=np.int64), T_ABS, n_cyc, seed=1)
    assert res.label == "simulated"
    exact = cohort_trace([1, 0, 0], T_ABS, n_cyc)
    # binomial SE per state and cycle; 5 SE covers the ~90 comparisons (family-wise)
    se = np.sqrt(exact * (1 - exact) / n_ind) + 1e-12
    assert np.all(np.abs(res.trace() - exact) <= 5 * se + 1e-12)
    # mean time to absorption vs N 1 (400 cycles: every individual is absorbed)
    est, _ = expected_time_to_absorption(T_ABS)
    long = microsimulate(np.zeros(20_000, dtype=np.int64), T_ABS, 400, seed=2)
    tta = long.time_to_absorption
    assert not np.any(np.isnan(tta))
    assert abs(tta.mean() - est[0]) < 5 * tta.std(ddof=1) / np.sqrt(tta.size)


def test_microsim_rewards_match_cohort_expectation() -> None:
    spec = sick_sicker_strategies()["Strategy AB"]
    cohort = MarkovCohortModel(
        spec["transition"],
        state_costs=spec["costs"],
        state_utilities=spec["utilities"],
        wcc="half-cycle",
    ).evaluate([1, 0, 0, 0], 75)
    sim = microsimulate(
        np.zeros(20_000, dtype=np.int64),
        spec["transition"],
        75,
        seed=4,
        state_costs=spec["costs"],
        state_utilities=spec["utilities"],
        discount_cost=0.03,
        discount_effect=0.03,
        wcc="half-cycle",
    )
    for what, exact in (("cost", cohort.total_cost), ("qaly", cohort.total_qaly)):
        m, lo, hi = sim.mean_with_ci(what, level=0.999)  # 3.3 SE: a sound MC tolerance
        assert lo <= exact <= hi, (what, m, exact)


def test_time_dependent_transitions() -> None:
    # age-dependent mortality: T(t) differs each cycle; microsim and cohort must agree
    n_cyc = 20
    mort = rate_to_prob(0.01 * np.exp(0.1 * np.arange(n_cyc)))
    tr = np.zeros((n_cyc, 2, 2))
    tr[:, 0, 0], tr[:, 0, 1], tr[:, 1, 1] = 1 - mort, mort, 1.0
    trace = cohort_trace([1, 0], tr, n_cyc)
    np.testing.assert_allclose(trace[:, 0], np.concatenate([[1], np.cumprod(1 - mort)]))
    sim = microsimulate(np.zeros(30_000, dtype=np.int64), tr, n_cyc, seed=9)
    se = np.sqrt(trace[:, 0] * (1 - trace[:, 0]) / 30_000) + 1e-12
    assert np.all(np.abs(sim.trace()[:, 0] - trace[:, 0]) <= 5 * se)


def _simulate_panel(t: np.ndarray, n: int, m: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    init = rng.integers(0, t.shape[0] - 1, size=n)
    return microsimulate(init, t, m - 1, seed=rng, record_states=True).states.astype(np.int64)


def test_estimator_complete_data_is_closed_form() -> None:
    seq = _simulate_panel(T_SEED, 300, 12, seed=0)
    est = MarkovTransitionEstimator(3).fit(seq)
    counts = np.zeros((3, 3))
    np.add.at(counts, (seq[:, :-1].ravel(), seq[:, 1:].ravel()), 1)
    np.testing.assert_allclose(est.transition_, counts / counts.sum(1, keepdims=True))
    assert np.all(est.ci_low_ <= est.transition_ + 1e-12)
    assert np.all(est.transition_ <= est.ci_high_ + 1e-12)


def test_estimator_with_gaps_and_censoring_maximises_matrix_power_likelihood() -> None:
    rng = np.random.default_rng(3)
    seq = _simulate_panel(T_SEED, 400, 10, seed=1)
    seq[rng.random(seq.shape) < 0.3] = -1  # missing visits
    drop = rng.integers(4, 11, size=seq.shape[0])  # right-censoring (drop-out)
    seq[np.arange(10)[None, :] >= drop[:, None]] = -1
    est = MarkovTransitionEstimator(3).fit(seq)
    # independent oracle: direct numerical maximisation over softmax-parametrised rows
    from healthtwin.models.markov import _gap_triples

    a, b, k = _gap_triples(seq)

    def nll(theta: np.ndarray) -> float:
        z = np.column_stack([np.zeros(3), theta.reshape(3, 2)])
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        total = 0.0
        for kk in np.unique(k):
            pk = np.linalg.matrix_power(p, int(kk))
            total -= np.log(pk[a[k == kk], b[k == kk]]).sum()
        return total

    opt = optimize.minimize(nll, np.zeros(6), method="BFGS", options={"gtol": 1e-8})
    assert -opt.fun == pytest.approx(est.loglik_, abs=1e-4)
    z = np.column_stack([np.zeros(3), opt.x.reshape(3, 2)])
    p_opt = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(est.transition_, p_opt, atol=2e-3)


def test_estimator_interval_coverage() -> None:
    # 60 replications x 9 cells; nominal 95 %. The binomial SE of the coverage is
    # sqrt(.95 .05 / 540) = 0.94 %, so coverage below 0.90 (> 5 SE) would be a real failure.
    hits, total = 0, 0
    for r in range(60):
        seq = _simulate_panel(T_SEED, 80, 6, seed=100 + r)
        est = MarkovTransitionEstimator(3).fit(seq)
        hits += int(np.sum((est.ci_low_ <= T_SEED) & (est.ci_high_ >= T_SEED)))
        total += 9
    assert hits / total >= 0.90


def test_absorbing_mask_and_sojourn_interval() -> None:
    seq = _simulate_panel(T_ABS, 500, 8, seed=7)
    mask = np.array([[1, 1, 1], [1, 1, 1], [0, 0, 1]], dtype=bool)
    est = MarkovTransitionEstimator(3, allowed=mask).fit(seq)
    assert est.transition_[2].tolist() == [0.0, 0.0, 1.0]
    m, lo, hi, tt = est.time_to_absorption_interval(n_draws=500)
    truth, _ = expected_time_to_absorption(T_ABS)
    assert np.all(lo <= m) and np.all(m <= hi)
    assert np.all((lo - 0.1 * truth <= truth) & (truth <= hi + 0.1 * truth))


def test_covariate_dependent_transitions_recover_coefficients() -> None:
    # age-dependent progression from healthy (0) to ill (1): logit = -2 + 0.05 (age - 50);
    # ill -> dead (2) with logit = -2 + 0.04 (age - 50) against staying ill.
    rng = np.random.default_rng(12)
    n = 6000
    age = rng.uniform(30, 80, n)
    frm = rng.integers(0, 2, n)
    lin0 = -2.0 + 0.05 * (age - 50)
    lin1 = -2.0 + 0.04 * (age - 50)
    p_move = np.where(frm == 0, 1 / (1 + np.exp(-lin0)), 1 / (1 + np.exp(-lin1)))
    move = rng.random(n) < p_move
    to = np.where(move, frm + 1, frm)
    model = CovariateMarkovModel(3).fit(frm, to, age - 50)
    # within 4 SE of the true slopes (asymptotic normal MLE)
    for i, slope in ((0, 0.05), (1, 0.04)):
        assert abs(model.params_[i][1, 0] - slope) < 4 * model.bse_[i][1, 0]
    tm = model.predict_transition_matrix(np.array([-20.0, 0.0, 25.0]))
    np.testing.assert_allclose(tm.sum(-1)[:, :2], 1.0)
    lo, hi = model.transition_interval(np.array([0.0]), n_draws=200)
    true01 = 1 / (1 + np.exp(2.0))
    assert lo[0, 0, 1] <= true01 <= hi[0, 0, 1]
    # drive a microsimulation with the age-dependent rows (age advances one year per cycle)
    ages = np.full(1000, -10.0)
    sim = microsimulate(
        np.zeros(1000, dtype=np.int64),
        lambda t, s: model.predict_proba(s, ages + t),
        10,
        seed=0,
    )
    assert sim.counts.sum(axis=1).tolist() == [1000] * 11


@settings(max_examples=25, deadline=None)
@given(r=st.floats(0.0, 5.0), t=st.floats(0.1, 3.0))
def test_rate_probability_round_trip(r: float, t: float) -> None:
    assert prob_to_rate(rate_to_prob(r, t), t) == pytest.approx(r, rel=1e-9, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), s=st.integers(2, 6))
def test_trace_rows_stay_probability_vectors(seed: int, s: int) -> None:
    rng = np.random.default_rng(seed)
    t = rng.dirichlet(np.ones(s), size=s)
    tr = cohort_trace(np.eye(s)[0], t, 15)
    np.testing.assert_allclose(tr.sum(1), 1.0, atol=1e-12)
    assert np.all(tr >= 0)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match=r"row \[1\] of T sums"):
        validate_transition([[1.0, 0.0], [0.5, 0.6]])
    with pytest.raises(ValueError, match="not a probability"):
        validate_transition([[1.2, -0.2], [0.5, 0.5]])
    with pytest.raises(ValueError, match="p0"):
        cohort_trace([0.5, 0.6], T_SEED[:2, :2] / T_SEED[:2, :2].sum(1, keepdims=True), 3)
    with pytest.raises(ValueError, match="outside"):
        MarkovTransitionEstimator(2).fit(np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="not allowed"):
        MarkovTransitionEstimator(2, allowed=[[1, 1], [0, 1]]).fit(np.array([[1, 0]]))
    with pytest.raises(ValueError, match="rate"):
        rate_to_prob(-1.0)


def test_bootstrap_interval_with_missing_visits_covers_truth() -> None:
    rng = np.random.default_rng(31)
    seq = _simulate_panel(T_SEED, 300, 8, seed=30)
    seq[rng.random(seq.shape) < 0.4] = -1
    est = MarkovTransitionEstimator(3).fit(seq)
    lo, hi = est.bootstrap_interval(seq, n_boot=60, seed=1)
    assert np.all(lo <= est.transition_ + 1e-9) and np.all(est.transition_ <= hi + 1e-9)
    # one data set: each of the 9 cells is covered with ~95 %; allow one miss
    assert int(np.sum((lo <= T_SEED) & (hi >= T_SEED))) >= 8


@settings(max_examples=40, deadline=None)
@given(
    pts=st.lists(
        st.tuples(st.floats(0, 1e6), st.floats(0, 50)), min_size=1, max_size=8, unique=True
    )
)
def test_icer_frontier_properties(pts: list[tuple[float, float]]) -> None:
    costs = [p[0] for p in pts]
    effects = [p[1] for p in pts]
    df = calculate_icers(costs, effects, [f"s{i}" for i in range(len(pts))])
    nd = df[df.status == "ND"]
    # frontier: costs and effects strictly increase, ICERs non-decreasing
    assert np.all(np.diff(nd.cost.to_numpy()) >= 0)
    assert np.all(np.diff(nd.effect.to_numpy()) > 0)
    assert np.all(np.diff(nd.icer.to_numpy()[1:]) >= -1e-9 * np.abs(nd.icer.to_numpy()[2:]))
    # no frontier strategy is strongly dominated by any strategy
    for r in nd.itertuples():
        dominated = [
            (c <= r.cost and e >= r.effect and (c < r.cost or e > r.effect))
            for c, e in zip(costs, effects, strict=True)
        ]
        assert not any(dominated)
