"""Treatment Markov decision processes: exact dynamic programming and offline fitted Q-iteration.

Why our own implementation rather than a wrapper around pymdptoolbox
--------------------------------------------------------------------
pymdptoolbox is the reference (every solver here is tested against it in the same test), but it
is unmaintained (4.0b3, 2015), loops over actions in Python, returns tuples, has no notion of a
clinical safety rule and no offline (batch) reinforcement learning. The dynamic programming is
a few vectorised lines of NumPy (``einsum`` over the A x S x S tensor), so we own it, add an
action mask ``allowed`` (S x A) to every solver, and return arrays. Fitted Q-iteration uses a
scikit-learn regressor (ExtraTrees by default) as the Q function, as the issue asks.

Mathematics
-----------
States ``s = 0..S-1``, actions ``a = 0..A-1``, transitions ``P[a, s, s'] = P(s' | s, a)``,
expected rewards ``R(s, a)`` (given as S x A, as A x S x S with ``R(s,a) = sum_s' P R``, or as a
state reward S), discount ``gamma`` in [0, 1). The Bellman optimality operator is

    (T V)(s) = max_{a allowed in s} [ R(s, a) + gamma sum_s' P(s'|s,a) V(s') ].

* Value iteration applies T from V = 0 until ``span(V_k - V_{k-1}) < eps (1 - gamma) / gamma``,
  which guarantees an eps-optimal greedy policy (Puterman 1994, section 6.6). ``V_k`` itself can
  still be far from V* (a constant offset); V* lies between the MacQueen-Porteus bounds
  ``V_k + gamma/(1-gamma) [min, max](V_k - V_{k-1})``, an interval narrower than eps.
* Policy iteration alternates exact evaluation ``V = (I - gamma P_pi)^-1 R_pi`` and greedy
  improvement until the policy is stable (exact optimum in finitely many steps).
* Finite-horizon backward induction: ``V_N = h``, ``V_n = T V_{n+1}`` for n = N-1..0; the
  policy is non-stationary (S x N).
* Fitted Q-iteration (Ernst et al. 2005): from logged transitions (s, a, r, s', done), repeat
  ``Q_{k+1} = fit((s, a) -> r + gamma (1 - done) max_{a' allowed in s'} Q_k(s', a'))``. The
  safety rule restricts both the max and the final arg-max, so a disallowed action is never
  chosen.

Units: rewards are in the caller's unit (e.g. QALY "a" per decision epoch, or "1" for a
utility); values are the same unit (discounted sums). Decision epochs are dimensionless steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from healthtwin.models.base import TwinModel, check_range

__all__ = [
    "MDPSolution",
    "FiniteHorizonSolution",
    "expected_reward",
    "bellman_q",
    "value_iteration",
    "policy_iteration",
    "policy_evaluation",
    "finite_horizon",
    "TreatmentMDP",
    "FittedQIteration",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class MDPSolution:
    """Value ``V`` (S,), greedy ``policy`` (S,), ``Q`` (S, A), iteration count, and bounds.

    ``V_lower`` <= V* <= ``V_upper`` (S,) bracket the optimal value: exact (equal to ``V``) for
    policy iteration; for value iteration the MacQueen-Porteus bounds
    ``V_k + gamma/(1-gamma) [min, max](V_k - V_{k-1})`` (Puterman 1994, Thm 6.6.3).
    """

    V: FloatArray
    policy: IntArray
    Q: FloatArray
    n_iter: int
    V_lower: FloatArray
    V_upper: FloatArray


@dataclass(frozen=True)
class FiniteHorizonSolution:
    """``V`` (S, N+1) with ``V[:, N] = h``; non-stationary ``policy`` (S, N)."""

    V: FloatArray
    policy: IntArray


def _check_p(P: ArrayLike) -> FloatArray:
    p = np.asarray(P, dtype=float)
    if p.ndim != 3 or p.shape[1] != p.shape[2]:
        raise ValueError(f"P: shape {p.shape}; expected (A, S, S) with P[a, s, s'] = P(s'|s,a)")
    if np.any(p < 0) or np.any(p > 1):
        a, s, t = np.argwhere((p < 0) | (p > 1))[0]
        raise ValueError(f"P[{a}, {s}, {t}] = {p[a, s, t]}: probabilities must lie in [0, 1]")
    rows = p.sum(axis=2)
    bad = np.abs(rows - 1.0) > 1e-8
    if np.any(bad):
        a, s = np.argwhere(bad)[0]
        raise ValueError(f"P[{a}, {s}, :] sums to {rows[a, s]:.10g}; each row must sum to 1")
    return p


def _check_gamma(gamma: float, *, allow_one: bool = False) -> float:
    g = float(gamma)
    ok = 0.0 <= g <= 1.0 if allow_one else 0.0 <= g < 1.0
    if not ok:
        rng = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"gamma = {g}: the discount factor must lie in {rng}")
    return g


def expected_reward(P: ArrayLike, R: ArrayLike) -> FloatArray:
    """Expected one-step reward R(s, a), shape (S, A), from R given as (S,), (S, A) or (A, S, S)."""
    p = _check_p(P)
    n_a, n_s, _ = p.shape
    r = np.asarray(R, dtype=float)
    if not np.all(np.isfinite(r)):
        raise ValueError("R: rewards must be finite")
    if r.shape == (n_s,):
        return np.repeat(r[:, None], n_a, axis=1)
    if r.shape == (n_s, n_a):
        return r.copy()
    if r.shape == (n_a, n_s, n_s):
        return np.einsum("ast,ast->sa", p, r)
    raise ValueError(
        f"R: shape {r.shape}; expected (S,)=({n_s},), (S, A)=({n_s}, {n_a}) or "
        f"(A, S, S)=({n_a}, {n_s}, {n_s})"
    )


def _check_allowed(allowed: ArrayLike | None, n_s: int, n_a: int) -> BoolArray:
    if allowed is None:
        return np.ones((n_s, n_a), dtype=bool)
    m = np.asarray(allowed, dtype=bool)
    if m.shape != (n_s, n_a):
        raise ValueError(f"allowed: shape {m.shape}; expected (S, A) = ({n_s}, {n_a})")
    empty = ~m.any(axis=1)
    if np.any(empty):
        raise ValueError(
            f"allowed: state {int(np.flatnonzero(empty)[0])} has no permitted action; "
            "every state needs at least one"
        )
    return m


def bellman_q(P: FloatArray, r_sa: FloatArray, gamma: float, V: FloatArray) -> FloatArray:
    """Q(s, a) = R(s, a) + gamma sum_s' P(s'|s,a) V(s'), shape (S, A)."""
    n_a, n_s, _ = P.shape
    return r_sa + gamma * (P.reshape(n_a * n_s, n_s) @ V).reshape(n_a, n_s).T


def _greedy(q: FloatArray, mask: BoolArray) -> tuple[IntArray, FloatArray]:
    qm = np.where(mask, q, -np.inf)
    pol = qm.argmax(axis=1)
    return pol.astype(np.int64), qm[np.arange(q.shape[0]), pol]


def value_iteration(
    P: ArrayLike,
    R: ArrayLike,
    gamma: float,
    *,
    epsilon: float = 0.01,
    max_iter: int = 10_000,
    allowed: ArrayLike | None = None,
    V0: ArrayLike | None = None,
    iteration_bound: bool = False,
) -> MDPSolution:
    """Value iteration from ``V0`` (default 0) to an ``epsilon``-optimal policy (span rule).

    With ``iteration_bound=True`` the iteration count is also capped by Puterman's a-priori
    bound ``ceil(log(thresh / span(V_1 - V_0)) / log(gamma k))`` with
    ``k = 1 - sum_s' min_{a,s} P(s'|s,a)`` (pymdptoolbox's default behaviour). The bound can stop
    well before the span rule fires (pymdptoolbox's forest example stops after 4 iterations), so
    it is off by default.
    """
    p = _check_p(P)
    g = _check_gamma(gamma)
    if epsilon <= 0:
        raise ValueError(f"epsilon = {epsilon}: must be > 0")
    r = expected_reward(p, R)
    mask = _check_allowed(allowed, p.shape[1], p.shape[0])
    v = np.zeros(p.shape[1]) if V0 is None else np.asarray(V0, dtype=float).copy()
    thresh = epsilon * (1 - g) / g if g > 0 else epsilon
    it = 0
    q = bellman_q(p, r, g, v)
    pol, v_new = _greedy(q, mask)
    if iteration_bound and g > 0:
        k = 1.0 - p.min(axis=(0, 1)).sum()
        diff0 = v_new - v
        span0 = diff0.max() - diff0.min()
        if span0 > 0 and g * k > 0:
            bound = int(np.ceil(np.log(thresh / span0) / np.log(g * k)))
            max_iter = max(1, min(max_iter, bound))
    diff = np.zeros_like(v)
    for it in range(1, max_iter + 1):  # noqa: B007 - reported
        q = bellman_q(p, r, g, v)
        pol, v_new = _greedy(q, mask)
        diff = v_new - v
        v = v_new
        if diff.max() - diff.min() < thresh:
            break
    c = g / (1 - g)
    return MDPSolution(
        V=v,
        policy=pol,
        Q=q,
        n_iter=it,
        V_lower=v + c * diff.min(),
        V_upper=v + c * diff.max(),
    )


def policy_evaluation(P: ArrayLike, R: ArrayLike, gamma: float, policy: ArrayLike) -> FloatArray:
    """Exact value of a stationary policy: V = (I - gamma P_pi)^-1 R_pi, shape (S,)."""
    p = _check_p(P)
    g = _check_gamma(gamma)
    r = expected_reward(p, R)
    n_s = p.shape[1]
    pol = np.asarray(policy)
    if pol.shape != (n_s,) or not np.issubdtype(pol.dtype, np.integer):
        raise ValueError(f"policy: need integer actions of shape ({n_s},), got {pol.shape}")
    if np.any((pol < 0) | (pol >= p.shape[0])):
        raise ValueError(f"policy: actions must lie in [0, {p.shape[0] - 1}]")
    s = np.arange(n_s)
    p_pi = p[pol, s, :]
    r_pi = r[s, pol]
    return np.asarray(np.linalg.solve(np.eye(n_s) - g * p_pi, r_pi), dtype=float)


def policy_iteration(
    P: ArrayLike,
    R: ArrayLike,
    gamma: float,
    *,
    policy0: ArrayLike | None = None,
    max_iter: int = 1000,
    allowed: ArrayLike | None = None,
) -> MDPSolution:
    """Howard's policy iteration with exact (linear-solve) evaluation."""
    p = _check_p(P)
    g = _check_gamma(gamma)
    r = expected_reward(p, R)
    mask = _check_allowed(allowed, p.shape[1], p.shape[0])
    if policy0 is None:
        pol, _ = _greedy(r, mask)  # one-step greedy start (V = 0)
    else:
        pol = np.asarray(policy0, dtype=np.int64)
        if np.any(~mask[np.arange(p.shape[1]), pol]):
            raise ValueError("policy0: chooses an action that `allowed` forbids")
    it = 0
    v = policy_evaluation(p, r, g, pol)
    q = bellman_q(p, r, g, v)
    for it in range(1, max_iter + 1):  # noqa: B007 - reported
        v = policy_evaluation(p, r, g, pol)
        q = bellman_q(p, r, g, v)
        new, _ = _greedy(q, mask)
        # keep the current action on ties (prevents cycling between equal-valued policies)
        cur = q[np.arange(p.shape[1]), pol]
        best = q[np.arange(p.shape[1]), new]
        new = np.where(best > cur + 1e-12 * (1 + np.abs(cur)), new, pol)
        if np.array_equal(new, pol):
            break
        pol = new
    return MDPSolution(V=v, policy=pol, Q=q, n_iter=it, V_lower=v, V_upper=v)


def finite_horizon(
    P: ArrayLike,
    R: ArrayLike,
    gamma: float,
    horizon: int,
    *,
    terminal: ArrayLike | None = None,
    allowed: ArrayLike | None = None,
) -> FiniteHorizonSolution:
    """Backward induction over ``horizon`` decision epochs with terminal reward ``terminal``."""
    p = _check_p(P)
    g = _check_gamma(gamma, allow_one=True)
    if int(horizon) < 1:
        raise ValueError(f"horizon = {horizon}: need at least one decision epoch")
    r = expected_reward(p, R)
    n_s = p.shape[1]
    mask = _check_allowed(allowed, n_s, p.shape[0])
    v = np.zeros((n_s, horizon + 1))
    if terminal is not None:
        h = np.asarray(terminal, dtype=float)
        if h.shape != (n_s,):
            raise ValueError(f"terminal: shape {h.shape}; expected ({n_s},)")
        v[:, horizon] = h
    pol = np.zeros((n_s, horizon), dtype=np.int64)
    for n in range(horizon - 1, -1, -1):
        pol[:, n], v[:, n] = _greedy(bellman_q(p, r, g, v[:, n + 1]), mask)
    return FiniteHorizonSolution(V=v, policy=pol)


class TreatmentMDP(TwinModel):
    """A treatment MDP solved by dynamic programming, with optional clinical action mask.

    Parameters
    ----------
    gamma : discount factor per decision epoch (unit "1").
    method : "value_iteration" or "policy_iteration".
    epsilon : value-iteration tolerance (reward unit).
    max_iter : iteration cap.
    reward_unit : UCUM unit of the rewards and values (e.g. "a" for QALYs per epoch).

    ``fit(P, R, allowed=None)`` learns ``V_`` (S,), ``policy_`` (S,), ``Q_`` (S, A), ``n_iter_``.
    """

    def __init__(
        self,
        gamma: float = 0.95,
        method: Literal["value_iteration", "policy_iteration"] = "policy_iteration",
        epsilon: float = 0.01,
        max_iter: int = 10_000,
        reward_unit: str = "1",
    ) -> None:
        self.reward_unit = reward_unit
        self.gamma = gamma
        self.method = method
        self.epsilon = epsilon
        self.max_iter = max_iter

    def fit(self, P: ArrayLike, R: ArrayLike, allowed: ArrayLike | None = None) -> TreatmentMDP:
        """Solve the MDP (P: A x S x S, R: S, S x A or A x S x S)."""
        if self.method == "value_iteration":
            sol = value_iteration(
                P, R, self.gamma, epsilon=self.epsilon, max_iter=self.max_iter, allowed=allowed
            )
        elif self.method == "policy_iteration":
            sol = policy_iteration(P, R, self.gamma, max_iter=self.max_iter, allowed=allowed)
        else:
            raise ValueError(
                f"method = {self.method!r}: must be 'value_iteration' or 'policy_iteration'"
            )
        self.P_ = _check_p(P)
        self.R_ = expected_reward(self.P_, R)
        self.V_, self.policy_, self.Q_, self.n_iter_ = sol.V, sol.policy, sol.Q, sol.n_iter
        return self

    def predict(self, states: ArrayLike) -> IntArray:
        """Recommended action for each patient's state, shape (n,)."""
        self._require_fitted("policy_")
        s = np.asarray(states, dtype=np.int64)
        n_s = self.policy_.shape[0]
        if np.any((s < 0) | (s >= n_s)):
            raise ValueError(f"states: must be integers in [0, {n_s - 1}]")
        return self.policy_[s]

    def simulate(
        self,
        initial_states: ArrayLike,
        n_steps: int,
        seed: int | np.random.Generator | None = None,
        policy: ArrayLike | None = None,
    ) -> dict[str, Any]:
        """Simulated patient trajectories under the fitted (or a given) policy.

        Returns {"states": (n, n_steps+1), "actions": (n, n_steps), "rewards": (n, n_steps),
        "discounted_return": (n,), "simulated": True}; rewards in the reward unit. Vectorised
        over patients (inverse-CDF sampling on the transition rows).
        """
        self._require_fitted("policy_")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        pol = self.policy_ if policy is None else np.asarray(policy, dtype=np.int64)
        s = np.atleast_1d(np.asarray(initial_states)).astype(np.int64)
        n_s = self.policy_.shape[0]
        if s.ndim != 1 or np.any((s < 0) | (s >= n_s)):
            raise ValueError(f"initial_states: need integer states in [0, {n_s - 1}], shape (n,)")
        if int(n_steps) < 1:
            raise ValueError(f"n_steps = {n_steps}: must be >= 1")
        n = s.shape[0]
        states = np.zeros((n, n_steps + 1), dtype=np.int64)
        actions = np.zeros((n, n_steps), dtype=np.int64)
        rewards = np.zeros((n, n_steps))
        states[:, 0] = s
        cum = np.cumsum(self.P_, axis=2)
        for t in range(n_steps):
            a = pol[s]
            actions[:, t] = a
            rewards[:, t] = self.R_[s, a]
            u: FloatArray = np.asarray(rng.random(n), dtype=float)
            nxt = (cum[a, s, :] < u[:, None]).sum(axis=1)
            s = np.minimum(nxt, self.P_.shape[1] - 1).astype(np.int64)
            states[:, t + 1] = s
        disc = self.gamma ** np.arange(n_steps)
        return {
            "states": states,
            "actions": actions,
            "rewards": rewards,
            "discounted_return": rewards @ disc,
            "reward_unit": self.reward_unit,
            "simulated": True,
        }


AllowedRule = Callable[[FloatArray], ArrayLike]


class FittedQIteration(TwinModel):
    """Offline fitted Q-iteration with an optional clinical safety rule.

    Parameters
    ----------
    n_actions : number of discrete actions A.
    gamma : discount factor (unit "1").
    n_iterations : number of Q-iterations K (the effective planning horizon).
    regressor : scikit-learn regressor factory; default ``ExtraTreesRegressor(n_estimators=50,
        min_samples_leaf=2)``. One regressor is fitted on features [state, one-hot(action)].
    allowed_actions : optional callable ``states (n, d) -> bool mask (n, A)`` (the clinical rule);
        the max in the Bellman target and the recommended action only range over permitted actions.
    random_state : seed for the default regressor.
    state_unit, reward_unit : UCUM units of the state features and of the rewards / Q values.

    Learned attributes: ``regressor_`` (the final Q function), ``n_features_in_``,
    ``state_min_`` / ``state_max_`` (the logged state range, outside which prediction refuses
    to extrapolate by default).
    """

    def __init__(
        self,
        n_actions: int,
        gamma: float = 0.9,
        n_iterations: int = 30,
        regressor: Any = None,
        allowed_actions: AllowedRule | None = None,
        random_state: int | None = 0,
        state_unit: str = "1",
        reward_unit: str = "1",
    ) -> None:
        self.state_unit = state_unit
        self.reward_unit = reward_unit
        self.n_actions = n_actions
        self.gamma = gamma
        self.n_iterations = n_iterations
        self.regressor = regressor
        self.allowed_actions = allowed_actions
        self.random_state = random_state

    def _new_regressor(self) -> Any:
        from sklearn.base import clone
        from sklearn.ensemble import ExtraTreesRegressor

        if self.regressor is None:
            return ExtraTreesRegressor(
                n_estimators=50, min_samples_leaf=2, random_state=self.random_state, n_jobs=1
            )
        return clone(self.regressor)

    def _features(self, states: FloatArray, actions: IntArray) -> FloatArray:
        onehot = np.eye(self.n_actions)[actions]
        return np.hstack([states, onehot])

    def _mask(self, states: FloatArray) -> BoolArray:
        n = states.shape[0]
        if self.allowed_actions is None:
            return np.ones((n, self.n_actions), dtype=bool)
        m = np.asarray(self.allowed_actions(states), dtype=bool)
        if m.shape != (n, self.n_actions):
            raise ValueError(
                f"allowed_actions: returned shape {m.shape}; expected (n, A) = ({n}, {self.n_actions})"
            )
        empty = ~m.any(axis=1)
        if np.any(empty):
            raise ValueError(
                f"allowed_actions: no permitted action for state row {int(np.flatnonzero(empty)[0])}"
            )
        return m

    def _q_all(self, reg: Any, states: FloatArray) -> FloatArray:
        n = states.shape[0]
        feats = np.vstack(
            [self._features(states, np.full(n, a, dtype=np.int64)) for a in range(self.n_actions)]
        )
        return np.asarray(reg.predict(feats), dtype=float).reshape(self.n_actions, n).T

    @staticmethod
    def _as_states(x: ArrayLike, name: str) -> FloatArray:
        a = np.asarray(x, dtype=float)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2 or not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: need finite states of shape (n, d)")
        return a

    def fit(
        self,
        states: ArrayLike,
        actions: ArrayLike,
        rewards: ArrayLike,
        next_states: ArrayLike,
        terminal: ArrayLike | None = None,
    ) -> FittedQIteration:
        """Fit Q from logged transitions (s, a, r, s', done); rows are logged decisions."""
        s = self._as_states(states, "states")
        s2 = self._as_states(next_states, "next_states")
        a = np.asarray(actions)
        r = np.asarray(rewards, dtype=float)
        n = s.shape[0]
        if s2.shape != s.shape or a.shape != (n,) or r.shape != (n,):
            raise ValueError(
                f"states {s.shape}, actions {a.shape}, rewards {r.shape}, next_states {s2.shape}: "
                "need (n, d), (n,), (n,), (n, d) with the same n"
            )
        if not np.issubdtype(a.dtype, np.integer) or np.any((a < 0) | (a >= self.n_actions)):
            raise ValueError(f"actions: must be integers in [0, {self.n_actions - 1}]")
        done = np.zeros(n, dtype=bool) if terminal is None else np.asarray(terminal, dtype=bool)
        g = _check_gamma(self.gamma)
        if int(self.n_iterations) < 1:
            raise ValueError(f"n_iterations = {self.n_iterations}: must be >= 1")
        a = a.astype(np.int64)
        x = self._features(s, a)
        mask_next = self._mask(s2)
        target = r.copy()
        reg = self._new_regressor().fit(x, target)
        for _ in range(int(self.n_iterations) - 1):
            q_next = np.where(mask_next, self._q_all(reg, s2), -np.inf).max(axis=1)
            target = r + g * np.where(done, 0.0, q_next)
            reg = self._new_regressor().fit(x, target)
        self.regressor_ = reg
        self.n_features_in_ = s.shape[1]
        both = np.vstack([s, s2])
        self.state_min_ = both.min(axis=0)
        self.state_max_ = both.max(axis=0)
        return self

    def _checked_states(self, states: ArrayLike, allow_extrapolation: bool) -> FloatArray:
        self._require_fitted("regressor_")
        s = self._as_states(states, "states")
        if s.shape[1] != self.n_features_in_:
            raise ValueError(
                f"states: {s.shape[1]} features, the model was fitted on {self.n_features_in_}"
            )
        for j in range(s.shape[1]):
            check_range(
                f"states[:, {j}]",
                s[:, j],
                float(self.state_min_[j]),
                float(self.state_max_[j]),
                self.state_unit,
                allow_extrapolation=allow_extrapolation,
            )
        return s

    def predict_q(self, states: ArrayLike, *, allow_extrapolation: bool = False) -> FloatArray:
        """Estimated Q(s, a), shape (n, A) (reward unit); disallowed actions are -inf.

        States outside the range seen in the logged data raise ``OutOfRangeError`` unless
        ``allow_extrapolation=True`` (tree ensembles extrapolate as a constant).
        """
        s = self._checked_states(states, allow_extrapolation)
        return np.where(self._mask(s), self._q_all(self.regressor_, s), -np.inf)

    def predict_q_interval(
        self, states: ArrayLike, level: float = 0.9, *, allow_extrapolation: bool = False
    ) -> tuple[FloatArray, FloatArray]:
        """Spread of Q(s, a) across the ensemble's trees: (low, high), each (n, A).

        An ensemble-spread interval (not a frequentist confidence interval); requires a
        regressor with ``estimators_`` (forests). Disallowed actions are -inf.
        """
        s = self._checked_states(states, allow_extrapolation)
        trees = getattr(self.regressor_, "estimators_", None)
        if trees is None:
            raise ValueError("regressor: has no estimators_; intervals need a tree ensemble")
        per_tree = np.stack([self._q_all(t, s) for t in trees])
        lo = np.quantile(per_tree, (1 - level) / 2, axis=0)
        hi = np.quantile(per_tree, (1 + level) / 2, axis=0)
        m = self._mask(s)
        return np.where(m, lo, -np.inf), np.where(m, hi, -np.inf)

    def predict(self, states: ArrayLike, *, allow_extrapolation: bool = False) -> IntArray:
        """Greedy permitted action per patient state, shape (n,)."""
        q = self.predict_q(states, allow_extrapolation=allow_extrapolation)
        return q.argmax(axis=1).astype(np.int64)
