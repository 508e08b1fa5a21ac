"""Treatment optimisation: basal-bolus baseline, personalised CR/CF, MPC, Bellman policy.

All glucose in mg/dL, insulin in U or U/min, carbohydrate in g, time in min. Closed-loop
results are simulated (UVA/Padova virtual patients, CGM noise) and labelled so.

* Basal-bolus baseline (as simglucose's ``BBController``): basal u2ss·BW/6000 U/min; at a
  meal of C g a bolus C/CR + [CGM > 150] (CGM - 140)/CF (U).
* Personalised CR (g/U) and CF (mg/dL/U) from a Bergman twin (closed form, see
  :func:`personalised_bolus_parameters`), one value per ensemble member (→ 95 % interval).
* MPC (:class:`MPCSettings`): every ``period`` min choose the basal multiplier
  m ∈ {0, 0.25, …, 1.5, 2, 3} minimising, over the twin's ensemble and a 120-min horizon
  (5-min steps), Σ_k [(G_k − 150)₊² + 10 (100 − G_k)₊² + effort (m − 1)²] (a dead band:
  no cost while predicted glucose stays in 100–150 mg/dL, lows weigh 10× highs; the
  Kovatchev risk and (G − 130)² are options), subject to the ensemble median
  (``guard_quantile``) of predicted minimum glucose ≥ ``hypo_guard`` = 80 mg/dL (else
  suspend; a 10th-percentile guard suspended on sensor noise and lost TIR on the tuning
  scenario). Meals get the
  same bolus as the baseline. The predictions include the twin's model-error disturbance.
  Defaults were chosen on a separate tuning scenario only (1 day, seed 7, all 30
  patients); the evaluation uses other seeds.
* Bellman policy: value iteration on a discretised glucose grid with transition
  probabilities from the twin (γ-discounted, reward = −BG risk index).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


#: basal multipliers the MPC chooses from (finer near 1 than :data:`MULTIPLIERS`)
MPC_MULTIPLIERS = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0])


def bg_risk(g: F64) -> F64:
    """Kovatchev BG risk r(G) = 10 f(G)^2, f = 1.509 ((ln G)^1.084 - 5.381) (G in mg/dL).

    Asymmetric in G: zero at 112.5 mg/dL and equal (7.7) at 70 and 180 mg/dL, so it
    weighs a fall of 40 mg/dL below range like a rise of 110 mg/dL above it.
    """
    f = 1.509 * (np.log(np.clip(g, 1.0, None)) ** 1.084 - 5.381)
    return np.asarray(10.0 * f * f, dtype=float)


@dataclass
class MPCSettings:
    """MPC tuning (see :func:`closed_loop`); defaults chosen on the tuning scenario only."""

    horizon: int = 120
    cost: str = "band"  # "band", "risk" (Kovatchev) or "quadratic" ((G - target)^2)
    target: float = 130.0
    #: "band" cost: (G - band_high)^2 above, low_weight (band_low - G)^2 below (mg/dL)^2
    band_low: float = 100.0
    band_high: float = 150.0
    low_weight: float = 10.0
    hypo_guard: float = 80.0
    guard_quantile: float = 0.5
    effort: float = 60.0
    multipliers: F64 = field(default_factory=lambda: MPC_MULTIPLIERS.copy())
    n_members: int = 20
    #: meal-bolus scales tried at an announced meal (basal at 1x; horizon ``meal_horizon``)
    bolus_scales: tuple[float, ...] = (1.0,)
    meal_horizon: int = 240


def closed_loop(
    params: UVAPadovaParams,
    meals: F64,
    controller: str = "bb",
    *,
    seed: int = 0,
    sensor: CGMSensor | None = None,
    period: int = 5,
    mpc: MPCSettings | None = None,
    log: list[dict[str, F64]] | None = None,
) -> ClosedLoopResult:
    """Simulate N virtual patients under ``controller`` ('bb' baseline or 'mpc').

    Both controllers see only the CGM and the announced meals and give the same meal bolus
    (C/CR + [CGM > 150] (CGM - 140)/CF); the MPC personalises an EnKF Bergman twin online
    from that CGM and the insulin it gave and modulates the basal rate every ``period`` min.
    ``log`` (optional list) receives the MPC's decisions (time, multiplier, guard quantile).
    """
    if controller not in ("bb", "mpc"):
        raise ValueError(f"controller must be 'bb' or 'mpc', got {controller!r}")
    cfg = mpc or MPCSettings()
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
        twin = GlucoseEnKF(n_members=cfg.n_members, seed=seed)
        twin.start(params["BW"], basal, glucose0=last)
    for k in range(t_len):
        j = k / sensor.sample_time
        reading = j == int(j)
        if reading and k > 0:
            last = np.clip(sim.gsub + noise[:, int(j)], sensor.low, sensor.high)
            if twin is not None:
                twin.assimilate(last)
        meal = meals[:, k]
        bolus = np.where(meal > 0, meal / cr + (last > 150) * (last - 140.0) / cf, 0.0)
        if twin is not None and len(cfg.bolus_scales) > 1 and (meal > 0).any():
            sc = np.asarray(cfg.bolus_scales, dtype=float)
            scale, _g = _mpc_choose(twin, basal, meal, bolus, cfg, np.ones_like(sc), sc,
                                    cfg.meal_horizon)  # fmt: skip
            bolus = np.where(meal > 0, bolus * scale, bolus)
        if twin is not None and k % period == 0:
            mult, guard = _mpc_choose(twin, basal, meal, bolus, cfg)
            rate = basal * mult
            if log is not None:
                log.append({"t": np.full(n, float(k)), "multiplier": mult, "guard_q": guard})
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
    cfg: MPCSettings,
    mults: F64 | None = None,
    scales: F64 | None = None,
    horizon: int | None = None,
) -> tuple[F64, F64]:
    """Chosen candidate (N,) and its predicted guard quantile of min glucose (mg/dL).

    Candidates are pairs (basal multiplier, meal-bolus scale); by default the settings'
    multipliers with the bolus as given, the multiplier is returned. With ``scales`` (and
    ``mults`` of the same length) the chosen bolus scale is returned instead.

    Every candidate multiplier is simulated on every ensemble member over the horizon
    (5-min RK4 steps, the member's disturbance relaxing as in the twin's forecasts). Cost:
    mean over members of the summed risk (or squared deviation) plus ``effort`` per step
    times (m - 1)^2. Candidates whose ``guard_quantile`` of predicted minimum glucose is below
    ``hypo_guard`` are excluded; if none is left the pump suspends (m = 0).
    """
    choose_scale = scales is not None
    mults = np.asarray(cfg.multipliers if mults is None else mults, dtype=float)
    scales = np.ones_like(mults) if scales is None else np.asarray(scales, dtype=float)
    n, m, kc = twin.n_twins_, twin.n_members, mults.size
    x = np.tile(twin.ens_[:N_STATES], (1, kc))  # columns: candidate-major, then twin, member
    theta = np.tile(twin.ens_[N_STATES:], (1, kc))
    p = _params_from_theta(theta, np.tile(twin.bw_, kc), np.tile(twin.ub_, kc))
    mult = np.repeat(mults, n * m)
    base_rate = np.tile(np.repeat(basal, m), kc) * mult
    x[5] += np.tile(np.repeat(1000.0 * meal, m), kc)
    x[3] += np.tile(np.repeat(bolus, m), kc) * np.repeat(scales, n * m)
    dist = np.tile(twin.dist_, kc)
    decay = np.exp(-5.0 / twin.disturbance_tau_min)
    steps = (cfg.horizon if horizon is None else horizon) // 5
    cost = np.zeros(x.shape[1])
    gmin = np.full(x.shape[1], np.inf)
    u = np.stack([base_rate, np.zeros_like(base_rate)])
    for _ in range(steps):
        x = bergman_step(x, u, p, dt=5.0)
        x[0] = np.maximum(x[0] + 5.0 * dist, 1.0)
        dist = decay * dist
        if cfg.cost == "risk":
            cost += bg_risk(x[0])
        elif cfg.cost == "band":
            cost += np.maximum(x[0] - cfg.band_high, 0.0) ** 2
            cost += cfg.low_weight * np.maximum(cfg.band_low - x[0], 0.0) ** 2
        else:
            cost += (x[0] - cfg.target) ** 2
        gmin = np.minimum(gmin, x[0])
    cost = cost.reshape(kc, n, m).mean(axis=2)  # (K, N)
    cost = cost + (cfg.effort * steps * ((mults - 1.0) ** 2 + (scales - 1.0) ** 2))[:, None]
    guard = np.quantile(gmin.reshape(kc, n, m), cfg.guard_quantile, axis=2)  # (K, N)
    cost = np.where(guard >= cfg.hypo_guard, cost, np.inf)
    best = np.argmin(cost, axis=0)
    safest = int(np.argmin(scales)) if choose_scale else int(np.argmin(mults))
    best = np.where(np.isfinite(cost.min(axis=0)), best, safest)
    cols = np.arange(n)
    chosen = scales[best] if choose_scale else mults[best]
    return np.asarray(chosen, dtype=float), np.asarray(guard[best, cols], dtype=float)


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
