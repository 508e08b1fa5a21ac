"""Personalisation: joint state and parameter estimation of Bergman-type glucose twins.

Each twin carries an ensemble of M members; a member is the Bergman state (8 values, see
:mod:`healthtwin.models.physiology.bergman`) augmented by four log-parameters
theta = (ln SI, ln p1, ln Gb, ln tau_m). All twins and members advance together in one array
of shape (12, N·M) — no per-patient loop.

* :class:`GlucoseEnKF` — stochastic ensemble Kalman filter (perturbed observations,
  Evensen 2003): K = C_xy / (C_yy + R), x_a = x_f + K (y + e - H x_f), e ~ N(0, R).
* :class:`GlucoseParticleFilter` — bootstrap particle filter with systematic resampling and
  parameter roughening (Gordon et al. 1993; Liu & West 2001 style jitter).
* :func:`map_fit` — batch maximum a posteriori fit of theta to a patient's history
  (Gaussian prior on theta, Gaussian CGM noise) by Levenberg–Marquardt.

Model error: the Bergman model is misspecified for UVA/Padova (and real) patients, so every
member also carries an unexplained glucose flux d (mg/dL/min) added to dG/dt, an
Ornstein–Uhlenbeck process (stationary sd ``disturbance_sd``, time constant
``disturbance_tau_min``). The filter estimates d from the CGM like any state; in forecasts it
relaxes to zero with that time constant, with innovations up to ``error_horizon_min`` only
(offset-free prediction, as disturbance states in
artificial-pancreas MPC). The defaults (0.5 mg/dL/min, 120 min) were selected on a tuning fold
of patients and seed (``benchmarks/glucose_evaluation.py --only forecast``).

Observations are CGM readings (mg/dL) of interstitial glucose Gs; inputs insulin (U/min) and
carbohydrate (g/min). Streaming: call :meth:`step` each minute and :meth:`assimilate` when a
reading arrives; batch: :meth:`fit` on (N, T) arrays with NaN for minutes without a reading.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from healthtwin.models.base import TwinModel, check_range
from healthtwin.models.physiology.bergman import (
    N_STATES,
    BergmanParams,
    basal_state,
    bergman_step,
    simulate_bergman,
)

F64 = NDArray[np.float64]
THETA_NAMES = ("SI", "p1", "Gb", "tau_m")
THETA_UNITS = ("/min/(mU/L)", "/min", "mg/dL", "min")
#: prior means (natural units) and log-sd of theta
PRIOR_MEAN = np.array([5e-4, 0.01, 140.0, 40.0])
PRIOR_LOG_SD = np.array([0.6, 0.5, 0.15, 0.3])
N_AUG = N_STATES + 4


def _params_from_theta(theta: F64, bw: F64, ub: F64) -> BergmanParams:
    """Bergman parameters for columns of ``theta`` (4, K) (log values)."""
    k = theta.shape[1]
    p = BergmanParams.population(k, bw=bw, ub=ub)
    e = np.exp(theta)
    p.SI, p.p1, p.Gb, p.tau_m = e[0], e[1], e[2], e[3]
    return p


@dataclass
class ParameterEstimate:
    """Posterior mean and 95 % interval of each parameter; arrays of shape (N,)."""

    name: str
    unit: str
    mean: F64
    low: F64
    high: F64


class GlucoseEnKF(TwinModel):
    """Ensemble Kalman filter twins (stochastic EnKF with perturbed observations)."""

    def __init__(
        self,
        n_members: int = 50,
        obs_sd: float = 10.0,
        glucose_process_sd: float = 0.5,
        theta_walk_sd: float = 0.002,
        forecast_walk_sd: float = 2.5,
        seed: int | None = 0,
        disturbance_sd: float = 0.5,
        disturbance_tau_min: float = 120.0,
        error_horizon_min: float | None = 120.0,
    ) -> None:
        self.error_horizon_min = error_horizon_min
        self.forecast_walk_sd = forecast_walk_sd
        self.disturbance_sd = disturbance_sd
        self.disturbance_tau_min = disturbance_tau_min
        self.n_members = n_members
        self.obs_sd = obs_sd
        self.glucose_process_sd = glucose_process_sd
        self.theta_walk_sd = theta_walk_sd
        self.seed = seed

    # -- set-up -------------------------------------------------------------------------
    def start(
        self, body_weight_kg: F64, basal_u_min: F64, glucose0: F64 | None = None
    ) -> GlucoseEnKF:
        """Initialise N twins from the prior; arrays (N,) in kg, U/min and mg/dL."""
        bw = np.atleast_1d(np.asarray(body_weight_kg, dtype=float))
        ub = np.broadcast_to(np.asarray(basal_u_min, dtype=float), bw.shape).copy()
        check_range("body_weight_kg", bw, 10.0, 250.0, "kg")
        check_range("basal_u_min", ub, 0.0, 0.2, "U/min")
        if self.n_members < 2:
            raise ValueError(f"n_members must be >= 2, got {self.n_members}")
        self.rng_ = np.random.default_rng(self.seed)
        n, m = bw.shape[0], self.n_members
        self.n_twins_ = n
        self.bw_ = np.repeat(bw, m)
        self.ub_ = np.repeat(ub, m)
        theta = np.log(PRIOR_MEAN)[:, None] + PRIOR_LOG_SD[:, None] * self.rng_.standard_normal(
            (4, n * m)
        )
        if glucose0 is not None:
            g0 = np.repeat(np.asarray(glucose0, dtype=float), m)
            check_range("glucose0", g0, 20.0, 600.0, "mg/dL")
            theta[2] = np.log(g0) + 0.05 * self.rng_.standard_normal(n * m)
        p = _params_from_theta(theta, self.bw_, self.ub_)
        x = basal_state(p)
        self.ens_ = np.vstack([x, theta])
        # unexplained glucose flux d (mg/dL/min), an Ornstein-Uhlenbeck model-error state
        self.dist_ = np.zeros(n * m)
        if self.disturbance_sd > 0:
            self.dist_ = self.disturbance_sd * self.rng_.standard_normal(n * m)
        self.t_ = 0.0
        return self

    def _ou(self, d: F64, dt: float, rng: np.random.Generator) -> F64:
        """Advance the disturbance d (mg/dL/min) by ``dt`` min (exact OU transition)."""
        a = np.exp(-dt / self.disturbance_tau_min)
        return a * d + self.disturbance_sd * np.sqrt(1.0 - a * a) * rng.standard_normal(d.shape)

    def _members(self, a: F64) -> F64:
        """Reshape (..., N·M) to (..., N, M)."""
        return a.reshape(*a.shape[:-1], self.n_twins_, self.n_members)

    def step(self, insulin_u_min: F64, cho_g_min: F64, dt: float = 1.0) -> None:
        """Propagate every member by ``dt`` min with each twin's inputs (N,)."""
        self._require_fitted("ens_")
        m = self.n_members
        u = np.stack(
            [
                np.repeat(np.asarray(insulin_u_min, dtype=float), m),
                np.repeat(np.asarray(cho_g_min, dtype=float), m),
            ]
        )
        theta = self.ens_[N_STATES:]
        p = _params_from_theta(theta, self.bw_, self.ub_)
        x = bergman_step(self.ens_[:N_STATES], u, p, dt)
        k = x.shape[1]
        if self.disturbance_sd > 0:
            x[0] += self.dist_ * dt
            self.dist_ = self._ou(self.dist_, dt, self.rng_)
        x[0] += self.glucose_process_sd * np.sqrt(dt) * self.rng_.standard_normal(k)
        x[0] = np.maximum(x[0], 1.0)
        theta = theta + self.theta_walk_sd * np.sqrt(dt) * self.rng_.standard_normal(theta.shape)
        self.ens_ = np.vstack([x, theta])
        self.t_ += dt

    def assimilate(self, cgm_mg_dl: F64) -> None:
        """Update every twin with one CGM reading (N,) in mg/dL; NaN skips that twin."""
        self._require_fitted("ens_")
        y = np.asarray(cgm_mg_dl, dtype=float)
        ok = np.isfinite(y)
        if not ok.any():
            return
        check_range("cgm_mg_dl", y[ok], 10.0, 700.0, "mg/dL")
        self.ens_ = np.ascontiguousarray(self.ens_)
        e = self._members(self.ens_)  # (12, N, M) view: updated in place, row by row
        m = self.n_members
        hx = e[7]
        dh = hx - hx.mean(axis=1, keepdims=True)
        # C_xy = sum_j x_j dh_j / (M-1): dh has zero mean, so x need not be centred
        cxy = np.einsum("knm,nm->kn", e, dh) / (m - 1)  # (12, N)
        cyy = np.einsum("nm,nm->n", dh, dh) / (m - 1)  # (N,)
        gain = cxy / (cyy + self.obs_sd**2)
        pert = y[:, None] + self.obs_sd * self.rng_.standard_normal((self.n_twins_, m))
        innov = np.where(ok[:, None], pert - hx, 0.0)
        if self.disturbance_sd > 0:
            d = self._members(self.dist_)  # view of dist_: updated in place
            d += (np.einsum("nm,nm->n", d, dh) / (m - 1) / (cyy + self.obs_sd**2))[:, None] * innov
        for k in range(N_AUG):  # 12 rows; avoids a (12, N, M) temporary
            e[k] += gain[k][:, None] * innov
        np.maximum(e[0], 1.0, out=e[0])
        np.maximum(e[7], 1.0, out=e[7])

    def fit(
        self, cgm: F64, insulin: F64, cho: F64, body_weight_kg: F64, basal_u_min: F64
    ) -> GlucoseEnKF:
        """Batch: run the filter through (N, T) records (minute grid, NaN = no reading)."""
        cgm = np.atleast_2d(np.asarray(cgm, dtype=float))
        insulin = np.atleast_2d(np.asarray(insulin, dtype=float))
        cho = np.atleast_2d(np.asarray(cho, dtype=float))
        if not (cgm.shape == insulin.shape == cho.shape):
            raise ValueError(
                f"cgm {cgm.shape}, insulin {insulin.shape} and cho {cho.shape} must have the same"
                " (patients, minutes) shape"
            )
        fin = np.isfinite(cgm)
        first_idx = np.argmax(fin, axis=1)
        first = np.where(fin.any(axis=1), cgm[np.arange(cgm.shape[0]), first_idx], 140.0)
        first = np.nan_to_num(first, nan=140.0)
        self.start(body_weight_kg, basal_u_min, glucose0=first)
        self.filtered_ = np.full(cgm.shape, np.nan)
        for k in range(cgm.shape[1]):
            if k > 0:
                self.step(insulin[:, k - 1], cho[:, k - 1])
            if np.isfinite(cgm[:, k]).any():
                self.assimilate(cgm[:, k])
            self.filtered_[:, k] = self._members(self.ens_[7]).mean(axis=1)
        return self

    # -- outputs ------------------------------------------------------------------------
    def estimates(self) -> list[ParameterEstimate]:
        """Posterior mean and 95 % ensemble interval of SI, p1, Gb, tau_m per twin."""
        self._require_fitted("ens_")
        th = self._members(np.exp(self.ens_[N_STATES:]))
        out = []
        for i, (name, unit) in enumerate(zip(THETA_NAMES, THETA_UNITS, strict=True)):
            q = np.quantile(th[i], [0.025, 0.975], axis=1)
            out.append(ParameterEstimate(name, unit, th[i].mean(axis=1), q[0], q[1]))
        return out

    def forecast(
        self,
        horizon_min: int,
        insulin_u_min: F64 | None = None,
        cho_g_min: F64 | None = None,
        *,
        include_sensor_noise: bool = True,
        si_factor: F64 | None = None,
    ) -> F64:
        """Simulated predictive samples of CGM (mg/dL), shape (N, M, horizon+1).

        Future inputs (N, horizon) default to basal insulin and no carbohydrate. The ensemble
        is copied: forecasting does not change the filter. ``si_factor`` (N, horizon) scales
        insulin sensitivity per minute (exercise as a sensitivity change). Model error over the horizon is a
        random walk added to the interstitial glucose, with ``forecast_walk_sd`` (mg/dL per sqrt(min)),
        calibrated once on simulated adults (see docs/glucose-twin.md), and the OU disturbance.
        Both get new innovations only up to ``error_horizon_min`` (120 min, the longest horizon
        whose intervals were checked against data; None = the whole horizon): beyond it the walk
        holds its value and the disturbance relaxes to zero, so long what-ifs propagate the
        uncertainty reached at 2 h through the physiology instead of an unbounded random walk.
        """
        self._require_fitted("ens_")
        n, m = self.n_twins_, self.n_members
        ins = (
            np.repeat(self.ub_.reshape(n, m)[:, :1], horizon_min, axis=1)
            if insulin_u_min is None
            else np.asarray(insulin_u_min, dtype=float)
        )
        cho = (
            np.zeros((n, horizon_min)) if cho_g_min is None else np.asarray(cho_g_min, dtype=float)
        )
        theta = self.ens_[N_STATES:]
        p = _params_from_theta(theta, self.bw_, self.ub_)
        rng = np.random.default_rng(self.rng_.integers(2**63))
        x = self.ens_[:N_STATES].copy()
        out = np.empty((n, m, horizon_min + 1))
        out[:, :, 0] = self._members(x[7])
        si0 = p.SI.copy()
        dist = self.dist_.copy()
        cap = horizon_min if self.error_horizon_min is None else int(self.error_horizon_min)
        decay = np.exp(-1.0 / self.disturbance_tau_min)
        for k in range(horizon_min):
            u = np.stack([np.repeat(ins[:, k], m), np.repeat(cho[:, k], m)])
            if si_factor is not None:
                p.SI = si0 * np.repeat(si_factor[:, k], m)
            x = bergman_step(x, u, p)
            if self.disturbance_sd > 0:
                x[0] += dist
                # beyond the calibrated horizon the disturbance only relaxes (no innovations)
                dist = self._ou(dist, 1.0, rng) if k < cap else dist * decay
            x[0] = np.maximum(x[0] + self.glucose_process_sd * rng.standard_normal(x.shape[1]), 1.0)
            out[:, :, k + 1] = self._members(x[7])
        steps = rng.standard_normal(out.shape)
        steps[:, :, cap + 1 :] = 0.0  # the walk holds its value beyond the calibrated horizon
        walk = np.cumsum(steps, axis=2) * self.forecast_walk_sd
        walk[:, :, 0] = 0.0
        out = np.maximum(out + walk, 1.0)
        if include_sensor_noise:
            out = out + self.obs_sd * rng.standard_normal(out.shape)
        return out


class GlucoseParticleFilter(GlucoseEnKF):
    """Bootstrap particle filter twins with systematic resampling and roughening."""

    def __init__(
        self,
        n_members: int = 200,
        obs_sd: float = 10.0,
        glucose_process_sd: float = 0.5,
        theta_walk_sd: float = 0.002,
        forecast_walk_sd: float = 2.5,
        roughening_sd: float = 0.02,
        seed: int | None = 0,
        disturbance_sd: float = 0.5,
        disturbance_tau_min: float = 120.0,
        error_horizon_min: float | None = 120.0,
    ) -> None:
        super().__init__(
            n_members, obs_sd, glucose_process_sd, theta_walk_sd, forecast_walk_sd, seed,
            disturbance_sd, disturbance_tau_min, error_horizon_min,
        )  # fmt: skip
        self.roughening_sd = roughening_sd

    def assimilate(self, cgm_mg_dl: F64) -> None:
        """Weight members by the Gaussian CGM likelihood, resample systematically (per twin)."""
        self._require_fitted("ens_")
        y = np.asarray(cgm_mg_dl, dtype=float)
        ok = np.isfinite(y)
        if not ok.any():
            return
        check_range("cgm_mg_dl", y[ok], 10.0, 700.0, "mg/dL")
        n, m = self.n_twins_, self.n_members
        e = self._members(self.ens_)
        logw = -0.5 * ((np.where(ok, y, 0.0)[:, None] - e[7]) / self.obs_sd) ** 2
        logw = np.where(ok[:, None], logw, 0.0)
        w = np.exp(logw - logw.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        cdf = np.cumsum(w, axis=1)
        cdf[:, -1] = 1.0
        pos = (self.rng_.random((n, 1)) + np.arange(m)[None]) / m
        idx = np.minimum((cdf[:, None, :] < pos[:, :, None]).sum(axis=2), m - 1)  # (N, M)
        e = np.take_along_axis(e, np.broadcast_to(idx[None], e.shape), axis=2)
        self.dist_ = np.take_along_axis(self._members(self.dist_), idx, axis=1).reshape(-1)
        e[N_STATES:] += self.roughening_sd * self.rng_.standard_normal(e[N_STATES:].shape)
        self.ens_ = np.ascontiguousarray(e).reshape(N_AUG, -1)


@dataclass
class MapFit:
    """Batch MAP fit of one patient: theta estimates with Laplace 95 % intervals."""

    estimates: list[ParameterEstimate]
    rmse_mg_dl: float
    fitted_cgm: F64


def map_fit(
    cgm: F64,
    insulin: F64,
    cho: F64,
    body_weight_kg: float,
    basal_u_min: float,
    obs_sd: float = 10.0,
    start: str = "basal",
) -> MapFit:
    """MAP estimate of theta for one patient from a minute-grid history (NaN = no reading).

    Minimises sum((y - Gs(theta))^2)/obs_sd^2 + sum(((theta - mu)/sd)^2) (Gaussian prior on
    log-parameters); intervals from the Gauss–Newton (Laplace) covariance (J^T J)^-1.
    ``start="basal"`` assumes the history starts at the basal steady state (G = Gb);
    ``"first_reading"`` starts glucose at the first CGM value.
    """
    if start not in ("basal", "first_reading"):
        raise ValueError(f"start must be 'basal' or 'first_reading', got {start!r}")
    y = np.asarray(cgm, dtype=float)
    obs = np.isfinite(y)
    if obs.sum() < 5:
        raise ValueError("cgm: need at least 5 readings for a MAP fit")
    ins = np.asarray(insulin, dtype=float)[None, :-1]
    c = np.asarray(cho, dtype=float)[None, :-1]
    bw = np.array([body_weight_kg])
    ub = np.array([basal_u_min])
    mu = np.log(PRIOR_MEAN)
    mu[2] = np.log(np.nanmedian(y[: max(30, int(obs.sum()))]))

    y0 = float(y[obs][0])

    def sim_batch(theta: F64) -> F64:
        """Simulated Gs (K, T) for parameter columns theta (4, K), all in one call."""
        k = theta.shape[1]
        p = _params_from_theta(theta, np.repeat(bw, k), np.repeat(ub, k))
        x0 = basal_state(p)
        if start == "first_reading":
            x0[0] = x0[7] = y0
        return np.asarray(
            simulate_bergman(p, np.repeat(ins, k, 0), np.repeat(c, k, 0), x0)[:, 7], dtype=float
        )

    step = 1e-4

    def resid(theta: F64) -> F64:
        r = (y[obs] - sim_batch(theta[:, None])[0, obs]) / obs_sd
        return np.concatenate([r, (theta - mu) / PRIOR_LOG_SD])

    def jac(theta: F64) -> F64:
        # forward differences, all 5 simulations batched (vectorised across perturbations)
        pert = theta[:, None] + np.hstack([np.zeros((4, 1)), step * np.eye(4)])
        g = sim_batch(pert)[:, obs]
        jr = -(g[1:] - g[0]).T / (step * obs_sd)
        return np.vstack([jr, np.diag(1.0 / PRIOR_LOG_SD)])

    def sim(theta: F64) -> F64:
        return sim_batch(theta[:, None])[0]

    sol = least_squares(resid, mu.copy(), jac=jac, method="lm", x_scale=PRIOR_LOG_SD)
    cov = np.linalg.pinv(sol.jac.T @ sol.jac)
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    fitted = sim(sol.x)
    ests = [
        ParameterEstimate(
            name,
            unit,
            np.exp(sol.x[i : i + 1]),
            np.exp(sol.x[i : i + 1] - 1.96 * sd[i]),
            np.exp(sol.x[i : i + 1] + 1.96 * sd[i]),
        )
        for i, (name, unit) in enumerate(zip(THETA_NAMES, THETA_UNITS, strict=True))
    ]
    rmse = float(np.sqrt(np.mean((fitted[obs] - y[obs]) ** 2)))
    return MapFit(ests, rmse, fitted)
