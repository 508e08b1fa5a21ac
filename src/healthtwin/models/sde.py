"""Stochastic differential equations for health trajectories.

The model is the Itô SDE

    dH = mu(H, X, t) dt + sigma(H, X, t) dW,

integrated on a uniform grid with step ``dt`` by

* Euler–Maruyama:  H_{n+1} = H_n + mu dt + sigma dW_n                 (strong 1/2, weak 1)
* Milstein:        ... + 1/2 sigma sigma' (dW_n^2 - dt)               (strong 1, weak 1)

where ``sigma' = d sigma / dH``. Every ensemble is vectorised over paths (first axis), seeded
through :class:`numpy.random.Generator`, and only the requested time points are stored, so
100,000 paths x 1,000 steps run without holding the full path array.

``H`` carries the unit of the modelled quantity (e.g. ``mg/dL``); time is in the unit of
``dt`` (e.g. ``d`` or ``a``); ``mu`` is in H-unit per time unit and ``sigma`` in H-unit per
square-root time unit. Results from :meth:`SDEModel.simulate` are *simulated* values and are
labelled so in :class:`QuantileBands`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from healthtwin.models.base import TwinModel, check_range

FloatArray = NDArray[np.float64]
#: Coefficient signature: ``f(h, x, t) -> array`` with ``h`` of shape (n_paths,), ``x`` the
#: per-path covariates (shape (n_paths, ...) or ``None``) and ``t`` a float time.
Coefficient = Callable[[FloatArray, "FloatArray | None", float], "FloatArray | float"]

__all__ = [
    "QuantileBands",
    "SDEModel",
    "brownian_increments",
    "euler_maruyama",
    "gbm_exact",
    "gbm_model",
    "milstein",
    "ou_exact_moments",
    "ou_model",
]


@dataclass(frozen=True)
class QuantileBands:
    """Pointwise quantiles of a simulated ensemble (``label`` says they are simulated).

    ``times``: (n_times,) in ``time_unit``; ``quantiles``: (n_q,) probabilities;
    ``values``: (n_q, n_times) in ``unit``; ``mean``/``std``: (n_times,) in ``unit`` with the
    Monte Carlo standard error of the mean in ``mean_se``.
    """

    times: FloatArray
    quantiles: FloatArray
    values: FloatArray
    mean: FloatArray
    std: FloatArray
    mean_se: FloatArray
    n_paths: int
    unit: str
    time_unit: str
    label: str = field(default="simulated")

    def as_dict(self) -> dict[str, object]:
        """Plain, JSON-ready view (lists), labelled ``simulated``."""
        return {
            "label": self.label,
            "unit": self.unit,
            "time_unit": self.time_unit,
            "n_paths": self.n_paths,
            "times": self.times.tolist(),
            "quantiles": {
                f"q{q:g}": v.tolist() for q, v in zip(self.quantiles, self.values, strict=True)
            },
            "mean": self.mean.tolist(),
            "mean_se": self.mean_se.tolist(),
        }


def brownian_increments(
    n_paths: int, n_steps: int, dt: float, rng: np.random.Generator
) -> FloatArray:
    """Independent Brownian increments dW ~ N(0, dt), shape (n_paths, n_steps), unit sqrt(time)."""
    if n_paths < 1 or n_steps < 1:
        raise ValueError(f"n_paths={n_paths} and n_steps={n_steps} must both be >= 1")
    if not dt > 0:
        raise ValueError(f"dt={dt} must be > 0 (time unit)")
    return rng.standard_normal((n_paths, n_steps)) * np.sqrt(dt)


def _as_vec(v: FloatArray | float, n: int) -> FloatArray:
    arr = np.asarray(v, dtype=float)
    return np.broadcast_to(arr, (n,)) if arr.ndim == 0 else arr


def _integrate(
    drift: Coefficient,
    diffusion: Coefficient,
    diffusion_dh: Coefficient | None,
    h0: FloatArray,
    x: FloatArray | None,
    t0: float,
    dt: float,
    dw: FloatArray | None,
    n_steps: int,
    rng: np.random.Generator | None,
    record_every: int,
) -> FloatArray:
    n = h0.shape[0]
    n_rec = n_steps // record_every + 1
    out = np.empty((n, n_rec))
    h = h0.astype(float).copy()
    out[:, 0] = h
    sq = np.sqrt(dt)
    for k in range(n_steps):
        t = t0 + k * dt
        if dw is None:
            assert rng is not None
            inc = rng.standard_normal(n) * sq
        else:
            inc = dw[:, k]
        s = _as_vec(diffusion(h, x, t), n)
        step = _as_vec(drift(h, x, t), n) * dt + s * inc
        if diffusion_dh is not None:
            step = step + 0.5 * s * _as_vec(diffusion_dh(h, x, t), n) * (inc * inc - dt)
        h = h + step
        if (k + 1) % record_every == 0:
            out[:, (k + 1) // record_every] = h
    return out


def euler_maruyama(
    drift: Coefficient,
    diffusion: Coefficient,
    h0: ArrayLike,
    dw: ArrayLike,
    dt: float,
    *,
    x: ArrayLike | None = None,
    t0: float = 0.0,
) -> FloatArray:
    """Euler–Maruyama on given increments ``dw`` (n_paths, n_steps); returns (n_paths, n_steps+1).

    Units: ``h0`` in the H unit, ``dt`` in the time unit, ``dw`` in sqrt(time unit).
    """
    dw_a = np.asarray(dw, dtype=float)
    h0_a = np.broadcast_to(np.asarray(h0, dtype=float), (dw_a.shape[0],))
    x_a = None if x is None else np.asarray(x, dtype=float)
    return _integrate(drift, diffusion, None, h0_a, x_a, t0, dt, dw_a, dw_a.shape[1], None, 1)


def milstein(
    drift: Coefficient,
    diffusion: Coefficient,
    diffusion_dh: Coefficient,
    h0: ArrayLike,
    dw: ArrayLike,
    dt: float,
    *,
    x: ArrayLike | None = None,
    t0: float = 0.0,
) -> FloatArray:
    """Milstein scheme on given increments; ``diffusion_dh`` is d sigma / dH (1/sqrt(time))."""
    dw_a = np.asarray(dw, dtype=float)
    h0_a = np.broadcast_to(np.asarray(h0, dtype=float), (dw_a.shape[0],))
    x_a = None if x is None else np.asarray(x, dtype=float)
    return _integrate(
        drift, diffusion, diffusion_dh, h0_a, x_a, t0, dt, dw_a, dw_a.shape[1], None, 1
    )


class SDEModel(TwinModel):
    """Vectorised, seeded ensemble simulator for dH = mu(H,X,t) dt + sigma(H,X,t) dW.

    Parameters
    ----------
    drift, diffusion:
        ``f(h, x, t)`` callables returning arrays of shape (n_paths,) (or scalars); ``drift`` in
        ``unit``/``time_unit``, ``diffusion`` in ``unit``/sqrt(``time_unit``).
    diffusion_dh:
        d sigma / dH, required for ``method="milstein"``.
    method:
        ``"euler"`` (Euler–Maruyama) or ``"milstein"``.
    dt:
        Step in ``time_unit`` (> 0).
    unit, time_unit:
        UCUM units of H and of time (e.g. ``"mg/dL"``, ``"d"``).
    lower, upper:
        Optional valid range of H; :meth:`simulate` raises if ``h0`` is outside it.
    """

    def __init__(
        self,
        drift: Coefficient,
        diffusion: Coefficient,
        diffusion_dh: Coefficient | None = None,
        method: str = "euler",
        dt: float = 0.01,
        unit: str = "1",
        time_unit: str = "a",
        lower: float = -np.inf,
        upper: float = np.inf,
    ) -> None:
        self.drift = drift
        self.diffusion = diffusion
        self.diffusion_dh = diffusion_dh
        self.method = method
        self.dt = dt
        self.unit = unit
        self.time_unit = time_unit
        self.lower = lower
        self.upper = upper

    def _check(self) -> None:
        if self.method not in ("euler", "milstein"):
            raise ValueError(f"method={self.method!r}: expected 'euler' or 'milstein'")
        if self.method == "milstein" and self.diffusion_dh is None:
            raise ValueError("method='milstein' needs diffusion_dh (d sigma / dH)")
        if not (np.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"dt={self.dt} {self.time_unit} must be a finite positive step")

    def fit(self, *args: object, **kwargs: object) -> SDEModel:
        """No parameters are learned (coefficients are given); validates settings, returns self."""
        self._check()
        self.fitted_ = True
        return self

    def simulate(
        self,
        h0: ArrayLike,
        t_end: float,
        *,
        n_paths: int | None = None,
        x: ArrayLike | None = None,
        t0: float = 0.0,
        record_every: int = 1,
        seed: int | np.random.Generator | None = 0,
        dw: ArrayLike | None = None,
    ) -> FloatArray:
        """Simulated paths, shape (n_paths, n_recorded) in ``unit`` at :meth:`times`.

        ``h0``: scalar or (n_paths,) initial state. ``t_end - t0`` must be a whole number of
        steps ``dt``. ``record_every`` keeps every k-th step (memory: n_paths x n_steps/k).
        ``dw``: optional Brownian increments (n_paths, n_steps) to reuse a path (coupling).
        """
        self._check()
        n_steps = self._n_steps(t0, t_end)
        if record_every < 1 or n_steps % record_every:
            raise ValueError(
                f"record_every={record_every} must be >= 1 and divide n_steps={n_steps}"
            )
        h0_a = np.asarray(h0, dtype=float)
        if h0_a.ndim == 0:
            if n_paths is None:
                raise ValueError("n_paths is required when h0 is a scalar")
            h0_a = np.full(n_paths, float(h0_a))
        elif n_paths is not None and h0_a.shape[0] != n_paths:
            raise ValueError(f"h0 has {h0_a.shape[0]} paths but n_paths={n_paths}")
        if not np.all(np.isfinite(h0_a)):
            raise ValueError("h0 contains non-finite values")
        check_range("h0", h0_a, self.lower, self.upper, self.unit)
        dw_a = None
        rng = None
        if dw is not None:
            dw_a = np.asarray(dw, dtype=float)
            if dw_a.shape != (h0_a.shape[0], n_steps):
                raise ValueError(
                    f"dw has shape {dw_a.shape}; expected (n_paths, n_steps) = "
                    f"({h0_a.shape[0]}, {n_steps})"
                )
        else:
            rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        x_a = None if x is None else np.asarray(x, dtype=float)
        dh = self.diffusion_dh if self.method == "milstein" else None
        return _integrate(
            self.drift,
            self.diffusion,
            dh,
            h0_a,
            x_a,
            t0,
            self.dt,
            dw_a,
            n_steps,
            rng,
            record_every,
        )

    def _n_steps(self, t0: float, t_end: float) -> int:
        span = (t_end - t0) / self.dt
        n = int(round(span))
        if n < 1 or abs(span - n) > 1e-9 * max(1.0, span):
            raise ValueError(
                f"t_end - t0 = {t_end - t0:g} {self.time_unit} must be a positive whole "
                f"number of steps dt = {self.dt:g} {self.time_unit}"
            )
        return n

    def times(self, t_end: float, *, t0: float = 0.0, record_every: int = 1) -> FloatArray:
        """Recorded time points (``time_unit``) matching :meth:`simulate`'s second axis."""
        n = self._n_steps(t0, t_end)
        return np.asarray(t0 + self.dt * np.arange(0, n + 1, record_every), dtype=float)

    def quantile_bands(
        self,
        h0: ArrayLike,
        t_end: float,
        *,
        quantiles: ArrayLike = (0.05, 0.25, 0.5, 0.75, 0.95),
        n_paths: int | None = None,
        x: ArrayLike | None = None,
        t0: float = 0.0,
        record_every: int = 1,
        seed: int | np.random.Generator | None = 0,
    ) -> QuantileBands:
        """Simulate and summarise: pointwise quantile bands, mean (with MC SE) and SD."""
        paths = self.simulate(
            h0, t_end, n_paths=n_paths, x=x, t0=t0, record_every=record_every, seed=seed
        )
        q = np.asarray(quantiles, dtype=float)
        if np.any((q < 0) | (q > 1)):
            raise ValueError(f"quantiles {q.tolist()} must lie in [0, 1]")
        n = paths.shape[0]
        sd = paths.std(axis=0, ddof=1) if n > 1 else np.zeros(paths.shape[1])
        return QuantileBands(
            times=self.times(t_end, t0=t0, record_every=record_every),
            quantiles=q,
            values=np.quantile(paths, q, axis=0),
            mean=paths.mean(axis=0),
            std=sd,
            mean_se=sd / np.sqrt(n),
            n_paths=n,
            unit=self.unit,
            time_unit=self.time_unit,
        )


def ou_model(
    theta: float,
    mu: float,
    sigma: float,
    *,
    method: str = "euler",
    dt: float = 0.01,
    unit: str = "1",
    time_unit: str = "a",
) -> SDEModel:
    """Ornstein–Uhlenbeck dH = theta (mu - H) dt + sigma dW (theta in 1/time, mu in unit)."""
    if theta <= 0 or sigma < 0:
        raise ValueError(f"theta={theta} must be > 0 and sigma={sigma} >= 0")
    return SDEModel(
        drift=lambda h, x, t: theta * (mu - h),
        diffusion=lambda h, x, t: sigma,
        diffusion_dh=lambda h, x, t: 0.0,
        method=method,
        dt=dt,
        unit=unit,
        time_unit=time_unit,
    )


def gbm_model(
    mu: float,
    sigma: float,
    *,
    method: str = "euler",
    dt: float = 0.01,
    unit: str = "1",
    time_unit: str = "a",
) -> SDEModel:
    """Geometric Brownian motion dH = mu H dt + sigma H dW (mu in 1/time, sigma 1/sqrt(time))."""
    if sigma < 0:
        raise ValueError(f"sigma={sigma} must be >= 0")
    return SDEModel(
        drift=lambda h, x, t: mu * h,
        diffusion=lambda h, x, t: sigma * h,
        diffusion_dh=lambda h, x, t: sigma,
        method=method,
        dt=dt,
        unit=unit,
        time_unit=time_unit,
        lower=0.0,
    )


def ou_exact_moments(
    h0: float, theta: float, mu: float, sigma: float, t: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Exact OU mean and variance at times ``t``: mean in unit, variance in unit^2."""
    ta = np.asarray(t, dtype=float)
    e = np.exp(-theta * ta)
    mean = h0 * e + mu * (1.0 - e)
    var = sigma**2 / (2.0 * theta) * (1.0 - e * e)
    return mean, var


def gbm_exact(h0: ArrayLike, mu: float, sigma: float, t: ArrayLike, w: ArrayLike) -> FloatArray:
    """Exact GBM solution H(t) = H0 exp((mu - sigma^2/2) t + sigma W(t)) on the path ``w``."""
    return np.asarray(h0, dtype=float) * np.exp(
        (mu - 0.5 * sigma**2) * np.asarray(t, dtype=float) + sigma * np.asarray(w, dtype=float)
    )
