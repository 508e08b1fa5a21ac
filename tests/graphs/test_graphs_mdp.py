"""Treatment MDPs against pymdptoolbox (same test), analytic values and a known small MDP."""

from __future__ import annotations

import mdptoolbox.example
import mdptoolbox.mdp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthtwin.models.mdp import (
    FittedQIteration,
    TreatmentMDP,
    expected_reward,
    finite_horizon,
    policy_evaluation,
    policy_iteration,
    value_iteration,
)


def _vi_ref(
    P: np.ndarray, R: np.ndarray, gamma: float, eps: float
) -> mdptoolbox.mdp.ValueIteration:
    vi = mdptoolbox.mdp.ValueIteration(P, R, gamma, epsilon=eps)
    vi.run()
    return vi


@pytest.mark.parametrize(("S", "gamma"), [(3, 0.9), (3, 0.96), (10, 0.96), (25, 0.8)])
def test_forest_value_and_policy_iteration_equal_pymdptoolbox(S: int, gamma: float) -> None:
    P, R = mdptoolbox.example.forest(S=S)
    eps = 1e-4
    # same algorithm as pymdptoolbox (span rule + Puterman's iteration bound): identical result
    ours = value_iteration(P, R, gamma, epsilon=eps, iteration_bound=True)
    ref = _vi_ref(P, R, gamma, eps)
    assert tuple(ours.policy) == ref.policy
    assert ours.n_iter == ref.iter
    np.testing.assert_allclose(ours.V, ref.V, rtol=1e-12)
    pi_ref = mdptoolbox.mdp.PolicyIteration(P, R, gamma)
    pi_ref.run()
    pi = policy_iteration(P, R, gamma)
    assert tuple(pi.policy) == pi_ref.policy
    np.testing.assert_allclose(pi.V, pi_ref.V, rtol=1e-10)
    # value iteration: eps-optimal greedy policy; V* inside the MacQueen-Porteus bounds (Puterman
    # Thm 6.6.3), whose width is < eps by the stopping rule
    full = value_iteration(P, R, gamma, epsilon=eps)
    _check_bounds(full, pi.V, eps)
    np.testing.assert_array_equal(full.policy, pi.policy)


def _check_bounds(sol: object, v_star: np.ndarray, eps: float) -> None:
    lo, hi = sol.V_lower, sol.V_upper  # type: ignore[attr-defined]
    tol = 1e-9 * (1 + np.abs(v_star))
    assert np.all(lo <= v_star + tol)
    assert np.all(v_star <= hi + tol)
    assert np.all(hi - lo < eps)


def test_forest_published_values_from_pymdptoolbox_docs() -> None:
    # values printed in pymdptoolbox's docstrings (ValueIteration, PolicyIteration, FiniteHorizon)
    P, R = mdptoolbox.example.forest()
    vi = value_iteration(P, R, 0.96, iteration_bound=True)
    np.testing.assert_allclose(vi.V, [5.93215488, 9.38815488, 13.38815488], atol=1e-8)
    assert list(vi.policy) == [0, 0, 0]
    assert vi.n_iter == 4
    pi = policy_iteration(P, R, 0.9)
    np.testing.assert_allclose(pi.V, [26.244, 29.484, 33.484], atol=1e-12)
    assert list(pi.policy) == [0, 0, 0]
    fh = finite_horizon(P, R, 0.9, 3)
    np.testing.assert_allclose(
        fh.V,
        [[2.6973, 0.81, 0.0, 0.0], [5.9373, 3.24, 1.0, 0.0], [9.9373, 7.24, 4.0, 0.0]],
        atol=5e-5,  # printed to 4 decimals
    )
    P2 = np.array([[[0.5, 0.5], [0.8, 0.2]], [[0, 1], [0.1, 0.9]]])
    R2 = np.array([[5, 10], [-1, 2]])
    vi2 = value_iteration(P2, R2, 0.9, iteration_bound=True)
    np.testing.assert_allclose(vi2.V, [40.048625392716815, 33.65371175967546], rtol=1e-12)
    assert list(vi2.policy) == [1, 0]
    assert vi2.n_iter == 26


@pytest.mark.parametrize("N", [1, 4, 10])
def test_finite_horizon_equals_pymdptoolbox(N: int) -> None:
    P, R = mdptoolbox.example.forest(S=5)
    h = np.linspace(0.0, 3.0, 5)
    ours = finite_horizon(P, R, 0.95, N, terminal=h)
    ref = mdptoolbox.mdp.FiniteHorizon(P, R, 0.95, N, h=h)
    ref.run()
    np.testing.assert_allclose(ours.V, ref.V, rtol=1e-12)
    np.testing.assert_array_equal(ours.policy, ref.policy)


def _random_mdp(seed: int, S: int, A: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(S), size=(A, S))
    R = rng.normal(size=(A, S, S))
    return P, R


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    S=st.integers(2, 12),
    A=st.integers(1, 4),
    gamma=st.floats(0.3, 0.97),
)
def test_random_mdps_equal_pymdptoolbox(seed: int, S: int, A: int, gamma: float) -> None:
    P, R = _random_mdp(seed, S, A)
    pi_ref = mdptoolbox.mdp.PolicyIteration(P, R, gamma)
    pi_ref.run()
    pi = policy_iteration(P, R, gamma)
    np.testing.assert_allclose(pi.V, pi_ref.V, rtol=1e-9, atol=1e-9)
    # policies may differ only where two actions tie in value
    q = pi.Q
    s = np.arange(S)
    np.testing.assert_allclose(q[s, pi.policy], q[s, np.asarray(pi_ref.policy)], atol=1e-9)
    eps = 1e-6
    vi = value_iteration(P, R, gamma, epsilon=eps, iteration_bound=True)
    vi_ref = _vi_ref(P, R, gamma, eps)
    assert vi.n_iter == vi_ref.iter
    np.testing.assert_allclose(vi.V, vi_ref.V, rtol=1e-9, atol=1e-12)
    _check_bounds(value_iteration(P, R, gamma, epsilon=eps), pi.V, eps)
    # finite horizon (backward induction) against pymdptoolbox on the same random MDP
    fh = finite_horizon(P, R, gamma, 5)
    fh_ref = mdptoolbox.mdp.FiniteHorizon(P, R, gamma, 5)
    fh_ref.run()
    np.testing.assert_allclose(fh.V, fh_ref.V, rtol=1e-10, atol=1e-12)
    # policy evaluation of the optimal policy reproduces V*
    np.testing.assert_allclose(
        policy_evaluation(P, R, gamma, pi.policy), pi.V, rtol=1e-9, atol=1e-9
    )


def test_policy_evaluation_two_state_closed_form() -> None:
    # one action, P = [[1-p, p], [q, 1-q]]; closed form V = (I - g P)^-1 r computed by hand
    p, q, g = 0.2, 0.4, 0.9
    P = np.array([[[1 - p, p], [q, 1 - q]]])
    r = np.array([1.0, 0.0])
    det = (1 - g * (1 - p)) * (1 - g * (1 - q)) - g * p * g * q
    v0 = (1 - g * (1 - q)) / det
    v1 = g * q / det
    np.testing.assert_allclose(policy_evaluation(P, r, g, np.array([0, 0])), [v0, v1], rtol=1e-12)


def test_reward_shapes_and_safety_mask() -> None:
    P, R = mdptoolbox.example.forest(S=4)
    r_ass = np.broadcast_to(R.T[:, :, None], (2, 4, 4))
    np.testing.assert_allclose(expected_reward(P, r_ass), R)
    # forbid "cut" (action 1) everywhere except the oldest state: the policy must respect it
    allowed = np.ones((4, 2), dtype=bool)
    allowed[:3, 1] = False
    for sol in (
        value_iteration(P, R, 0.9, allowed=allowed, epsilon=1e-8),
        policy_iteration(P, R, 0.9, allowed=allowed),
    ):
        assert np.all(allowed[np.arange(4), sol.policy])
    # oracle: the constrained optimum equals the unconstrained optimum of the MDP with
    # the forbidden action replaced by a copy of the allowed one
    P2, R2 = P.copy(), R.copy()
    P2[1, :3] = P[0, :3]
    R2[:3, 1] = R[:3, 0]
    ref = mdptoolbox.mdp.PolicyIteration(P2, R2, 0.9)
    ref.run()
    np.testing.assert_allclose(policy_iteration(P, R, 0.9, allowed=allowed).V, ref.V, rtol=1e-10)


def test_treatment_mdp_simulation_mean_return_matches_value() -> None:
    P, R = mdptoolbox.example.forest(S=3)
    g = 0.5
    model = TreatmentMDP(gamma=g).fit(P, R)
    n, T = 20_000, 40  # truncation error g^T * max|R| / (1-g) is < 1e-11
    sim = model.simulate(np.zeros(n, dtype=int), T, seed=4)
    assert sim["simulated"] is True
    ret = sim["discounted_return"]
    se = ret.std(ddof=1) / np.sqrt(n)
    assert abs(ret.mean() - model.V_[0]) < 5 * se  # 5 Monte Carlo standard errors
    np.testing.assert_array_equal(model.predict([0, 1, 2]), model.policy_)


# ---- fitted Q-iteration -------------------------------------------------------------------


def _chain_mdp() -> tuple[np.ndarray, np.ndarray]:
    """5-state disease ladder, actions 0=watch, 1=treat, 2=aggressive; reward = health - cost."""
    S = 5
    P = np.zeros((3, S, S))
    for s in range(S):
        P[0, s, min(s + 1, S - 1)] += 0.7  # watchful waiting: tends to progress
        P[0, s, s] += 0.3
        P[1, s, max(s - 1, 0)] += 0.6  # treatment: tends to improve
        P[1, s, s] += 0.4
        P[2, s, 0] += 0.9  # aggressive therapy: cure, but expensive
        P[2, s, s] += 0.1
    health = np.array([1.0, 0.8, 0.5, 0.2, 0.0])
    cost = np.array([0.0, 0.15, 0.9])
    R = health[:, None] - cost[None, :]
    return P, R


def _log(P: np.ndarray, R: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    S, A = P.shape[1], P.shape[0]
    s = rng.integers(0, S, n)
    a = rng.integers(0, A, n)  # uniform random behaviour policy
    cum = np.cumsum(P[a, s, :], axis=1)
    s2 = (cum < rng.random(n)[:, None]).sum(axis=1)
    return s[:, None].astype(float), a, R[s, a], s2[:, None].astype(float)


def test_fitted_q_iteration_recovers_optimal_policy() -> None:
    P, R = _chain_mdp()
    g = 0.8
    opt = policy_iteration(P, R, g)
    s, a, r, s2 = _log(P, R, 3000, seed=0)
    fqi = FittedQIteration(n_actions=3, gamma=g, n_iterations=25, random_state=0).fit(s, a, r, s2)
    states = np.arange(5, dtype=float)[:, None]
    np.testing.assert_array_equal(fqi.predict(states), opt.policy)
    lo, hi = fqi.predict_q_interval(states)
    assert np.all(lo <= hi)


def test_fitted_q_iteration_never_picks_a_disallowed_action() -> None:
    P, R = _chain_mdp()
    g = 0.8

    def rule(states: np.ndarray) -> np.ndarray:
        # clinical rule: aggressive therapy only in the two sickest states
        m = np.ones((states.shape[0], 3), dtype=bool)
        m[:, 2] = states[:, 0] >= 3
        return m

    states = np.arange(5, dtype=float)[:, None]
    allowed = rule(states)
    opt = policy_iteration(P, R, g, allowed=allowed)
    s, a, r, s2 = _log(P, R, 3000, seed=1)
    fqi = FittedQIteration(3, gamma=g, n_iterations=25, allowed_actions=rule).fit(s, a, r, s2)
    pol = fqi.predict(states)
    assert np.all(allowed[np.arange(5), pol])
    np.testing.assert_array_equal(pol, opt.policy)
    # on many random patient states the rule is never violated
    many = np.random.default_rng(2).integers(0, 5, 500)[:, None].astype(float)
    assert np.all(rule(many)[np.arange(500), fqi.predict(many)])
    assert np.all(np.isneginf(fqi.predict_q(states)[~allowed]))


def test_bad_inputs_raise_clear_errors() -> None:
    P, R = mdptoolbox.example.forest()
    with pytest.raises(ValueError, match="gamma = 1.5"):
        value_iteration(P, R, 1.5)
    bad = P.copy()
    bad[0, 1, 1] += 0.2
    with pytest.raises(ValueError, match=r"P\[0, 1, :\] sums to"):
        policy_iteration(bad, R, 0.9)
    with pytest.raises(ValueError, match=r"R: shape \(2,\)"):
        value_iteration(P, np.zeros(2), 0.9)
    with pytest.raises(ValueError, match="state 0 has no permitted action"):
        value_iteration(P, R, 0.9, allowed=np.zeros((3, 2), dtype=bool))
    with pytest.raises(ValueError, match="actions: must be integers"):
        FittedQIteration(2).fit([[0.0]], [5], [1.0], [[0.0]])


def test_fitted_q_iteration_refuses_states_outside_the_logged_range() -> None:
    from healthtwin.models.base import OutOfRangeError

    P, R = _chain_mdp()
    s, a, r, s2 = _log(P, R, 300, seed=3)
    fqi = FittedQIteration(3, gamma=0.5, n_iterations=3, state_unit="1").fit(s, a, r, s2)
    with pytest.raises(OutOfRangeError, match=r"states\[:, 0\] = 7 1 is outside the valid range"):
        fqi.predict([[7.0]])
    assert fqi.predict([[7.0]], allow_extrapolation=True).shape == (1,)


def test_models_follow_the_scikit_learn_estimator_contract() -> None:
    from sklearn.base import clone

    from healthtwin.models.bayesnet import DiscreteBayesianNetwork, LinearGaussianBayesianNetwork

    for est in (
        TreatmentMDP(gamma=0.7, method="value_iteration"),
        FittedQIteration(3, gamma=0.6, n_iterations=4),
        DiscreteBayesianNetwork([("a", "b")], estimator="bdeu", equivalent_sample_size=3.0),
        LinearGaussianBayesianNetwork([("a", "b")], std_estimator="mle"),
    ):
        twin = clone(est)
        assert twin.get_params() == est.get_params()
    P, R = mdptoolbox.example.forest()
    model = TreatmentMDP(gamma=0.9)
    assert model.fit(P, R) is model
