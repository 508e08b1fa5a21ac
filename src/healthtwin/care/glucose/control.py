"""Treatment optimisation: basal-bolus baseline, personalised CR/CF, MPC, Bellman policy.

All glucose in mg/dL, insulin in U or U/min, carbohydrate in g, time in min. Closed-loop
results are simulated (UVA/Padova virtual patients, CGM noise) and labelled so.

* Basal-bolus baseline (as simglucose's ``BBController``): basal u2ss·BW/6000 U/min; at a
  meal of C g a bolus C/CR + [CGM > 150] (CGM - 140)/CF (U).
* Personalised CR (g/U) and CF (mg/dL/U) from a Bergman twin (closed form, see
  :func:`personalised_bolus_parameters`), one value per ensemble member (→ 95 % interval).
* MPC: every ``period`` min choose the basal multiplier m ∈ {0, 0.5, …, max_multiplier}
  minimising Σ_k [(G_k - target)^2 + effort (m - 1)^2] over the horizon (5-min steps),
  subject to the ensemble 10th percentile of predicted glucose ≥ ``hypo_guard`` (else
  suspend); meals keep their CR bolus. Defaults (target 130, guard 110, effort 20, max 2)
  were tuned on a separate 1-day scenario (seed 7).
* Bellman policy: value iteration on a discretised glucose grid with transition
  probabilities from the twin (γ-discounted, reward = −BG risk index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from healthtwin.care.glucose import metrics as M
from healthtwin.care.glucose.personalize import GlucoseEnKF, _params_from_theta
from healthtwin.models.physiology.bergman import N_STATES, BergmanParams, basal_state, bergman_step
from healthtwin.models.physiology.devices import CGMSensor
from healthtwin.models.physiology.uva_padova import UVAPadovaParams, UVAPadovaStepper

F64 = NDArray[np.float64]
MULTIPLIERS = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0])


def random_meal_scenario(n: int, days: int, rng: np.random.Generator) -> F64:
    """Random meals (N, days·1440) in g announced per minute: 3 meals and up to 3 snacks/day.

    Times (min of day) ~ N(mean, sd) with breakfast 7:00 (60 min), lunch 12:00, dinner 18:00
    and snacks 9:30, 15:00, 21:00 (30 min, probability 0.3 each); sizes (g) ~ N(45, 10),
    N(70, 10), N(80, 10) and N(10, 5), truncated at 5 g.
    """
    t = days * 1440
    meals = np.zeros((n, t))
    spec = [(420, 60, 45, 1.0), (570, 30, 10, 0.3), (720, 60, 70, 1.0), (900, 30, 10, 0.3),
            (1080, 60, 80, 1.0), (1260, 30, 10, 0.3)]  # fmt: skip
    rows = np.arange(n)
    for d in range(days):
        for mean, sd, size, prob in spec:
            when = d * 1440 + np.clip(np.round(rng.normal(mean, sd, n)), 0, 1439).astype(int)
            g = np.maximum(rng.normal(size, 10.0 if size > 10 else 5.0, n), 5.0)
            eat = rng.random(n) < prob
            np.add.at(meals, (rows[eat], when[eat]), g[eat])
    return meals


@dataclass
class ClosedLoopResult:
    """Simulated closed-loop traces (N, T+1) and per-patient metrics (arrays (N,))."""

    names: list[str]
    controller: str
    bg: F64
    cgm: F64
    insulin: F64
    metrics: dict[str, F64]
    simulated: bool = True


def _summary(bg: F64) -> dict[str, F64]:
    tir = M.time_in_ranges(bg)
    lb, hb = M.risk_indices(bg)
    return {**tir, "lbgi": lb, "hbgi": hb}


def personalised_bolus_parameters(twin: GlucoseEnKF) -> dict[str, tuple[F64, F64, F64]]:
    """CR (g/U) and CF (mg/dL/U) per twin: (mean, 2.5 %, 97.5 %) over the ensemble.

    From the Bergman twin, in the linear regime and without glucose effectiveness
    (the convention of clinical bolus calculators): 1 U gives an insulin area
    ∫ΔI dt = 1000 / (n VI BW) (mU·min/L), so CF = Gb · SI · 1000 / (n VI BW);
    1 g carbohydrate raises glucose by CS = 1000 f / (VG BW) (mg/dL); CR = CF / CS.
    """
    twin._require_fitted("ens_")
    p = _params_from_theta(twin.ens_[N_STATES:], twin.bw_, twin.ub_)
    cf = p.Gb * p.SI * 1000.0 / (p.n * p.VI * p.BW)
    cs = 1000.0 * p.f / (p.VG * p.BW)
    cr = cf / cs
    out = {}
    for name, v in (("CR", cr), ("CF", cf)):
        m = twin._members(v)
        q = np.quantile(m, [0.025, 0.975], axis=1)
        out[name] = (m.mean(axis=1), q[0], q[1])
    return out


def closed_loop(
    params: UVAPadovaParams,
    meals: F64,
    controller: str = "bb",
    *,
    seed: int = 0,
    sensor: CGMSensor | None = None,
    period: int = 5,
    horizon: int = 120,
    target: float = 130.0,
    hypo_guard: float = 110.0,
    n_members: int = 20,
    effort: float = 20.0,
    max_multiplier: float = 2.0,
) -> ClosedLoopResult:
    """Simulate N virtual patients under ``controller`` ('bb' baseline or 'mpc').

    Both controllers see only the CGM and the announced meals; the MPC personalises an
    EnKF Bergman twin online from that CGM and the insulin it gave.
    """
    if controller not in ("bb", "mpc"):
        raise ValueError(f"controller must be 'bb' or 'mpc', got {controller!r}")
    rng = np.random.default_rng(seed)
    sensor = sensor or CGMSensor.named("Dexcom")
    n, t_len = meals.shape
    sim = UVAPadovaStepper(params)
    basal = params.basal_u_per_min
    cr, cf = params.quest["CR"], params.quest["CF"]
    noise, ts = sensor.noise(n, float(t_len), rng)
    bg = np.empty((n, t_len + 1))
    cgm = np.empty((n, t_len + 1))
    ins_log = np.empty((n, t_len))
    bg[:, 0] = sim.bg
    last = np.clip(sim.gsub + noise[:, 0], sensor.low, sensor.high)
    cgm[:, 0] = last
    twin = None
    rate = basal.copy()
    if controller == "mpc":
        twin = GlucoseEnKF(n_members=n_members, seed=seed)
        twin.start(params["BW"], basal, glucose0=last)
    for k in range(t_len):
        j = k / sensor.sample_time
        reading = j == int(j)
        if reading and k > 0:
            last = np.clip(sim.gsub + noise[:, int(j)], sensor.low, sensor.high)
            if twin is not None:
                twin.assimilate(last)
        meal = meals[:, k]
        bolus = np.where(meal > 0, meal / cr, 0.0)
        if controller == "bb":
            bolus = bolus + np.where(meal > 0, (last > 150) * (last - 140.0) / cf, 0.0)
            rate = basal
        elif twin is not None and k % period == 0:
            rate = basal * _mpc_choose(
                twin, basal, meal, bolus, horizon, target, hypo_guard, effort, max_multiplier
            )
        u = rate + bolus
        sim.step(meal, u)
        if twin is not None:
            twin.step(u, meal)  # announced carbohydrate enters the twin's gut in this minute
        ins_log[:, k] = u
        bg[:, k + 1] = sim.bg
        cgm[:, k + 1] = last
    return ClosedLoopResult(list(params.names), controller, bg, cgm, ins_log, _summary(bg))


def _mpc_choose(
    twin: GlucoseEnKF,
    basal: F64,
    meal: F64,
    bolus: F64,
    horizon: int,
    target: float,
    hypo_guard: float,
    effort: float = 0.0,
    max_multiplier: float = 3.0,
) -> F64:
    """Basal multiplier (N,) chosen by the MPC from the twin's ensemble (5-min RK4 steps)."""
    n, m, kc = twin.n_twins_, twin.n_members, MULTIPLIERS.size
    reps = kc
    x = np.tile(twin.ens_[:N_STATES], (1, reps))  # columns: candidate-major, then twin, member
    theta = np.tile(twin.ens_[N_STATES:], (1, reps))
    p = _params_from_theta(theta, np.tile(twin.bw_, reps), np.tile(twin.ub_, reps))
    mult = np.repeat(MULTIPLIERS, n * m)
    base_rate = np.tile(np.repeat(basal, m), reps) * mult
    x[5] += np.tile(np.repeat(1000.0 * meal, m), reps)
    x[3] += np.tile(np.repeat(bolus, m), reps)
    steps = horizon // 5
    cost = np.zeros(x.shape[1])
    gmin = np.full(x.shape[1], np.inf)
    u = np.stack([base_rate, np.zeros_like(base_rate)])
    for _ in range(steps):
        x = bergman_step(x, u, p, dt=5.0)
        cost += (x[0] - target) ** 2
        gmin = np.minimum(gmin, x[0])
    cost = cost.reshape(kc, n, m).mean(axis=2)  # (K, N)
    # effort: penalty (mg/dL)^2 per step per unit squared deviation of the rate from basal
    cost = cost + (effort * steps * (MULTIPLIERS - 1.0) ** 2)[:, None]
    cost[max_multiplier < MULTIPLIERS] = np.inf
    safe = np.quantile(gmin.reshape(kc, n, m), 0.1, axis=2) >= hypo_guard
    cost = np.where(safe, cost, np.inf)
    best = np.argmin(cost, axis=0)
    best = np.where(np.isfinite(cost.min(axis=0)), best, 0)
    return np.asarray(MULTIPLIERS[best], dtype=float)


# -- Bellman policy -----------------------------------------------------------------------
def value_iteration(
    transition: F64, reward: F64, gamma: float = 0.95, tol: float = 1e-10, max_iter: int = 10_000
) -> tuple[F64, NDArray[np.intp]]:
    """Solve V(s) = max_a [R(s, a) + γ Σ_s' P(s'|s, a) V(s')].

    ``transition`` (A, S, S) row-stochastic, ``reward`` (S, A). Returns (V, policy).
    """
    p = np.asarray(transition, dtype=float)
    r = np.asarray(reward, dtype=float)
    if not np.allclose(p.sum(axis=2), 1.0):
        raise ValueError("transition: every row P[a, s, :] must sum to 1")
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    v = np.zeros(p.shape[1])
    for _ in range(max_iter):
        q = r + gamma * np.einsum("asj,j->sa", p, v)
        v_new = q.max(axis=1)
        if np.max(np.abs(v_new - v)) < tol:
            v = v_new
            break
        v = v_new
    q = r + gamma * np.einsum("asj,j->sa", p, v)
    return v, np.asarray(q.argmax(axis=1), dtype=np.intp)


def bellman_basal_policy(
    p: BergmanParams,
    grid: F64 | None = None,
    multipliers: F64 = MULTIPLIERS,
    step_min: int = 30,
    noise_sd: float = 10.0,
    gamma: float = 0.9,
) -> tuple[F64, F64, NDArray[np.intp]]:
    """Basal-multiplier policy on a glucose grid (mg/dL) for ONE twin ``p`` (N = 1).

    Transitions: from glucose g (other states basal) under rate m·ub for ``step_min`` min, the
    twin's deterministic end glucose plus N(0, noise_sd^2) model error, binned on the grid.
    Reward: −(LBGI-type risk r(g)) averaged over the step. Returns (grid, V, policy).
    """
    grid = np.arange(40.0, 401.0, 10.0) if grid is None else np.asarray(grid, dtype=float)
    s, a = grid.size, multipliers.size
    k = s * a
    pk = p.take(np.zeros(k, dtype=np.intp))
    x = basal_state(pk)
    x[0] = np.tile(grid, a)
    x[7] = x[0]
    rates = np.repeat(multipliers, s) * pk.ub
    risk = np.zeros(k)
    u = np.stack([rates, np.zeros(k)])
    for _ in range(step_min):
        x = bergman_step(x, u, pk)
        f = 1.509 * (np.log(np.clip(x[0], 1.0, None)) ** 1.084 - 5.381)
        risk += 10.0 * f**2 / step_min
    end = x[0].reshape(a, s)
    edges = np.concatenate([[-np.inf], 0.5 * (grid[1:] + grid[:-1]), [np.inf]])
    from scipy.stats import norm

    cdf = norm.cdf((edges[None, None, :] - end[:, :, None]) / noise_sd)
    trans = np.diff(cdf, axis=2)
    trans /= trans.sum(axis=2, keepdims=True)
    reward = -risk.reshape(a, s).T
    v, pol = value_iteration(trans, reward, gamma)
    return grid, v, pol
