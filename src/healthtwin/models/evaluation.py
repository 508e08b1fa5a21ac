"""Evaluation of risk predictions and continuous forecasts, with bootstrap intervals.

Binary outcomes (y in {0, 1}, predicted probability p, unit ``1``): AUROC, Brier score,
calibration intercept and slope (logistic recalibration), integrated calibration index (ICI,
Austin & Steyerberg 2019, lowess-smoothed), calibration curve and decision-curve net benefit.
Continuous outcomes (reference y and prediction yhat in the outcome's unit): RMSE, MAE, MARD
(%) and prediction-interval coverage. Every metric has a percentile bootstrap interval
(seeded ``numpy.random.Generator``; resamples drawn as one (B x n) index array). Metric
functions accept (..., n) arrays and reduce the last axis, so a whole bootstrap is one call.
:func:`subgroup_breakdown` evaluates by any attribute and flags groups below a minimum size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats
from statsmodels.nonparametric.smoothers_lowess import lowess

__all__ = [
    "Estimate",
    "auroc",
    "bootstrap",
    "brier_score",
    "calibration_curve",
    "calibration_intercept",
    "calibration_slope",
    "evaluate_binary",
    "evaluate_continuous",
    "ici",
    "interval_coverage",
    "mae",
    "mard",
    "net_benefit",
    "rmse",
    "subgroup_breakdown",
]

FloatArray = NDArray[np.float64]
Metric = Callable[..., FloatArray | float]


@dataclass(frozen=True)
class Estimate:
    """A metric value with its percentile bootstrap interval.

    ``unit`` is UCUM (``1`` for probabilities and indices, ``%`` for MARD, the outcome's unit
    for RMSE/MAE); ``n_boot`` resamples, of which ``n_valid`` gave a finite value.
    """

    name: str
    value: float
    lower: float
    upper: float
    unit: str
    level: float
    n_boot: int
    n_valid: int

    def as_dict(self) -> dict[str, float | str | int]:
        """Plain dict (for JSON/tables)."""
        return asdict(self)


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _binary(y: ArrayLike, p: ArrayLike) -> tuple[FloatArray, FloatArray]:
    ya = np.asarray(y, dtype=float)
    pa = np.asarray(p, dtype=float)
    if ya.shape != pa.shape:
        raise ValueError(f"y has shape {ya.shape} but p has shape {pa.shape}")
    if ya.shape[-1] == 0:
        raise ValueError("y and p are empty")
    if not np.all((ya == 0.0) | (ya == 1.0)):
        raise ValueError("y must contain only 0 and 1")
    if not np.all((pa >= 0.0) & (pa <= 1.0)):
        raise ValueError("p must contain probabilities in [0, 1] (unit 1)")
    return ya, pa


def _continuous(y: ArrayLike, yhat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    ya = np.asarray(y, dtype=float)
    pa = np.asarray(yhat, dtype=float)
    if ya.shape != pa.shape:
        raise ValueError(f"y has shape {ya.shape} but yhat has shape {pa.shape}")
    if not (np.all(np.isfinite(ya)) and np.all(np.isfinite(pa))):
        raise ValueError("y and yhat must be finite")
    return ya, pa


def _logit(p: FloatArray, eps: float = 1e-12) -> FloatArray:
    q = np.clip(p, eps, 1.0 - eps)
    out: FloatArray = np.log(q) - np.log1p(-q)
    return out


def _expit(z: FloatArray) -> FloatArray:
    out: FloatArray = special.expit(z)
    return out


# --------------------------------------------------------------------------------------------
# binary metrics (reduce the last axis)
# --------------------------------------------------------------------------------------------


def auroc(y: ArrayLike, p: ArrayLike) -> FloatArray | float:
    """Area under the ROC curve (unit ``1``), Mann-Whitney form with mid-ranks for ties.

    AUROC = (R1 - n1 (n1 + 1) / 2) / (n1 n0), R1 the rank sum of positives. NaN where a row
    has a single class.
    """
    ya, pa = _binary(y, p)
    ranks = stats.rankdata(pa, axis=-1)
    n1 = ya.sum(axis=-1)
    n0 = ya.shape[-1] - n1
    r1 = (ranks * ya).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (r1 - n1 * (n1 + 1) / 2.0) / (n1 * n0)
    out = np.where((n1 > 0) & (n0 > 0), out, np.nan)
    return float(out) if out.ndim == 0 else out


def brier_score(y: ArrayLike, p: ArrayLike) -> FloatArray | float:
    """Brier score mean((p - y)^2) (unit ``1``)."""
    ya, pa = _binary(y, p)
    out = np.mean((pa - ya) ** 2, axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def _newton_logistic(
    x: FloatArray, y: FloatArray, offset: FloatArray, slope: bool, max_iter: int = 50
) -> FloatArray:
    """Batched logistic fit of y ~ a + b x (+ offset), rows independent. Returns (..., 2|1)."""
    k = 2 if slope else 1
    beta = np.zeros((*y.shape[:-1], k))
    ones = np.ones_like(x)
    D = np.stack([ones, x], axis=-1) if slope else ones[..., None]
    for _ in range(max_iter):
        eta = np.einsum("...nk,...k->...n", D, beta) + offset
        mu = _expit(eta)
        w = mu * (1.0 - mu)
        grad = np.einsum("...nk,...n->...k", D, y - mu)
        H = np.einsum("...nk,...n,...nl->...kl", D, w, D)
        with np.errstate(invalid="ignore"):
            try:
                step = np.linalg.solve(H, grad[..., None])[..., 0]
            except np.linalg.LinAlgError:
                step = np.full_like(beta, np.nan)
        beta = beta + step
        if np.all(~np.isfinite(step) | (np.abs(step) < 1e-10)):
            break
    return beta


def calibration_intercept(y: ArrayLike, p: ArrayLike) -> FloatArray | float:
    """Calibration-in-the-large a in logit P(y=1) = a + logit(p) (offset; ideal 0, log odds)."""
    ya, pa = _binary(y, p)
    lp = _logit(pa)
    out = _newton_logistic(lp, ya, lp, slope=False)[..., 0]
    return float(out) if out.ndim == 0 else out


def calibration_slope(y: ArrayLike, p: ArrayLike) -> FloatArray | float:
    """Calibration slope b in logit P(y=1) = a + b logit(p) (ideal 1, unit ``1``)."""
    ya, pa = _binary(y, p)
    lp = _logit(pa)
    out = _newton_logistic(lp, ya, np.zeros_like(lp), slope=True)[..., 1]
    return float(out) if out.ndim == 0 else out


def _smoothed_calibration(ya: FloatArray, pa: FloatArray, frac: float) -> FloatArray:
    """Lowess estimate of P(y=1 | p) at each p (1-D).

    Above 2000 patients, local fits are computed on a grid of spacing 0.5 % of the range of p
    and linearly interpolated between (lowess ``delta``), which keeps large-n cost near linear.
    """
    delta = 0.0 if pa.size <= 2000 else 0.005 * float(np.ptp(pa))
    fitted = lowess(ya, pa, frac=frac, it=0, delta=delta, return_sorted=False)
    return np.clip(np.asarray(fitted, dtype=float), 0.0, 1.0)


def ici(y: ArrayLike, p: ArrayLike, frac: float = 0.75) -> FloatArray | float:
    """Integrated calibration index (Austin & Steyerberg 2019), unit ``1``.

    ICI = mean_i |p_i - p_c(p_i)|, p_c the lowess smooth (span ``frac``, no robustness
    iterations) of y on p. For (B x n) input each row is smoothed separately (a Python loop
    over rows: lowess has no batched form). Above 2000 patients the smooth is interpolated
    between local fits 0.5 % of the range of p apart.
    """
    ya, pa = _binary(y, p)
    if ya.ndim == 1:
        return float(np.mean(np.abs(pa - _smoothed_calibration(ya, pa, frac))))
    flat_y = ya.reshape(-1, ya.shape[-1])
    flat_p = pa.reshape(-1, pa.shape[-1])
    # lowess has no batched form; one call per resample (each O(n * span)).
    vals = np.array(
        [
            np.mean(np.abs(pr - _smoothed_calibration(yr, pr, frac)))
            for yr, pr in zip(flat_y, flat_p, strict=True)
        ]
    )
    return vals.reshape(ya.shape[:-1])


def calibration_curve(
    y: ArrayLike, p: ArrayLike, n_bins: int = 10, strategy: str = "uniform", alpha: float = 0.05
) -> pd.DataFrame:
    """Binned calibration curve with Wilson intervals for the observed fraction.

    Bins as in scikit-learn's ``calibration_curve`` (``uniform`` on [0, 1] or ``quantile``);
    empty bins are omitted. Columns: ``bin``, ``n``, ``mean_predicted``, ``observed``,
    ``observed_lower``, ``observed_upper`` (all probabilities, unit ``1``).
    """
    ya, pa = _binary(y, p)
    if ya.ndim != 1:
        raise ValueError("calibration_curve takes 1-D y and p")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        edges = np.percentile(pa, np.linspace(0, 100, n_bins + 1))
    else:
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    idx = np.searchsorted(edges[1:-1], pa)  # same binning as scikit-learn
    n = np.bincount(idx, minlength=len(edges) - 1)
    s_p = np.bincount(idx, weights=pa, minlength=len(edges) - 1)
    s_y = np.bincount(idx, weights=ya, minlength=len(edges) - 1)
    keep = n > 0
    n_k, obs = n[keep], s_y[keep] / n[keep]
    z = stats.norm.ppf(1 - alpha / 2)
    centre = (obs + z**2 / (2 * n_k)) / (1 + z**2 / n_k)
    half = z * np.sqrt(obs * (1 - obs) / n_k + z**2 / (4 * n_k**2)) / (1 + z**2 / n_k)
    return pd.DataFrame(
        {
            "bin": np.flatnonzero(keep),
            "n": n_k,
            "mean_predicted": s_p[keep] / n_k,
            "observed": obs,
            # min/max guard against rounding at obs = 0 or 1 (Wilson always contains obs)
            "observed_lower": np.clip(np.minimum(centre - half, obs), 0, 1),
            "observed_upper": np.clip(np.maximum(centre + half, obs), 0, 1),
        }
    )


def net_benefit(y: ArrayLike, p: ArrayLike, thresholds: ArrayLike) -> pd.DataFrame:
    """Decision-curve net benefit (Vickers & Elkin 2006) over threshold probabilities.

    NB(t) = TP/n - FP/n * t / (1 - t), treating patients with p >= t. Also the treat-all
    strategy (prevalence - (1 - prevalence) t / (1 - t)) and treat-none (0). Unit ``1``
    (net true positives per patient).
    """
    ya, pa = _binary(y, p)
    if ya.ndim != 1:
        raise ValueError("net_benefit takes 1-D y and p (one row of patients)")
    t = np.asarray(thresholds, dtype=float)
    if np.any((t <= 0) | (t >= 1)):
        raise ValueError("thresholds must lie strictly between 0 and 1")
    n = ya.shape[-1]
    order = np.argsort(pa)
    ps, ys = pa[order], ya[order]
    # patients with p >= t are those from searchsorted(ps, t, 'left') to the end
    cum_pos_from_end = np.concatenate([np.cumsum(ys[::-1])[::-1], [0.0]])
    start = np.searchsorted(ps, t, side="left")
    tp = cum_pos_from_end[start]
    treated = n - start
    fp = treated - tp
    odds = t / (1 - t)
    prev = ya.mean()
    return pd.DataFrame(
        {
            "threshold": t,
            "net_benefit": tp / n - fp / n * odds,
            "treat_all": prev - (1 - prev) * odds,
            "treat_none": np.zeros_like(t),
        }
    )


# --------------------------------------------------------------------------------------------
# continuous metrics
# --------------------------------------------------------------------------------------------


def rmse(y: ArrayLike, yhat: ArrayLike) -> FloatArray | float:
    """Root mean squared error, in the unit of y."""
    ya, pa = _continuous(y, yhat)
    out = np.sqrt(np.mean((pa - ya) ** 2, axis=-1))
    return float(out) if np.ndim(out) == 0 else out


def mae(y: ArrayLike, yhat: ArrayLike) -> FloatArray | float:
    """Mean absolute error, in the unit of y."""
    ya, pa = _continuous(y, yhat)
    out = np.mean(np.abs(pa - ya), axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def mard(y: ArrayLike, yhat: ArrayLike) -> FloatArray | float:
    """Mean absolute relative difference 100 * mean(|yhat - y| / y), in %; y must be > 0."""
    ya, pa = _continuous(y, yhat)
    if np.any(ya <= 0):
        raise ValueError("MARD needs a strictly positive reference y")
    out = 100.0 * np.mean(np.abs(pa - ya) / ya, axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def interval_coverage(y: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> FloatArray | float:
    """Fraction of y inside [lower, upper] (unit ``1``)."""
    ya = np.asarray(y, dtype=float)
    lo = np.asarray(lower, dtype=float)
    hi = np.asarray(upper, dtype=float)
    if not (ya.shape == lo.shape == hi.shape):
        raise ValueError(f"y, lower, upper shapes differ: {ya.shape}, {lo.shape}, {hi.shape}")
    if np.any(lo > hi):
        raise ValueError("lower exceeds upper for some patients")
    out = np.mean((ya >= lo) & (ya <= hi), axis=-1)
    return float(out) if np.ndim(out) == 0 else out


# --------------------------------------------------------------------------------------------
# bootstrap and reports
# --------------------------------------------------------------------------------------------


def bootstrap(
    metric: Metric,
    *arrays: ArrayLike,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int | np.random.Generator | None = 0,
    name: str | None = None,
    unit: str = "1",
) -> Estimate:
    """Percentile bootstrap interval of ``metric(*arrays)`` over patients (first axis).

    All resample indices are drawn at once as a (n_boot x n) array and the metric is applied
    to the stacked resamples in one call. Resamples giving NaN (e.g. a single class for
    AUROC) are excluded and counted in ``n_valid``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    arrs = [np.asarray(a) for a in arrays]
    n = arrs[0].shape[0]
    if any(a.shape[0] != n for a in arrs):
        raise ValueError(f"arrays differ in number of patients: {[a.shape[0] for a in arrs]}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    value = float(metric(*arrs))
    idx = rng.integers(0, n, size=(n_boot, n))
    reps = np.asarray(metric(*(a[idx] for a in arrs)), dtype=float)
    ok = reps[np.isfinite(reps)]
    if ok.size:
        lo, hi = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    else:
        lo = hi = np.nan
    return Estimate(
        name=name or str(getattr(metric, "__name__", "metric")),
        value=value,
        lower=float(lo),
        upper=float(hi),
        unit=unit,
        level=1 - alpha,
        n_boot=n_boot,
        n_valid=int(ok.size),
    )


_BINARY: dict[str, tuple[Metric, str]] = {
    "auroc": (auroc, "1"),
    "brier": (brier_score, "1"),
    "calibration_intercept": (calibration_intercept, "1"),
    "calibration_slope": (calibration_slope, "1"),
    "ici": (ici, "1"),
}


def evaluate_binary(
    y: ArrayLike,
    p: ArrayLike,
    n_boot: int = 500,
    alpha: float = 0.05,
    seed: int = 0,
    metrics: Sequence[str] | None = None,
) -> dict[str, Estimate]:
    """AUROC, Brier, calibration intercept/slope and ICI with bootstrap intervals."""
    ya, pa = _binary(y, p)
    names = list(_BINARY) if metrics is None else list(metrics)
    unknown = set(names) - set(_BINARY)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}; choose from {sorted(_BINARY)}")
    rng = np.random.default_rng(seed)
    out = {}
    for nm in names:
        fn, unit = _BINARY[nm]
        out[nm] = bootstrap(fn, ya, pa, n_boot=n_boot, alpha=alpha, seed=rng, name=nm, unit=unit)
    return out


def evaluate_continuous(
    y: ArrayLike,
    yhat: ArrayLike,
    lower: ArrayLike | None = None,
    upper: ArrayLike | None = None,
    unit: str = "1",
    n_boot: int = 500,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, Estimate]:
    """RMSE, MAE (in ``unit``), MARD (%) and, given bounds, PI coverage, with bootstrap CIs."""
    ya, pa = _continuous(y, yhat)
    rng = np.random.default_rng(seed)
    out = {
        "rmse": bootstrap(
            rmse, ya, pa, n_boot=n_boot, alpha=alpha, seed=rng, name="rmse", unit=unit
        ),
        "mae": bootstrap(mae, ya, pa, n_boot=n_boot, alpha=alpha, seed=rng, name="mae", unit=unit),
    }
    if np.all(ya > 0):
        out["mard"] = bootstrap(
            mard, ya, pa, n_boot=n_boot, alpha=alpha, seed=rng, name="mard", unit="%"
        )
    if lower is not None and upper is not None:
        out["coverage"] = bootstrap(
            interval_coverage,
            ya,
            np.asarray(lower, dtype=float),
            np.asarray(upper, dtype=float),
            n_boot=n_boot,
            alpha=alpha,
            seed=rng,
            name="coverage",
            unit="1",
        )
    return out


def subgroup_breakdown(
    y: ArrayLike,
    p: ArrayLike,
    groups: ArrayLike,
    kind: str = "binary",
    min_size: int = 30,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Metrics per value of a subgroup attribute; every group is kept.

    One row per (group, metric) with ``n``, ``value``, ``lower``, ``upper``, ``unit`` and
    ``small`` (True where n < ``min_size``: an unreliable estimate, flagged, never dropped).
    Metrics undefined in a group (e.g. AUROC with one class) are NaN with a ``note``.
    ``kind`` is ``"binary"`` (p are probabilities) or ``"continuous"``.
    """
    g = np.asarray(groups)
    ya = np.asarray(y, dtype=float)
    pa = np.asarray(p, dtype=float)
    if not (g.shape[0] == ya.shape[0] == pa.shape[0]):
        raise ValueError(
            f"groups, y, p differ in length: {g.shape[0]}, {ya.shape[0]}, {pa.shape[0]}"
        )
    if kind not in ("binary", "continuous"):
        raise ValueError(f"kind must be 'binary' or 'continuous', got {kind!r}")
    rows: list[dict[str, object]] = []
    for level in pd.unique(g):
        mask = g == level
        n = int(mask.sum())
        yg, pg = ya[mask], pa[mask]
        note = ""
        if kind == "binary":
            if yg.min() == yg.max():
                note = "single outcome class: AUROC and calibration undefined"
                res = {}
                for nm in metrics or list(_BINARY):
                    if nm == "brier":
                        res[nm] = bootstrap(
                            brier_score, yg, pg, n_boot=n_boot, alpha=alpha, seed=seed, name=nm
                        )
                    else:
                        res[nm] = Estimate(nm, np.nan, np.nan, np.nan, "1", 1 - alpha, n_boot, 0)
            else:
                res = evaluate_binary(
                    yg, pg, n_boot=n_boot, alpha=alpha, seed=seed, metrics=metrics
                )
        else:
            res = evaluate_continuous(yg, pg, n_boot=n_boot, alpha=alpha, seed=seed)
        for est in res.values():
            rows.append(
                {
                    "group": level,
                    "n": n,
                    "small": n < min_size,
                    "metric": est.name,
                    "value": est.value,
                    "lower": est.lower,
                    "upper": est.upper,
                    "unit": est.unit,
                    "note": note,
                }
            )
    return pd.DataFrame(rows)
