"""Discrete-time Markov progression models: cohort traces, costs and QALYs, estimation,
covariate-dependent transitions and vectorised individual microsimulation.

Mathematics (row-vector convention of the Vallée viewpoint)::

    P(t+1) = P(t) T(t)                     cohort trace, T row-stochastic
    N = (I - Q)^-1                         fundamental matrix over transient states (Q = T_tt)
    E[cycles to absorption] = N 1          expected sojourn in the transient set
    E[length of one stay in i] = 1/(1-T_ii)
    total = sum_t  y_t d_t w_t              rewards y_t = P(t) r, discount d_t, within-cycle w_t

Units: time is counted in cycles of ``cycle_length`` (UCUM ``a`` by default); costs in a
currency (``USD`` by default; UCUM has no currency unit, so the ISO 4217 code is used); QALYs
in quality-adjusted years (``a``). Transition probabilities are per cycle (``1``).
Microsimulated outputs are labelled ``simulated``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from healthtwin.models.base import TwinModel

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
#: A per-cycle transition for microsimulation: ``f(cycle, states) -> (n, S)`` row probabilities.
TransitionFn = Callable[[int, IntArray], FloatArray]

__all__ = [
    "CohortResult",
    "CovariateMarkovModel",
    "MarkovCohortModel",
    "MarkovTransitionEstimator",
    "MicrosimResult",
    "absorbing_states",
    "calculate_icers",
    "cohort_trace",
    "discount_weights",
    "expected_stay_length",
    "expected_time_to_absorption",
    "fundamental_matrix",
    "microsimulate",
    "prob_to_rate",
    "rate_to_prob",
    "sick_sicker_strategies",
    "validate_transition",
    "within_cycle_weights",
]


# --------------------------------------------------------------------------- basics
def rate_to_prob(rate: ArrayLike, t: float = 1.0) -> FloatArray:
    """Constant rate (/``t`` unit, e.g. /a) to probability over ``t``: 1 - exp(-rate t)."""
    r = np.asarray(rate, dtype=float)
    if np.any(r < 0):
        raise ValueError(f"rate must be >= 0, got min {r.min():g}")
    return np.asarray(1.0 - np.exp(-r * t))


def prob_to_rate(p: ArrayLike, t: float = 1.0) -> FloatArray:
    """Probability over ``t`` to constant rate (/``t`` unit): -ln(1 - p) / t."""
    pa = np.asarray(p, dtype=float)
    if np.any((pa < 0) | (pa >= 1)):
        raise ValueError("p must lie in [0, 1)")
    return np.asarray(-np.log1p(-pa) / t)


def validate_transition(t: ArrayLike, name: str = "T", atol: float = 1e-9) -> FloatArray:
    """Check a (..., S, S) row-stochastic array; raise ValueError naming the bad entry."""
    a = np.asarray(t, dtype=float)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{name} must have shape (..., S, S); got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite probabilities")
    bad = (a < -atol) | (a > 1 + atol)
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}{list(idx)} = {a[idx]:g} is not a probability in [0, 1]")
    rs = a.sum(axis=-1)
    off = np.abs(rs - 1) > atol
    if np.any(off):
        idx = tuple(int(i) for i in np.argwhere(off)[0])
        raise ValueError(f"row {list(idx)} of {name} sums to {rs[idx]:.12g}, not 1")
    return a


def cohort_trace(p0: ArrayLike, transition: ArrayLike, n_cycles: int) -> FloatArray:
    """Cohort trace P(t+1) = P(t) T(t), shape (n_cycles+1, S) (state occupancy, unit 1).

    ``transition`` is (S, S) (time-homogeneous) or (n_cycles, S, S) (time-dependent, T(t)
    used from cycle t to t+1).
    """
    tr = validate_transition(transition)
    p = np.asarray(p0, dtype=float)
    s = tr.shape[-1]
    if p.shape != (s,) or abs(p.sum() - 1) > 1e-9 or np.any(p < 0):
        raise ValueError(f"p0 must be a probability vector of length {s}; got {p.tolist()}")
    if tr.ndim == 3 and tr.shape[0] < n_cycles:
        raise ValueError(f"time-dependent T has {tr.shape[0]} cycles; need {n_cycles}")
    out = np.empty((n_cycles + 1, s))
    out[0] = p
    for t in range(n_cycles):
        out[t + 1] = out[t] @ (tr[t] if tr.ndim == 3 else tr)
    return out


def absorbing_states(transition: ArrayLike) -> IntArray:
    """Indices i with T_ii = 1 (absorbing states)."""
    tr = validate_transition(transition)
    return np.flatnonzero(np.isclose(np.diagonal(tr, axis1=-2, axis2=-1), 1.0)).astype(np.int64)


def _transient(tr: FloatArray) -> IntArray:
    ab = absorbing_states(tr)
    if ab.size == 0:
        raise ValueError("T has no absorbing state; the fundamental matrix is undefined")
    return np.setdiff1d(np.arange(tr.shape[-1]), ab).astype(np.int64)


def fundamental_matrix(transition: ArrayLike) -> tuple[FloatArray, IntArray]:
    """N = (I - Q)^-1 (expected cycles in transient j starting from transient i) and the
    transient state indices. Accepts (S, S) or a batch (B, S, S) (same absorbing set)."""
    tr = validate_transition(transition)
    tt = _transient(tr if tr.ndim == 2 else tr[0])
    q = tr[..., tt[:, None], tt[None, :]]
    eye = np.eye(tt.size)
    try:
        n = np.asarray(np.linalg.inv(eye - q), dtype=float)
    except np.linalg.LinAlgError as exc:
        raise ValueError("I - Q is singular: some transient state never leaves") from exc
    return n, tt


def expected_time_to_absorption(transition: ArrayLike) -> tuple[FloatArray, IntArray]:
    """Expected cycles until absorption, N 1, for each transient state (and their indices).

    Counts the starting cycle (a state entered at t=0 and left at t=1 contributes 1)."""
    n, tt = fundamental_matrix(transition)
    return n.sum(axis=-1), tt


def expected_stay_length(transition: ArrayLike) -> FloatArray:
    """Expected consecutive cycles per visit, 1 / (1 - T_ii) (inf for absorbing states)."""
    tr = validate_transition(transition)
    d = np.diagonal(tr, axis1=-2, axis2=-1)
    with np.errstate(divide="ignore"):
        return np.where(d < 1, 1.0 / (1.0 - d), np.inf)


def within_cycle_weights(n_cycles: int, method: str = "half-cycle") -> FloatArray:
    """Within-cycle correction weights for the n_cycles+1 trace rows.

    ``"none"``: all 1. ``"half-cycle"`` / ``"trapezoid"``: 1/2 at both ends. ``"simpson"``:
    composite Simpson 1/3 (1, 4, 2, ..., 4, 1)/3, needs an even ``n_cycles``.
    ``"darth-simpson"``: the DARTH ``gen_wcc("Simpson1/3")`` convention used by the published
    Sick-Sicker tutorial (interior weights alternate 2/3, 4/3 starting with 2/3; ends 1/3).
    """
    if n_cycles < 1:
        raise ValueError(f"n_cycles={n_cycles} must be >= 1")
    w = np.ones(n_cycles + 1)
    if method == "none":
        return w
    if method in ("half-cycle", "trapezoid"):
        w[[0, -1]] = 0.5
        return w
    if method == "simpson":
        if n_cycles % 2:
            raise ValueError(f"method='simpson' needs an even n_cycles; got {n_cycles}")
        w[1:-1:2] = 4.0 / 3.0
        w[2:-1:2] = 2.0 / 3.0
        w[[0, -1]] = 1.0 / 3.0
        return w
    if method == "darth-simpson":
        idx = np.arange(1, n_cycles + 2)
        w = np.where(idx % 2 == 0, 2.0 / 3.0, 4.0 / 3.0)
        w[[0, -1]] = 1.0 / 3.0
        return w
    raise ValueError(
        f"method={method!r}: expected 'none', 'half-cycle', 'trapezoid', 'simpson' or "
        "'darth-simpson'"
    )


def discount_weights(rate: float, n_cycles: int, cycle_length: float = 1.0) -> FloatArray:
    """1 / (1 + rate * cycle_length)^t for t = 0..n_cycles (``rate`` per year, unit /a)."""
    if rate < 0:
        raise ValueError(f"discount rate={rate} /a must be >= 0")
    return np.asarray(1.0 / (1.0 + rate * cycle_length) ** np.arange(n_cycles + 1), dtype=float)


# --------------------------------------------------------------------------- cohort model
@dataclass(frozen=True)
class CohortResult:
    """Cohort outcomes: ``trace`` (n_cycles+1, S); totals per average individual."""

    trace: FloatArray
    total_cost: float
    total_qaly: float
    cost_unit: str
    qaly_unit: str = "a"
    label: str = "model-computed (deterministic cohort)"


class MarkovCohortModel(TwinModel):
    """Cohort state-transition model with state rewards, discounting and within-cycle correction.

    ``transition``: (S, S), (n_cycles, S, S) or ``f(cycle) -> (S, S)``. ``state_costs`` in
    ``cost_unit`` per cycle; ``state_utilities`` per cycle (QALY weight x ``cycle_length``, unit
    ``a``). Discount rates per year (/a). ``wcc`` as in :func:`within_cycle_weights`.
    """

    def __init__(
        self,
        transition: ArrayLike | Callable[[int], ArrayLike],
        state_names: Sequence[str] | None = None,
        state_costs: ArrayLike | None = None,
        state_utilities: ArrayLike | None = None,
        discount_cost: float = 0.03,
        discount_effect: float = 0.03,
        cycle_length: float = 1.0,
        wcc: str = "half-cycle",
        cost_unit: str = "USD",
    ) -> None:
        self.transition = transition
        self.state_names = state_names
        self.state_costs = state_costs
        self.state_utilities = state_utilities
        self.discount_cost = discount_cost
        self.discount_effect = discount_effect
        self.cycle_length = cycle_length
        self.wcc = wcc
        self.cost_unit = cost_unit

    def transition_array(self, n_cycles: int) -> FloatArray:
        """The (S, S) or (n_cycles, S, S) transition array for ``n_cycles``."""
        if callable(self.transition):
            f = self.transition
            return validate_transition(np.stack([np.asarray(f(t)) for t in range(n_cycles)]))
        return validate_transition(self.transition)

    def fit(self, *args: object, **kwargs: object) -> MarkovCohortModel:
        """Validates the specification (nothing is learned); returns self."""
        tr = self.transition_array(1)
        self.n_states_ = tr.shape[-1]
        return self

    def simulate(self, p0: ArrayLike, n_cycles: int) -> FloatArray:
        """Cohort trace (n_cycles+1, S)."""
        return cohort_trace(p0, self.transition_array(n_cycles), n_cycles)

    def evaluate(self, p0: ArrayLike, n_cycles: int) -> CohortResult:
        """Total discounted, within-cycle-corrected cost and QALYs per individual."""
        if self.state_costs is None or self.state_utilities is None:
            raise ValueError("state_costs and state_utilities are required to evaluate")
        trace = self.simulate(p0, n_cycles)
        c = np.asarray(self.state_costs, dtype=float)
        u = np.asarray(self.state_utilities, dtype=float)
        if c.shape != (trace.shape[1],) or u.shape != (trace.shape[1],):
            raise ValueError(f"state_costs and state_utilities need {trace.shape[1]} entries")
        w = within_cycle_weights(n_cycles, self.wcc)
        dc = discount_weights(self.discount_cost, n_cycles, self.cycle_length)
        de = discount_weights(self.discount_effect, n_cycles, self.cycle_length)
        return CohortResult(
            trace=trace,
            total_cost=float((trace @ c) @ (dc * w)),
            total_qaly=float((trace @ u) @ (de * w)),
            cost_unit=self.cost_unit,
        )


def calculate_icers(
    costs: ArrayLike, effects: ArrayLike, strategies: Sequence[str]
) -> pd.DataFrame:
    """Incremental cost-effectiveness ratios along the efficient frontier.

    Strongly dominated strategies (costlier and no more effective than another) get status
    ``"D"``; extendedly dominated ones (ICER above that of a more effective strategy) ``"ED"``;
    frontier strategies ``"ND"`` with incremental cost, incremental effect and ICER (cost unit
    per QALY) versus the previous frontier strategy. Rows: frontier by cost, then dominated.
    """
    c = np.asarray(costs, dtype=float)
    e = np.asarray(effects, dtype=float)
    names = list(strategies)
    if not (c.shape == e.shape == (len(names),)):
        raise ValueError("costs, effects and strategies must have the same length")
    status = dict.fromkeys(names, "ND")
    order = sorted(range(len(names)), key=lambda i: (c[i], -e[i]))
    for i in order:
        for j in order:
            if i != j and c[j] <= c[i] and e[j] >= e[i] and (c[j] < c[i] or e[j] > e[i]):
                status[names[i]] = "D"
                break
    front = [i for i in order if status[names[i]] == "ND"]
    changed = True
    while changed and len(front) > 2:
        changed = False
        icer = [(c[b] - c[a]) / (e[b] - e[a]) for a, b in zip(front[:-1], front[1:], strict=True)]
        for k in range(len(icer) - 1):
            if icer[k] > icer[k + 1]:
                status[names[front[k + 1]]] = "ED"
                front.pop(k + 1)
                changed = True
                break
    rows = []
    for k, i in enumerate(front):
        inc_c = np.nan if k == 0 else c[i] - c[front[k - 1]]
        inc_e = np.nan if k == 0 else e[i] - e[front[k - 1]]
        rows.append((names[i], c[i], e[i], inc_c, inc_e, inc_c / inc_e if k else np.nan, "ND"))
    for i in order:
        if status[names[i]] != "ND":
            rows.append((names[i], c[i], e[i], np.nan, np.nan, np.nan, status[names[i]]))
    return pd.DataFrame(
        rows, columns=["strategy", "cost", "effect", "inc_cost", "inc_effect", "icer", "status"]
    )


# --------------------------------------------------------------------------- microsimulation
@dataclass(frozen=True)
class MicrosimResult:
    """Individual microsimulation output (``label`` = simulated).

    ``counts``: (n_cycles+1, S) individuals per state; ``cost``/``qaly``: (n,) discounted,
    within-cycle-corrected totals per individual; ``time_to_absorption``: (n,) cycles until the
    first absorbing state (nan if never within the horizon); ``states``: (n, n_cycles+1) if
    recorded.
    """

    counts: IntArray
    cost: FloatArray | None
    qaly: FloatArray | None
    time_to_absorption: FloatArray
    states: NDArray[np.signedinteger[Any]] | None
    cost_unit: str
    label: str = field(default="simulated")

    def trace(self) -> FloatArray:
        """Simulated state proportions (n_cycles+1, S)."""
        return self.counts / self.counts[0].sum()

    def mean_with_ci(self, what: str = "cost", level: float = 0.95) -> tuple[float, float, float]:
        """Mean of ``cost`` or ``qaly`` per individual with a normal-theory MC interval."""
        v = self.cost if what == "cost" else self.qaly
        if v is None:
            raise ValueError(f"{what} was not computed (pass rewards to microsimulate)")
        z = stats.norm.ppf(0.5 + level / 2)
        m, se = float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size))
        return m, m - z * se, m + z * se


def microsimulate(
    initial_states: ArrayLike,
    transition: ArrayLike | TransitionFn,
    n_cycles: int,
    *,
    seed: int | np.random.Generator | None = 0,
    state_costs: ArrayLike | None = None,
    state_utilities: ArrayLike | None = None,
    discount_cost: float = 0.0,
    discount_effect: float = 0.0,
    cycle_length: float = 1.0,
    wcc: str = "none",
    record_states: bool = False,
    cost_unit: str = "USD",
) -> MicrosimResult:
    """Vectorised individual microsimulation (first axis: individuals).

    ``initial_states``: (n,) integer states. ``transition``: (S, S), (n_cycles, S, S), or
    ``f(cycle, states) -> (n, S)`` row probabilities (covariate / age dependence). Each cycle
    draws one uniform per individual and inverts the cumulative row (inverse-CDF sampling).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    st = np.asarray(initial_states)
    if st.ndim != 1 or not np.issubdtype(st.dtype, np.integer):
        raise ValueError("initial_states must be a 1-D integer array of state indices")
    n = st.size
    fn: TransitionFn | None = None
    cum: FloatArray | None = None
    if callable(transition):
        fn = transition
        s_count = None
    else:
        tr = validate_transition(transition)  # type: ignore[arg-type]
        if tr.ndim == 3 and tr.shape[0] < n_cycles:
            raise ValueError(f"time-dependent T has {tr.shape[0]} cycles; need {n_cycles}")
        cum = np.cumsum(tr, axis=-1)
        s_count = tr.shape[-1]
    if s_count is None:
        s_count = int(np.asarray(fn(0, st.astype(np.int64)[:1])).shape[-1])  # type: ignore[misc]
    if st.min() < 0 or st.max() >= s_count:
        raise ValueError(f"initial_states must lie in [0, {s_count - 1}]")
    # narrow state dtype: less memory traffic per cycle
    sdtype: np.dtype[np.signedinteger[Any]] = np.dtype(np.int8 if s_count <= 127 else np.int32)
    state: NDArray[np.signedinteger[Any]] = st.astype(sdtype)
    counts = np.zeros((n_cycles + 1, s_count), dtype=np.int64)
    counts[0] = np.bincount(state, minlength=s_count)
    rec = np.empty((n, n_cycles + 1), dtype=sdtype) if record_states else None
    if rec is not None:
        rec[:, 0] = state
    want_rewards = state_costs is not None and state_utilities is not None
    w = within_cycle_weights(n_cycles, wcc)
    if want_rewards:
        c = np.asarray(state_costs, dtype=float)
        u = np.asarray(state_utilities, dtype=float)
        wc = w * discount_weights(discount_cost, n_cycles, cycle_length)
        we = w * discount_weights(discount_effect, n_cycles, cycle_length)
        cost = c[state] * wc[0]
        qaly = u[state] * we[0]
    absorbing = (
        absorbing_states(tr) if cum is not None and cum.ndim == 2 else np.array([], np.int64)
    )
    is_abs = np.zeros(s_count, dtype=bool)
    is_abs[absorbing] = True
    # cycles spent outside absorbing states; absorbing states never left, so this is the
    # time to absorption for everyone absorbed by the horizon
    not_abs: NDArray[np.int32] = (~is_abs).astype(np.int32)
    alive_cycles: NDArray[np.int32] = np.zeros(n, dtype=np.int32)
    if absorbing.size:
        alive_cycles += np.take(not_abs, state)
    for t in range(n_cycles):
        u01 = rng.random(n)
        # new state = number of cumulative probabilities <= u (inverse CDF); the last column
        # (1 up to round-off) is skipped so round-off can never push a draw past the last state
        new: NDArray[np.signedinteger[Any]] = np.zeros(n, dtype=sdtype)
        if fn is not None:
            rows = np.cumsum(np.asarray(fn(t, state.astype(np.int64)), dtype=float), axis=-1)
            for k in range(s_count - 1):
                new += rows[:, k] <= u01
        else:
            assert cum is not None
            ct = cum[t] if cum.ndim == 3 else cum
            for k in range(s_count - 1):
                new += np.take(ct[:, k], state) <= u01
        state = new
        counts[t + 1] = np.bincount(state, minlength=s_count)
        if rec is not None:
            rec[:, t + 1] = state
        if want_rewards:
            cost += np.take(c * wc[t + 1], state)
            qaly += np.take(u * we[t + 1], state)
        if absorbing.size:
            alive_cycles += np.take(not_abs, state)
    if absorbing.size:
        tta = np.where(np.take(is_abs, state), alive_cycles.astype(float), np.nan)
    else:
        tta = np.full(n, np.nan)
    return MicrosimResult(
        counts=counts,
        cost=cost if want_rewards else None,
        qaly=qaly if want_rewards else None,
        time_to_absorption=tta,
        states=rec,
        cost_unit=cost_unit,
    )


# --------------------------------------------------------------------------- estimation
def _gap_triples(sequences: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """(from, to, k) for each pair of consecutive *observed* visits k cycles apart."""
    seq = np.asarray(sequences)
    n, m = seq.shape
    a_list, b_list, k_list = [], [], []
    last_state = np.full(n, -1)
    last_time = np.full(n, -1)
    for j in range(m):
        obs = seq[:, j] >= 0
        has_prev = obs & (last_state >= 0)
        a_list.append(last_state[has_prev])
        b_list.append(seq[has_prev, j])
        k_list.append(j - last_time[has_prev])
        last_state = np.where(obs, seq[:, j], last_state)
        last_time = np.where(obs, j, last_time)
    return (
        np.concatenate(a_list).astype(np.int64),
        np.concatenate(b_list).astype(np.int64),
        np.concatenate(k_list).astype(np.int64),
    )


class MarkovTransitionEstimator(TwinModel):
    """Maximum-likelihood transition matrix from panel state sequences.

    ``fit(sequences)`` takes an (n, m) integer array of states at cycles 0..m-1, with ``-1``
    for a missing visit or after right-censoring (drop-out). Consecutive observed visits k
    cycles apart contribute ``log (T^k)[a, b]`` (matrix-power likelihood); with gaps the MLE is
    found by EM (expected one-step transition counts along the unobserved path), without gaps
    it is the closed form n_ij / n_i.

    Intervals: equal-tailed Beta marginals of the Dirichlet posterior under a
    ``prior`` pseudo-count on allowed transitions (Jeffreys 0.5 by default), using the
    (expected) counts; ``se_`` is the multinomial delta-method SE sqrt(p(1-p)/n_i).
    ``allowed`` is an optional (S, S) boolean mask of structurally possible transitions
    (e.g. absorbing rows with only the diagonal).
    """

    def __init__(
        self,
        n_states: int,
        allowed: ArrayLike | None = None,
        prior: float = 0.5,
        level: float = 0.95,
        max_iter: int = 1000,
        tol: float = 1e-10,
    ) -> None:
        self.n_states = n_states
        self.allowed = allowed
        self.prior = prior
        self.level = level
        self.max_iter = max_iter
        self.tol = tol

    def _mask(self) -> NDArray[np.bool_]:
        s = self.n_states
        if self.allowed is None:
            return np.ones((s, s), dtype=bool)
        mask = np.asarray(self.allowed, dtype=bool)
        if mask.shape != (s, s) or not np.all(mask.any(axis=1)):
            raise ValueError(f"allowed must be an ({s}, {s}) mask with >= 1 True per row")
        return mask

    def fit(self, sequences: ArrayLike) -> MarkovTransitionEstimator:
        """Estimate ``transition_``, ``counts_``, ``ci_low_``, ``ci_high_``, ``se_``."""
        seq = np.asarray(sequences)
        if seq.ndim != 2 or not np.issubdtype(seq.dtype, np.integer):
            raise ValueError("sequences must be an (n, m) integer array (-1 = missing)")
        s = self.n_states
        if seq.max() >= s or seq.min() < -1:
            raise ValueError(f"sequences contain states outside [-1, {s - 1}]")
        mask = self._mask()
        a, b, k = _gap_triples(seq)
        if a.size == 0:
            raise ValueError("no pair of observed visits: nothing to estimate from")
        bad = ~mask[a, b] & (k == 1)
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"observed transition {a[i]}->{b[i]} is not allowed by the mask")
        trip, w = np.unique(np.stack([a, b, k], axis=1), axis=0, return_counts=True)
        one = trip[:, 2] == 1
        direct = np.zeros((s, s))
        np.add.at(direct, (trip[one, 0], trip[one, 1]), w[one])
        # start: direct counts plus a uniform pseudo-count on allowed cells
        tmat = np.where(mask, direct + 1.0, 0.0)
        tmat /= tmat.sum(axis=1, keepdims=True)
        gaps = trip[~one]
        wg = w[~one].astype(float)
        n_iter = 0
        counts = direct.copy()
        if gaps.size:
            kmax = int(gaps[:, 2].max())
            prev = -np.inf
            for n_iter in range(1, self.max_iter + 1):  # noqa: B007
                counts = direct + self._expected_gap_counts(tmat, gaps, wg, kmax)
                tmat = np.where(mask, counts, 0.0)
                rs = tmat.sum(axis=1, keepdims=True)
                tmat = np.where(rs > 0, tmat / np.where(rs > 0, rs, 1), np.eye(s))
                ll = self._loglik(tmat, trip, w)
                if abs(ll - prev) < self.tol * (1 + abs(ll)):
                    break
                prev = ll
        else:
            rs = counts.sum(axis=1, keepdims=True)
            tmat = np.where(rs > 0, counts / np.where(rs > 0, rs, 1), np.eye(s))
            tmat = np.where(mask, tmat, 0.0)
        self.transition_ = tmat
        self.counts_ = counts
        self.n_iter_ = n_iter
        self.loglik_ = self._loglik(tmat, trip, w)
        alpha_post = np.where(mask, counts + self.prior, 0.0)
        tot = alpha_post.sum(axis=1, keepdims=True)
        lo_q, hi_q = (1 - self.level) / 2, (1 + self.level) / 2
        with np.errstate(invalid="ignore"):
            beta_b = np.where(mask, tot - alpha_post, 1.0)
            lo = stats.beta.ppf(lo_q, np.where(mask, alpha_post, 1.0), beta_b)
            hi = stats.beta.ppf(hi_q, np.where(mask, alpha_post, 1.0), beta_b)
        single = mask.sum(axis=1, keepdims=True) == 1
        # a cell never observed has MLE 0: report the one-sided interval [0, upper]
        lo = np.where(counts <= 0, 0.0, lo)
        self.ci_low_ = np.where(mask, np.where(single, 1.0, lo), 0.0)
        self.ci_high_ = np.where(mask, np.where(single, 1.0, hi), 0.0)
        n_i = counts.sum(axis=1, keepdims=True)
        self.se_ = np.sqrt(tmat * (1 - tmat) / np.where(n_i > 0, n_i, np.nan))
        self.posterior_alpha_ = alpha_post
        return self

    @staticmethod
    def _expected_gap_counts(
        tmat: FloatArray, gaps: IntArray, wg: FloatArray, kmax: int
    ) -> FloatArray:
        s = tmat.shape[0]
        powers = np.empty((kmax + 1, s, s))
        powers[0] = np.eye(s)
        for p in range(1, kmax + 1):
            powers[p] = powers[p - 1] @ tmat
        out = np.zeros((s, s))
        for kk in np.unique(gaps[:, 2]):
            sel = gaps[:, 2] == kk
            a, b, w = gaps[sel, 0], gaps[sel, 1], wg[sel]
            denom = powers[kk][a, b]
            for step in range(kk):
                left = powers[step][a]  # (g, S): P(at i after `step` | a)
                right = powers[kk - 1 - step][:, b].T  # (g, S): P(b | at j, remaining)
                contrib = left[:, :, None] * tmat[None] * right[:, None, :]
                out += np.einsum("g,gij->ij", w / denom, contrib)
        return out

    @staticmethod
    def _loglik(tmat: FloatArray, trip: IntArray, w: IntArray) -> float:
        ll = 0.0
        for kk in np.unique(trip[:, 2]):
            sel = trip[:, 2] == kk
            pk = np.linalg.matrix_power(tmat, int(kk))
            with np.errstate(divide="ignore"):
                ll += float(np.sum(w[sel] * np.log(pk[trip[sel, 0], trip[sel, 1]])))
        return ll

    def bootstrap_interval(
        self, sequences: ArrayLike, n_boot: int = 200, seed: int | None = 0
    ) -> tuple[FloatArray, FloatArray]:
        """Percentile intervals (``level``) for T by resampling individuals (rows) with
        replacement and refitting; honest when many visits are missing (the Dirichlet
        intervals then treat expected counts as observed). Returns (low, high), each (S, S)."""
        seq = np.asarray(sequences)
        rng = np.random.default_rng(seed)
        draws = np.empty((n_boot, self.n_states, self.n_states))
        for b in range(n_boot):
            idx = rng.integers(0, seq.shape[0], seq.shape[0])
            est = MarkovTransitionEstimator(
                self.n_states, self.allowed, self.prior, self.level, self.max_iter, self.tol
            ).fit(seq[idx])
            draws[b] = est.transition_
        q = np.quantile(draws, [(1 - self.level) / 2, (1 + self.level) / 2], axis=0)
        return q[0], q[1]

    def predict_proba(self, states: ArrayLike, n_steps: int = 1) -> FloatArray:
        """State distribution after ``n_steps`` cycles from each current state, (n, S)."""
        self._require_fitted("transition_")
        st = np.asarray(states, dtype=np.intp)
        return np.linalg.matrix_power(self.transition_, n_steps)[st]

    def sample_transitions(self, n_draws: int, seed: int | None = 0) -> FloatArray:
        """Posterior draws of T, (n_draws, S, S) (rows Dirichlet on allowed cells)."""
        self._require_fitted("posterior_alpha_")
        rng = np.random.default_rng(seed)
        g = rng.gamma(
            np.where(self.posterior_alpha_ > 0, self.posterior_alpha_, 1.0),
            1.0,
            size=(n_draws, *self.posterior_alpha_.shape),
        )
        g = np.where(self.posterior_alpha_ > 0, g, 0.0)
        return g / g.sum(axis=-1, keepdims=True)

    def time_to_absorption_interval(
        self, n_draws: int = 2000, seed: int | None = 0
    ) -> tuple[FloatArray, FloatArray, FloatArray, IntArray]:
        """Expected cycles to absorption per transient state: estimate, interval low/high
        (posterior quantiles at ``level``), transient indices."""
        est, tt = expected_time_to_absorption(self.transition_)
        draws, _ = expected_time_to_absorption(self.sample_transitions(n_draws, seed))
        q = np.quantile(draws, [(1 - self.level) / 2, (1 + self.level) / 2], axis=0)
        return est, q[0], q[1], tt

    def simulate(
        self, initial_states: ArrayLike, n_cycles: int, seed: int | None = 0
    ) -> MicrosimResult:
        """Microsimulate individuals from the fitted T (labelled simulated)."""
        self._require_fitted("transition_")
        return microsimulate(initial_states, self.transition_, n_cycles, seed=seed)


class CovariateMarkovModel(TwinModel):
    """Covariate- (and hence age-/time-) dependent transitions: a multinomial logit per
    from-state, fitted by maximum likelihood with statsmodels ``MNLogit``.

    P(next = j | current = i, x) = softmax_j(x' b_ij) over the destinations observed from i
    (the first observed destination is the reference). ``fit(from_state, to_state, X)`` takes
    long-format one-cycle transitions; ``X`` (N, p) covariates in stated units (e.g. age in a);
    an intercept is added. Coefficient SEs come from the observed information.
    """

    def __init__(self, n_states: int, level: float = 0.95) -> None:
        self.n_states = n_states
        self.level = level

    def fit(self, from_state: ArrayLike, to_state: ArrayLike, X: ArrayLike) -> CovariateMarkovModel:
        """Fit one MNLogit per from-state; learned ``params_``, ``bse_``, ``dest_``."""
        import statsmodels.api as sm

        fs = np.asarray(from_state, dtype=np.intp)
        ts = np.asarray(to_state, dtype=np.intp)
        x = np.asarray(X, dtype=float)
        if x.ndim == 1:
            x = x[:, None]
        if not (fs.shape == ts.shape == (x.shape[0],)):
            raise ValueError("from_state, to_state and X must have the same number of rows")
        if not np.all(np.isfinite(x)):
            raise ValueError("X contains non-finite covariates")
        self.n_features_in_ = x.shape[1]
        self.params_: dict[int, FloatArray] = {}
        self.cov_: dict[int, FloatArray] = {}
        self.bse_: dict[int, FloatArray] = {}
        self.dest_: dict[int, IntArray] = {}
        for i in range(self.n_states):
            sel = fs == i
            if not np.any(sel):
                continue
            dest = np.unique(ts[sel]).astype(np.int64)
            self.dest_[i] = dest
            if dest.size == 1:
                self.params_[i] = np.zeros((x.shape[1] + 1, 0))
                self.cov_[i] = np.zeros((0, 0))
                self.bse_[i] = np.zeros((x.shape[1] + 1, 0))
                continue
            y = np.searchsorted(dest, ts[sel])
            res = sm.MNLogit(y, sm.add_constant(x[sel], has_constant="add")).fit(
                disp=0, method="newton", maxiter=100
            )
            self.params_[i] = np.asarray(res.params)
            self.cov_[i] = np.asarray(res.cov_params())
            self.bse_[i] = np.asarray(res.bse)
        return self

    def _rows(self, x: FloatArray, params: dict[int, FloatArray]) -> FloatArray:
        n = x.shape[0]
        xc = np.column_stack([np.ones(n), x])
        out = np.zeros((n, self.n_states, self.n_states))
        for i in range(self.n_states):
            if i not in self.dest_:
                out[:, i, i] = 1.0  # never observed leaving: treated as staying (documented)
                continue
            dest = self.dest_[i]
            eta = np.column_stack([np.zeros(n), xc @ params[i]])
            eta -= eta.max(axis=1, keepdims=True)
            p = np.exp(eta)
            p /= p.sum(axis=1, keepdims=True)
            out[:, i, dest] = p
        return out

    def predict_transition_matrix(self, X: ArrayLike) -> FloatArray:
        """Per-individual transition matrices, (n, S, S)."""
        self._require_fitted("params_")
        x = np.asarray(X, dtype=float)
        x = x[:, None] if x.ndim == 1 else x
        if x.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {x.shape[1]} columns; the model was fitted on {self.n_features_in_}"
            )
        return self._rows(x, self.params_)

    def predict_proba(self, states: ArrayLike, X: ArrayLike) -> FloatArray:
        """Next-state probabilities for individuals in ``states`` with covariates X, (n, S)."""
        tm = self.predict_transition_matrix(X)
        st = np.asarray(states, dtype=np.intp)
        return tm[np.arange(st.size), st]

    def transition_interval(
        self, X: ArrayLike, n_draws: int = 500, seed: int | None = 0
    ) -> tuple[FloatArray, FloatArray]:
        """Pointwise intervals for the transition matrices at X by drawing coefficients from
        their asymptotic normal distribution; returns (low, high), each (n, S, S)."""
        self._require_fitted("params_")
        rng = np.random.default_rng(seed)
        x = np.asarray(X, dtype=float)
        x = x[:, None] if x.ndim == 1 else x
        draws = []
        for _ in range(n_draws):
            pd_ = {}
            for i, p in self.params_.items():
                if p.size == 0:
                    pd_[i] = p
                    continue
                flat = rng.multivariate_normal(p.ravel(order="F"), self.cov_[i])
                pd_[i] = flat.reshape(p.shape, order="F")
            draws.append(self._rows(x, pd_))
        arr = np.stack(draws)
        q = np.quantile(arr, [(1 - self.level) / 2, (1 + self.level) / 2], axis=0)
        return q[0], q[1]


# --------------------------------------------------------------------------- Sick-Sicker
def sick_sicker_strategies() -> dict[str, dict[str, FloatArray]]:
    """The time-independent Sick-Sicker model of the DARTH tutorial.

    Source: Alarid-Escudero F, Krijkamp E, Enns EA, et al. An Introductory Tutorial on Cohort
    State-Transition Models in R Using a Cost-Effectiveness Analysis Example. Med Decis Making
    2023;43(1):3-20 (PMC9742144; arXiv 2001.07824), Table 1 parameters. States H, S1, S2, D;
    annual cycles from age 25 to 100 (75 cycles); costs USD per year; utilities per year.
    Returns, per strategy, ``transition`` (4, 4), ``costs`` (4,) and ``utilities`` (4,).
    """
    r_hd, r_hs1, r_s1h, r_s1s2 = 0.002, 0.15, 0.5, 0.105
    hr_s1, hr_s2, hr_s1s2_trt_b = 3.0, 10.0, 0.6
    c_h, c_s1, c_s2, c_trt_a, c_trt_b = 2000.0, 4000.0, 15000.0, 12000.0, 13000.0
    u_h, u_s1, u_s2, u_trt_a = 1.0, 0.75, 0.5, 0.95
    p_hd, p_s1d, p_s2d = (float(rate_to_prob(r)) for r in (r_hd, r_hd * hr_s1, r_hd * hr_s2))
    p_hs1, p_s1h = float(rate_to_prob(r_hs1)), float(rate_to_prob(r_s1h))

    def matrix(r_prog: float) -> FloatArray:
        p_s1s2 = float(rate_to_prob(r_prog))
        return np.array(
            [
                [(1 - p_hd) * (1 - p_hs1), (1 - p_hd) * p_hs1, 0.0, p_hd],
                [
                    (1 - p_s1d) * p_s1h,
                    (1 - p_s1d) * (1 - p_s1h - p_s1s2),
                    (1 - p_s1d) * p_s1s2,
                    p_s1d,
                ],
                [0.0, 0.0, 1 - p_s2d, p_s2d],
                [0.0, 0.0, 0.0, 1.0],
            ]
        )

    soc, trt_b = matrix(r_s1s2), matrix(r_s1s2 * hr_s1s2_trt_b)
    return {
        "Standard of care": {
            "transition": soc,
            "costs": np.array([c_h, c_s1, c_s2, 0.0]),
            "utilities": np.array([u_h, u_s1, u_s2, 0.0]),
        },
        "Strategy A": {
            "transition": soc,
            "costs": np.array([c_h, c_s1 + c_trt_a, c_s2 + c_trt_a, 0.0]),
            "utilities": np.array([u_h, u_trt_a, u_s2, 0.0]),
        },
        "Strategy B": {
            "transition": trt_b,
            "costs": np.array([c_h, c_s1 + c_trt_b, c_s2 + c_trt_b, 0.0]),
            "utilities": np.array([u_h, u_s1, u_s2, 0.0]),
        },
        "Strategy AB": {
            "transition": trt_b,
            "costs": np.array([c_h, c_s1 + c_trt_a + c_trt_b, c_s2 + c_trt_a + c_trt_b, 0.0]),
            "utilities": np.array([u_h, u_trt_a, u_s2, 0.0]),
        },
    }
