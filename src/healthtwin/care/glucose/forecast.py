"""Glucose forecasts at 30, 60 and 120 min with prediction intervals (simulated, mg/dL).

A rolling evaluation runs a personalisation filter through CGM records; at each forecast
origin the ensemble is propagated forward under the inputs known at that time and the
predictive distribution of the CGM reading (state uncertainty + model-error disturbance +
sensor noise) gives the median forecast and the central ``level`` interval (quantiles).

Online interval calibration (``calibrate=True``): every forecast whose target time has
passed gives a standardised error r = (y - median) / s, s = the predictive half-width /
z_level. Per patient and horizon the interval half-widths are multiplied by
c = sqrt((n0 + sum r^2) / (n0 + n)) — the model-error scale learned from the twin's own
past forecast errors (n0 = ``calibration_prior`` pseudo-errors with r^2 = 1). Only errors
already observed at the origin are used, so the evaluation stays honest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy.stats import norm

from healthtwin.care.glucose import metrics as M
from healthtwin.care.glucose.personalize import GlucoseEnKF

F64 = NDArray[np.float64]
HORIZONS = (30, 60, 120)


@dataclass
class ForecastEvaluation:
    """Forecasts (N, origins) per horizon (min) with ``level`` intervals, and their scores."""

    origins: NDArray[np.intp]
    horizons: tuple[int, ...]
    level: float
    median: dict[int, F64]
    low: dict[int, F64]
    high: dict[int, F64]
    reference: dict[int, F64]
    scores: dict[int, dict[str, float]] = field(default_factory=dict)
    simulated: bool = True


class IntervalCalibrator:
    """Online per-patient scale of prediction intervals from realised standardised errors.

    ``update(r)`` adds r = (observed - median) / s for N patients (NaN ignored), s being the
    raw predictive sd; ``factor()`` is c = sqrt((n0 + sum r^2) / (n0 + n)) (1, shape (N,)),
    shrunk towards 1 by ``prior`` pseudo-errors. Multiply the raw half-widths by c.
    """

    def __init__(self, n: int, prior: float = 10.0) -> None:
        if prior <= 0:
            raise ValueError(f"calibration prior must be > 0 pseudo-errors, got {prior}")
        self.prior = prior
        self.sum_r2 = np.zeros(n)
        self.count = np.zeros(n)

    def update(self, r: F64) -> None:
        """Add one standardised error per patient (NaN = none for that patient)."""
        r = np.asarray(r, dtype=float)
        ok = np.isfinite(r)
        self.sum_r2[ok] += r[ok] ** 2
        self.count[ok] += 1

    def factor(self) -> F64:
        """Current interval scale per patient (1)."""
        return np.asarray(
            np.sqrt((self.prior + self.sum_r2) / (self.prior + self.count)), dtype=float
        )


def rolling_forecast(
    twin: GlucoseEnKF,
    cgm: F64,
    insulin: F64,
    cho: F64,
    body_weight_kg: F64,
    basal_u_min: F64,
    *,
    horizons: tuple[int, ...] = HORIZONS,
    every_min: int = 15,
    warmup_min: int = 120,
    level: float = 0.9,
    future_inputs: Literal["known", "basal"] = "basal",
    calibrate: bool = True,
    calibration_prior: float = 10.0,
    score_from_min: int | None = None,
) -> ForecastEvaluation:
    """Filter through (N, T) minute-grid records and forecast from every ``every_min`` min.

    ``future_inputs="basal"`` (default, honest) assumes basal insulin and no carbohydrate
    after the origin; ``"known"`` uses the recorded future insulin and meals (announced
    meals). Scores against the recorded CGM at origin + horizon: RMSE (mg/dL), MARD (%),
    Clarke zones (%), coverage (%) of the ``level`` interval, over origins from
    ``score_from_min`` (default ``warmup_min``; e.g. 1440 = score day 2 after a day of
    personalisation). ``calibrate`` rescales the intervals online (module docstring).
    """
    cgm = np.atleast_2d(np.asarray(cgm, dtype=float))
    insulin = np.atleast_2d(np.asarray(insulin, dtype=float))
    cho = np.atleast_2d(np.asarray(cho, dtype=float))
    n, t_len = cgm.shape
    hmax = max(horizons)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    fin = np.isfinite(cgm)
    first = np.where(fin.any(axis=1), cgm[np.arange(n), np.argmax(fin, axis=1)], 140.0)
    twin.start(body_weight_kg, basal_u_min, glucose0=np.nan_to_num(first, nan=140.0))
    origins = np.arange(warmup_min, t_len - hmax, every_min)
    z = float(norm.ppf((1 + level) / 2))
    cal = {h: IntervalCalibrator(n, calibration_prior) for h in horizons}
    raw_sd = {h: np.full((n, origins.size), np.nan) for h in horizons}
    qs = [(1 - level) / 2, 0.5, (1 + level) / 2]
    med = {h: np.full((n, origins.size), np.nan) for h in horizons}
    lo = {h: np.full((n, origins.size), np.nan) for h in horizons}
    hi = {h: np.full((n, origins.size), np.nan) for h in horizons}
    ub = np.broadcast_to(np.asarray(basal_u_min, dtype=float), (n,))
    j = 0
    for k in range(t_len):
        if k > 0:
            twin.step(insulin[:, k - 1], cho[:, k - 1])
        if fin[:, k].any():
            twin.assimilate(cgm[:, k])
            if calibrate:  # learn from forecasts whose target is this reading
                for h in horizons:
                    jj = np.flatnonzero(origins[:j] + h == k)
                    if jj.size:
                        cal[h].update((cgm[:, k] - med[h][:, jj[0]]) / raw_sd[h][:, jj[0]])
        if j < origins.size and k == origins[j]:
            if future_inputs == "known":
                fi, fc = insulin[:, k : k + hmax], cho[:, k : k + hmax]
            else:
                fi, fc = np.repeat(ub[:, None], hmax, axis=1), np.zeros((n, hmax))
            samples = twin.forecast(hmax, fi, fc)
            for h in horizons:
                q = np.quantile(samples[:, :, h], qs, axis=1)
                raw_sd[h][:, j] = np.maximum((q[2] - q[0]) / (2 * z), 1e-6)
                c = cal[h].factor() if calibrate else np.ones(n)
                lo[h][:, j] = q[1] - c * (q[1] - q[0])
                med[h][:, j] = q[1]
                hi[h][:, j] = q[1] + c * (q[2] - q[1])
            j += 1
    ref = {h: cgm[:, origins + h] for h in horizons}
    ev = ForecastEvaluation(origins, tuple(horizons), level, med, lo, hi, ref)
    scored = origins >= (warmup_min if score_from_min is None else score_from_min)
    for h in horizons:
        ok = np.isfinite(ref[h]) & scored[None, :]
        zones = M.zone_percentages(ref[h][ok], med[h][ok])
        ev.scores[h] = {
            "rmse_mg_dl": M.rmse(med[h][ok], ref[h][ok]),
            "mard_pct": M.mard(med[h][ok], ref[h][ok]),
            "coverage_pct": M.coverage(ref[h][ok], lo[h][ok], hi[h][ok]),
            "n": float(ok.sum()),
            "nominal_pct": 100.0 * level,
            **{f"clarke_{z}_pct": v for z, v in zones.items()},
        }
    return ev
