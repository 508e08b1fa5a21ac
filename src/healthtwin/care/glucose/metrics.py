"""Accuracy and control metrics for glucose (all glucose values in mg/dL).

* RMSE (mg/dL), MARD (%) = mean(|pred - ref| / ref) · 100.
* Clarke error grid (Clarke et al. 1987) zones A–E.
* Interval coverage (%) of nominal prediction intervals.
* Time in range 70–180, below 70, above 180 (%); LBGI / HBGI (Kovatchev et al. 2006):
  f(G) = 1.509 ((ln G)^1.084 - 5.381), r = 10 f^2, LBGI = mean(r·[f<0]), HBGI = mean(r·[f>0]).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]


def rmse(pred: F64, ref: F64) -> float:
    """Root-mean-square error (mg/dL) over finite pairs."""
    p, r = np.asarray(pred, dtype=float), np.asarray(ref, dtype=float)
    ok = np.isfinite(p) & np.isfinite(r)
    return float(np.sqrt(np.mean((p[ok] - r[ok]) ** 2)))


def mard(pred: F64, ref: F64) -> float:
    """Mean absolute relative difference (%)."""
    p, r = np.asarray(pred, dtype=float), np.asarray(ref, dtype=float)
    ok = np.isfinite(p) & np.isfinite(r) & (r > 0)
    return float(100.0 * np.mean(np.abs(p[ok] - r[ok]) / r[ok]))


def clarke_zones(ref: F64, pred: F64) -> NDArray[np.str_]:
    """Clarke error-grid zone ('A'..'E') of each (reference, prediction) pair (mg/dL)."""
    y = np.asarray(ref, dtype=float).ravel()
    p = np.asarray(pred, dtype=float).ravel()
    zone = np.full(y.shape, "B", dtype="<U1")
    a = ((y <= 70) & (p <= 70)) | (np.abs(p - y) <= 0.2 * y)
    e = ((y <= 70) & (p >= 180)) | ((y >= 180) & (p <= 70))
    c = ((y >= 70) & (y <= 290) & (p >= y + 110)) | (
        (y >= 130) & (y <= 180) & (p <= (7 / 5) * y - 182)
    )
    d = (
        ((y >= 240) & (p >= 70) & (p <= 180))
        | ((y <= 175 / 3) & (p >= 70) & (p <= 180))
        | ((y >= 175 / 3) & (y <= 70) & (p >= (6 / 5) * y))
    )
    zone[d] = "D"
    zone[c] = "C"
    zone[e] = "E"
    zone[a] = "A"
    return zone


def zone_percentages(ref: F64, pred: F64) -> dict[str, float]:
    """Percentage (%) of pairs in each Clarke zone."""
    z = clarke_zones(ref, pred)
    return {k: float(100.0 * np.mean(z == k)) for k in "ABCDE"}


def coverage(ref: F64, low: F64, high: F64) -> float:
    """Percentage (%) of reference values inside [low, high]."""
    r = np.asarray(ref, dtype=float)
    ok = np.isfinite(r)
    return float(100.0 * np.mean((r[ok] >= np.asarray(low)[ok]) & (r[ok] <= np.asarray(high)[ok])))


def risk_indices(g: F64) -> tuple[F64, F64]:
    """LBGI and HBGI (1) per patient for glucose traces (N, T) in mg/dL."""
    gg = np.clip(np.asarray(g, dtype=float), 1.0, None)
    f = 1.509 * (np.log(gg) ** 1.084 - 5.381)
    r = 10.0 * f**2
    return (r * (f < 0)).mean(axis=-1), (r * (f > 0)).mean(axis=-1)


def time_in_ranges(g: F64) -> dict[str, F64]:
    """Per-patient % time below 70, in 70–180 and above 180 mg/dL for traces (N, T)."""
    gg = np.asarray(g, dtype=float)
    return {
        "tbr": 100.0 * (gg < 70).mean(axis=-1),
        "tir": 100.0 * ((gg >= 70) & (gg <= 180)).mean(axis=-1),
        "tar": 100.0 * (gg > 180).mean(axis=-1),
    }


def cvga_zone(g: F64) -> NDArray[np.str_]:
    """Control-variability grid zone (Magni et al. 2008) per patient from traces (N, T).

    x = 2.5th percentile of glucose, y = 97.5th percentile (mg/dL). A: x >= 90 and y <= 180;
    B: x >= 70 and y <= 300 (not A); Lower C: 50 <= x < 70, y <= 180; Upper C: x >= 90,
    300 < y <= 400; Lower D: 50 <= x < 70, 180 < y <= 300; Upper D: 70 <= x < 90,
    300 < y <= 400; E: otherwise (x < 50 or y > 400 or x < 70 with y > 300).
    """
    gg = np.asarray(g, dtype=float)
    x = np.percentile(gg, 2.5, axis=-1)
    y = np.percentile(gg, 97.5, axis=-1)
    zone = np.full(x.shape, "E", dtype="<U7")
    zone[(x >= 70) & (x < 90) & (y > 300) & (y <= 400)] = "Upper D"
    zone[(x >= 50) & (x < 70) & (y > 180) & (y <= 300)] = "Lower D"
    zone[(x >= 90) & (y > 300) & (y <= 400)] = "Upper C"
    zone[(x >= 50) & (x < 70) & (y <= 180)] = "Lower C"
    zone[(x >= 70) & (y <= 300)] = "B"
    zone[(x >= 90) & (y <= 180)] = "A"
    return zone
