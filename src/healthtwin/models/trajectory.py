"""Health-trajectory ODEs fitted to irregular, noisy longitudinal data by maximum likelihood.

Linear model (Vallée, seed 004)::

    dH/dt = alpha H + sum_i beta_i X_i(t) - gamma T(t)

General model: dH/dt = f(H, inputs, theta, t) with a user-supplied ``f`` and named inputs
(environment E, treatment T, biomarkers B, comorbidities C, social S, genetics G, ...).

Observation model: y_ij = H_i(t_ij) + eps_ij, eps ~ N(0, sigma^2) i.i.d.; ``H_i(0) = h0_i`` is
given (e.g. the baseline measurement). Inputs are piecewise constant: the value in column j
holds on (t_{i,j-1}, t_ij] with t_{i,-1} = 0. For the linear model the solution over an
interval of length D with input u = beta.X - gamma T is exact::

    H(t + D) = e^{alpha D} H(t) + (e^{alpha D} - 1)/alpha * u        (-> D u as alpha -> 0)

Units: H in ``unit`` (e.g. ``mg/dL``), time in ``time_unit`` (e.g. ``a``); alpha in
/``time_unit``, beta_i in ``unit``/(``time_unit`` x unit of X_i), gamma in ``unit``/
(``time_unit`` x unit of T), sigma in ``unit``. Intervals are Wald intervals from the observed
information (numerical Hessian of the negative log-likelihood at the MLE; sigma on the log
scale). Missing observations are NaN in ``y``; patients may have different times.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, stats

from healthtwin.models.base import TwinModel, check_range

FloatArray = NDArray[np.float64]
#: General right-hand side: ``f(h, inputs, theta, t) -> dH/dt`` with ``h`` and ``t`` of shape
#: (n,), ``inputs`` a mapping name -> (n,) array (values on the current interval), ``theta``
#: the parameter vector.
RHS = Callable[[FloatArray, Mapping[str, FloatArray], FloatArray, FloatArray], FloatArray]

__all__ = ["FitSummary", "LinearTrajectoryODE", "TrajectoryODE", "linear_solution"]


@dataclass(frozen=True)
class FitSummary:
    """Estimates with standard errors and Wald intervals (``level``), one row per parameter."""

    table: pd.DataFrame
    loglik: float
    n_obs: int
    level: float


def _grid(
    times: ArrayLike, y: ArrayLike | None, h0: ArrayLike
) -> tuple[FloatArray, FloatArray | None, FloatArray]:
    t = np.asarray(times, dtype=float)
    h = np.asarray(h0, dtype=float)
    if t.ndim == 1:
        t = np.broadcast_to(t, (h.size, t.size)).copy()
    if t.ndim != 2:
        raise ValueError(f"times must be (n_patients, n_obs) or (n_obs,); got shape {t.shape}")
    n, m = t.shape
    if h.shape != (n,):
        raise ValueError(f"h0 must have shape ({n},) (one baseline per patient); got {h.shape}")
    if not np.all(np.isfinite(h)):
        raise ValueError(
            f"h0 has non-finite values at patients {np.flatnonzero(~np.isfinite(h))[:5].tolist()}"
        )
    ya = None if y is None else np.asarray(y, dtype=float)
    pad = ~np.isfinite(t)
    if np.any(pad):
        # ragged panels: NaN times are allowed only where y is missing too; they are filled
        # with unit steps after the previous time so the recursion stays defined
        if ya is None or ya.shape != t.shape or np.any(np.isfinite(ya[pad])):
            raise ValueError("times contain non-finite values where y is observed (or no y)")
        t = t.copy()
        for j in range(t.shape[1]):
            prev = t[:, j - 1] if j else np.zeros(t.shape[0])
            t[:, j] = np.where(pad[:, j], prev + 1.0, t[:, j])
    if np.any(t[:, 0] <= 0):
        i = int(np.flatnonzero(t[:, 0] <= 0)[0])
        raise ValueError(f"times[{i}, 0] = {t[i, 0]:g} must be > 0 (time since baseline)")
    dif = np.diff(t, axis=1)
    if np.any(dif <= 0):
        i, j = (int(v) for v in np.argwhere(dif <= 0)[0])
        raise ValueError(f"times[{i}] not strictly increasing at column {j + 1}")
    if ya is not None:
        if ya.shape != (n, m):
            raise ValueError(f"y must have shape {(n, m)} like times; got {ya.shape}")
        if not np.any(np.isfinite(ya)):
            raise ValueError("y has no finite observation")
    return t, ya, h


def _input(a: ArrayLike | None, n: int, m: int, name: str) -> FloatArray | None:
    """Normalise an input to (n, m, k) piecewise-constant values (k inputs)."""
    if a is None:
        return None
    arr = np.asarray(a, dtype=float)
    if arr.ndim == 1 and arr.shape[0] == n:  # one constant input per patient
        arr = np.broadcast_to(arr[:, None, None], (n, m, 1))
    elif arr.ndim == 2 and arr.shape == (n, m):  # one time-varying input
        arr = arr[:, :, None]
    elif arr.ndim == 2 and arr.shape[0] == n:  # k constant inputs per patient
        arr = np.broadcast_to(arr[:, None, :], (n, m, arr.shape[1]))
    elif not (arr.ndim == 3 and arr.shape[:2] == (n, m)):
        raise ValueError(
            f"{name} must be (n,), (n, k), (n, m) or (n, m, k) with n={n}, m={m}; got {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    return np.asarray(arr, dtype=float)


def _phi(alpha: float, d: FloatArray) -> FloatArray:
    ad = alpha * d
    small = np.abs(ad) < 1e-8
    safe = np.where(small, 1.0, alpha)
    return np.where(small, d * (1 + 0.5 * ad), np.expm1(ad) / safe)


def linear_solution(alpha: float, h0: ArrayLike, times: ArrayLike, u: ArrayLike) -> FloatArray:
    """Exact H at ``times`` (n, m) for dH/dt = alpha H + u with piecewise-constant u (n, m)."""
    t = np.asarray(times, dtype=float)
    ua = np.asarray(u, dtype=float)
    h = np.asarray(h0, dtype=float).copy()
    out = np.empty(t.shape)
    prev = np.zeros(t.shape[0])
    for j in range(t.shape[1]):
        d = t[:, j] - prev
        h = np.exp(alpha * d) * h + _phi(alpha, d) * ua[:, j]
        out[:, j] = h
        prev = t[:, j]
    return out


def _wald_table(
    names: Sequence[str], theta: FloatArray, cov: FloatArray, level: float, log_last: bool
) -> pd.DataFrame:
    z = stats.norm.ppf(0.5 + level / 2)
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    lo, hi = theta - z * se, theta + z * se
    est = theta.copy()
    if log_last:  # sigma estimated on the log scale
        est[-1], lo[-1], hi[-1] = np.exp(theta[-1]), np.exp(lo[-1]), np.exp(hi[-1])
        se[-1] = est[-1] * se[-1]
    return pd.DataFrame({"estimate": est, "se": se, "ci_low": lo, "ci_high": hi}, index=names)


def _hessian(fun: Callable[[FloatArray], float], x: FloatArray) -> FloatArray:
    """Central finite-difference Hessian of a scalar function."""
    k = x.size
    h = 1e-4 * np.maximum(np.abs(x), 1e-1)
    hess = np.empty((k, k))
    f0 = fun(x)
    for i in range(k):
        ei = np.zeros(k)
        ei[i] = h[i]
        hess[i, i] = (fun(x + ei) - 2 * f0 + fun(x - ei)) / h[i] ** 2
        for j in range(i + 1, k):
            ej = np.zeros(k)
            ej[j] = h[j]
            v = (fun(x + ei + ej) - fun(x + ei - ej) - fun(x - ei + ej) + fun(x - ei - ej)) / (
                4 * h[i] * h[j]
            )
            hess[i, j] = hess[j, i] = v
    return hess


def _gauss_nll(pred: FloatArray, y: FloatArray, log_sigma: float) -> float:
    ok = np.isfinite(y)
    r = (y - pred)[ok]
    s2 = np.exp(2 * log_sigma)
    return float(0.5 * r.size * np.log(2 * np.pi * s2) + 0.5 * np.sum(r * r) / s2)


class LinearTrajectoryODE(TwinModel):
    """dH/dt = alpha H + sum_i beta_i X_i(t) - gamma T(t), fitted by maximum likelihood.

    Parameters: ``unit``/``time_unit`` (UCUM) of H and time; ``level`` of the intervals;
    ``alpha_bounds`` (/``time_unit``) searched for alpha. The MLE is exact: for fixed alpha the
    solution is linear in (beta, gamma), which are profiled out by least squares, and alpha is
    found by a bounded 1-D search of the profile likelihood.

    Learned: ``alpha_``, ``beta_`` (k,), ``gamma_``, ``sigma_``, ``cov_`` (covariance of
    (alpha, beta, gamma, log sigma)), ``summary_`` (:class:`FitSummary`).
    """

    def __init__(
        self,
        unit: str = "1",
        time_unit: str = "a",
        level: float = 0.95,
        alpha_bounds: tuple[float, float] = (-5.0, 5.0),
    ) -> None:
        self.unit = unit
        self.time_unit = time_unit
        self.level = level
        self.alpha_bounds = alpha_bounds

    # -- design: columns of H that are linear in (beta, gamma) for fixed alpha
    @staticmethod
    def _design(
        alpha: float, t: FloatArray, h0: FloatArray, x: FloatArray | None, tr: FloatArray | None
    ) -> tuple[FloatArray, FloatArray]:
        n, m = t.shape
        cols: list[FloatArray] = []
        if x is not None:
            cols.extend(x[:, :, k] for k in range(x.shape[2]))
        if tr is not None:
            cols.append(-tr[:, :, 0])
        base = linear_solution(alpha, h0, t, np.zeros((n, m)))
        design = (
            np.stack([linear_solution(alpha, np.zeros(n), t, c) for c in cols], axis=-1)
            if cols
            else np.zeros((n, m, 0))
        )
        return base, design

    def _profile(
        self,
        alpha: float,
        t: FloatArray,
        y: FloatArray,
        h0: FloatArray,
        x: FloatArray | None,
        tr: FloatArray | None,
    ) -> tuple[float, FloatArray, float]:
        base, design = self._design(alpha, t, h0, x, tr)
        ok = np.isfinite(y)
        r = (y - base)[ok]
        a = design[ok]
        coef = np.asarray(
            np.linalg.lstsq(a, r, rcond=None)[0] if a.shape[1] else np.zeros(0), dtype=float
        )
        rss = float(np.sum((r - a @ coef) ** 2))
        nobs = r.size
        s2 = max(rss / nobs, 1e-300)
        nll = 0.5 * nobs * (float(np.log(2 * np.pi * s2)) + 1.0)
        return nll, coef, s2

    def fit(
        self,
        times: ArrayLike,
        y: ArrayLike,
        h0: ArrayLike,
        X: ArrayLike | None = None,
        T: ArrayLike | None = None,
    ) -> LinearTrajectoryODE:
        """Fit from observation ``times`` (n, m) (``time_unit`` since baseline, increasing),
        observations ``y`` (n, m) in ``unit`` (NaN = missing), baselines ``h0`` (n,), optional
        covariates ``X`` and treatment ``T`` (piecewise constant, see module docstring)."""
        t, ya, h = _grid(times, y, h0)
        assert ya is not None
        n, m = t.shape
        x = _input(X, n, m, "X")
        tr = _input(T, n, m, "T")
        if tr is not None and tr.shape[2] != 1:
            raise ValueError("T must hold a single treatment input")
        lo, hi = self.alpha_bounds
        res = optimize.minimize_scalar(
            lambda a: self._profile(a, t, ya, h, x, tr)[0],
            bounds=(lo, hi),
            method="bounded",
            options={"xatol": 1e-10},
        )
        alpha = float(res.x)
        if min(alpha - lo, hi - alpha) < 1e-6 * (hi - lo):
            raise ValueError(
                f"alpha estimate {alpha:g} /{self.time_unit} is at the search bound "
                f"{self.alpha_bounds}; widen alpha_bounds"
            )
        _, coef, s2 = self._profile(alpha, t, ya, h, x, tr)
        k = 0 if x is None else x.shape[2]
        names = ["alpha"] + [f"beta_{i}" for i in range(k)]
        if tr is not None:
            names.append("gamma")
        names.append("sigma")
        theta = np.concatenate([[alpha], coef, [0.5 * np.log(s2)]])

        def nll(th: FloatArray) -> float:
            u = np.zeros((n, m))
            if x is not None:
                u = u + np.einsum("nmk,k->nm", x, th[1 : 1 + k])
            if tr is not None:
                u = u - th[1 + k] * tr[:, :, 0]
            return _gauss_nll(linear_solution(float(th[0]), h, t, u), ya, float(th[-1]))

        hess = _hessian(nll, theta)
        try:
            cov = np.asarray(np.linalg.inv(hess), dtype=float)
        except np.linalg.LinAlgError as exc:
            raise ValueError(
                "observed information is singular: parameters not identifiable"
            ) from exc
        self.alpha_ = alpha
        self.beta_ = coef[:k]
        self.gamma_ = float(coef[k]) if tr is not None else 0.0
        self.sigma_ = float(np.sqrt(s2))
        self.theta_ = theta
        self.cov_ = cov
        self.param_names_ = names
        self.has_T_ = tr is not None
        self.n_features_in_ = k
        self.summary_ = FitSummary(
            table=_wald_table(names, theta, cov, self.level, log_last=True),
            loglik=-nll(theta),
            n_obs=int(np.isfinite(ya).sum()),
            level=self.level,
        )
        self._data_ = (t, ya, h, x, tr)
        return self

    def profile_interval_alpha(self) -> tuple[float, float]:
        """Profile-likelihood interval for alpha (/``time_unit``) at ``level``.

        Solves 2 (l_max - l_p(alpha)) = chi2_1(level) on each side of the MLE, where l_p
        profiles out beta, gamma and sigma exactly. Better than Wald when the likelihood in
        alpha is skewed (few visits, short follow-up)."""
        self._require_fitted("_data_")
        t, ya, h, x, tr = self._data_
        crit = 0.5 * float(stats.chi2.ppf(self.level, df=1))
        best = self._profile(self.alpha_, t, ya, h, x, tr)[0]

        def g(a: float) -> float:
            return self._profile(a, t, ya, h, x, tr)[0] - best - crit

        lo_b, hi_b = self.alpha_bounds
        se = float(np.sqrt(self.cov_[0, 0]))
        ends = []
        for sign, bound in ((-1.0, lo_b), (1.0, hi_b)):
            step = max(se, 1e-6)
            a = self.alpha_ + sign * step
            while g(a) < 0:
                step *= 2
                a = self.alpha_ + sign * step
                if (a - bound) * sign >= 0:
                    raise ValueError(
                        f"profile interval for alpha reaches the search bound {bound:g}; "
                        "widen alpha_bounds"
                    )
            ends.append(float(optimize.brentq(g, *sorted((self.alpha_, a)), xtol=1e-12)))
        return ends[0], ends[1]

    def _u(
        self, theta: FloatArray, n: int, m: int, x: FloatArray | None, tr: FloatArray | None
    ) -> FloatArray:
        k = self.n_features_in_
        u = np.zeros((n, m))
        if k:
            if x is None or x.shape[2] != k:
                raise ValueError(f"X with {k} covariate(s) is required (fitted with {k})")
            u = u + np.einsum("nmk,k->nm", x, theta[1 : 1 + k])
        if self.has_T_:
            if tr is None:
                raise ValueError("T is required: the model was fitted with a treatment input")
            u = u - theta[1 + k] * tr[:, :, 0]
        return u

    def predict(
        self,
        times: ArrayLike,
        h0: ArrayLike,
        X: ArrayLike | None = None,
        T: ArrayLike | None = None,
    ) -> FloatArray:
        """Expected H (``unit``) at ``times``, shape (n, m)."""
        self._require_fitted("theta_")
        t, _, h = _grid(times, None, h0)
        n, m = t.shape
        u = self._u(self.theta_, n, m, _input(X, n, m, "X"), _input(T, n, m, "T"))
        return linear_solution(self.alpha_, h, t, u)

    def predict_interval(
        self,
        times: ArrayLike,
        h0: ArrayLike,
        X: ArrayLike | None = None,
        T: ArrayLike | None = None,
        *,
        include_noise: bool = False,
        n_draws: int = 400,
        seed: int | None = 0,
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(estimate, low, high) at ``level``: parameter uncertainty by drawing from the
        asymptotic normal of the MLE; ``include_noise`` adds observation noise (a prediction
        interval for a new measurement). Each array (n, m) in ``unit``."""
        self._require_fitted("theta_")
        t, _, h = _grid(times, None, h0)
        n, m = t.shape
        x, tr = _input(X, n, m, "X"), _input(T, n, m, "T")
        rng = np.random.default_rng(seed)
        draws = rng.multivariate_normal(self.theta_, self.cov_, size=n_draws)
        sims = np.stack(
            [linear_solution(float(d[0]), h, t, self._u(d, n, m, x, tr)) for d in draws]
        )
        if include_noise:
            sims = sims + rng.standard_normal(sims.shape) * np.exp(draws[:, -1])[:, None, None]
        q = np.quantile(sims, [(1 - self.level) / 2, (1 + self.level) / 2], axis=0)
        return self.predict(times, h0, X, T), q[0], q[1]

    def simulate(
        self,
        times: ArrayLike,
        h0: ArrayLike,
        X: ArrayLike | None = None,
        T: ArrayLike | None = None,
        *,
        seed: int | np.random.Generator | None = 0,
    ) -> FloatArray:
        """Simulated noisy observations (n, m) in ``unit`` from the fitted model."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        mean = self.predict(times, h0, X, T)
        return mean + self.sigma_ * rng.standard_normal(mean.shape)


class TrajectoryODE(TwinModel):
    """General dH/dt = f(H, inputs, theta, t) fitted by maximum likelihood.

    ``f``: vectorised right-hand side (see :data:`RHS`); ``param_names`` and ``theta0`` (initial
    guess) name and start the parameters; ``n_substeps`` classical Runge–Kutta (RK4) steps per
    observation interval (error O(h^4)); ``lower``/``upper`` the valid range of H (``unit``):
    predictions leaving it raise :class:`~healthtwin.models.base.OutOfRangeError` unless
    ``allow_extrapolation``. Learned: ``theta_``, ``sigma_``, ``cov_``, ``summary_``.
    """

    def __init__(
        self,
        f: RHS,
        param_names: Sequence[str],
        theta0: ArrayLike,
        unit: str = "1",
        time_unit: str = "a",
        n_substeps: int = 20,
        level: float = 0.95,
        lower: float = -np.inf,
        upper: float = np.inf,
        allow_extrapolation: bool = False,
    ) -> None:
        self.f = f
        self.param_names = param_names
        self.theta0 = theta0
        self.unit = unit
        self.time_unit = time_unit
        self.n_substeps = n_substeps
        self.level = level
        self.lower = lower
        self.upper = upper
        self.allow_extrapolation = allow_extrapolation

    def _solve(
        self, theta: FloatArray, t: FloatArray, h0: FloatArray, inputs: Mapping[str, FloatArray]
    ) -> FloatArray:
        n, m = t.shape
        out = np.empty((n, m))
        h = h0.copy()
        prev = np.zeros(n)
        for j in range(m):
            step = (t[:, j] - prev) / self.n_substeps
            inp = {k: v[:, j] for k, v in inputs.items()}
            tt = prev.copy()
            for _ in range(self.n_substeps):
                k1 = self.f(h, inp, theta, tt)
                k2 = self.f(h + 0.5 * step * k1, inp, theta, tt + 0.5 * step)
                k3 = self.f(h + 0.5 * step * k2, inp, theta, tt + 0.5 * step)
                k4 = self.f(h + step * k3, inp, theta, tt + step)
                h = h + step / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
                tt = tt + step
            out[:, j] = h
            prev = t[:, j]
        return out

    def _inputs(
        self, inputs: Mapping[str, ArrayLike] | None, n: int, m: int
    ) -> dict[str, FloatArray]:
        res: dict[str, FloatArray] = {}
        for k, v in (inputs or {}).items():
            arr = _input(v, n, m, f"inputs[{k!r}]")
            assert arr is not None
            if arr.shape[2] != 1:
                raise ValueError(f"inputs[{k!r}] must be one input per name")
            res[k] = arr[:, :, 0]
        return res

    def fit(
        self,
        times: ArrayLike,
        y: ArrayLike,
        h0: ArrayLike,
        inputs: Mapping[str, ArrayLike] | None = None,
    ) -> TrajectoryODE:
        """Maximum likelihood for (theta, log sigma) with BFGS; Wald intervals from the
        numerical observed information. Shapes as in :meth:`LinearTrajectoryODE.fit`."""
        t, ya, h = _grid(times, y, h0)
        assert ya is not None
        n, m = t.shape
        inp = self._inputs(inputs, n, m)
        th0 = np.asarray(self.theta0, dtype=float)
        if th0.shape != (len(self.param_names),):
            raise ValueError(f"theta0 needs {len(self.param_names)} values (param_names)")
        resid0 = ya - self._solve(th0, t, h, inp)
        s0 = float(np.nanstd(resid0)) or 1.0

        def nll(th: FloatArray) -> float:
            with np.errstate(all="ignore"):
                pred = self._solve(th[:-1], t, h, inp)
            if not np.all(np.isfinite(pred)):
                return 1e300
            return _gauss_nll(pred, ya, float(th[-1]))

        start = np.concatenate([th0, [np.log(s0)]])
        res = optimize.minimize(nll, start, method="BFGS", options={"gtol": 1e-6})
        res = optimize.minimize(
            nll,
            res.x,
            method="Nelder-Mead",
            options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000},
        )
        theta = np.asarray(res.x, dtype=float)
        cov = np.asarray(np.linalg.inv(_hessian(nll, theta)), dtype=float)
        names = [*self.param_names, "sigma"]
        self.theta_ = theta[:-1]
        self.sigma_ = float(np.exp(theta[-1]))
        self.cov_ = cov
        self.summary_ = FitSummary(
            table=_wald_table(names, theta, cov, self.level, log_last=True),
            loglik=-float(res.fun),
            n_obs=int(np.isfinite(ya).sum()),
            level=self.level,
        )
        return self

    def predict(
        self,
        times: ArrayLike,
        h0: ArrayLike,
        inputs: Mapping[str, ArrayLike] | None = None,
        theta: ArrayLike | None = None,
    ) -> FloatArray:
        """H (``unit``) at ``times`` (n, m) using ``theta`` (default: the fitted ``theta_``)."""
        th = np.asarray(theta, dtype=float) if theta is not None else None
        if th is None:
            self._require_fitted("theta_")
            th = self.theta_
        t, _, h = _grid(times, None, h0)
        n, m = t.shape
        out = self._solve(th, t, h, self._inputs(inputs, n, m))
        check_range(
            "predicted H",
            out,
            self.lower,
            self.upper,
            self.unit,
            allow_extrapolation=self.allow_extrapolation,
        )
        return out

    def simulate(
        self,
        times: ArrayLike,
        h0: ArrayLike,
        inputs: Mapping[str, ArrayLike] | None = None,
        *,
        theta: ArrayLike | None = None,
        sigma: float | None = None,
        seed: int | np.random.Generator | None = 0,
    ) -> FloatArray:
        """Simulated noisy observations (n, m) in ``unit``."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        mean = self.predict(times, h0, inputs, theta)
        s = self.sigma_ if sigma is None else sigma
        return mean + s * rng.standard_normal(mean.shape)
