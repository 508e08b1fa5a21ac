"""Sample size and power for PROCOVA (ANCOVA on a prognostic score) and unadjusted designs.

Total sample size for an r:1 (treatment:control) randomised trial analysed by ANCOVA whose
prognostic covariate explains a fraction R² of the outcome variance (Schuler et al. 2021;
EMA qualification opinion on PROCOVA, 2022):

    n = (1 + r)² / r · (z₁₋α + z₁₋β)² · σ² (1 − R²) / Δ²  +  z²₁₋α / 2

σ is the outcome standard deviation (in the outcome's unit), Δ the treatment effect (same
unit), α the one-sided level. R² = 0 gives the unadjusted two-sample design (plus the same
small-sample correction). Binary endpoints use the Bernoulli variance p̄(1 − p̄) and Δ = p₁ − p₀
(linear-probability ANCOVA, risk difference).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from healthtwin.models.base import check_range


def _check(sigma: float, delta: float, r2: float, alpha: float, ratio: float) -> None:
    check_range("sigma", sigma, 1e-300, math.inf, "outcome unit")
    if not np.isfinite(delta) or delta == 0:
        raise ValueError(f"delta = {delta!r}: the treatment effect must be finite and non-zero")
    check_range("r2", r2, 0.0, 0.999999, "1")
    check_range("alpha (one-sided)", alpha, 1e-12, 0.5, "1")
    check_range("ratio (treatment:control)", ratio, 1e-6, 1e6, "1")


def procova_sample_size(
    sigma: float,
    delta: float,
    r2: float = 0.0,
    power: float = 0.9,
    alpha: float = 0.025,
    ratio: float = 1.0,
) -> int:
    """Total sample size (patients, unit "1") for PROCOVA / ANCOVA, rounded up.

    ``sigma`` and ``delta`` share the outcome's unit; ``alpha`` is one-sided; ``ratio`` = r in r:1.
    """
    _check(sigma, delta, r2, alpha, ratio)
    check_range("power", power, 1e-9, 1 - 1e-9, "1")
    za = stats.norm.ppf(1 - alpha)
    zb = stats.norm.ppf(power)
    n = (1 + ratio) ** 2 / ratio * (za + zb) ** 2 * sigma**2 * (1 - r2) / delta**2 + za**2 / 2
    return math.ceil(n - 1e-9)


def procova_power(
    n: ArrayLike,
    sigma: float,
    delta: float,
    r2: float = 0.0,
    alpha: float = 0.025,
    ratio: float = 1.0,
) -> NDArray[np.float64]:
    """Power (unit "1") at total sample size(s) ``n``: the formula above solved for 1 − β."""
    _check(sigma, delta, r2, alpha, ratio)
    n_arr = np.asarray(n, dtype=float)
    za = stats.norm.ppf(1 - alpha)
    check_range("n (total patients)", n_arr, za**2 / 2, math.inf, "1")
    core = (n_arr - za**2 / 2) * ratio * delta**2 / ((1 + ratio) ** 2 * sigma**2 * (1 - r2))
    return np.asarray(stats.norm.cdf(np.sqrt(core) - za), dtype=float)


def binary_sample_size(
    p0: float,
    p1: float,
    r2: float = 0.0,
    power: float = 0.9,
    alpha: float = 0.025,
    ratio: float = 1.0,
) -> int:
    """Total sample size for a binary endpoint (risk difference p₁ − p₀, unit "1").

    σ² = p̄(1 − p̄) with p̄ = (r p₁ + p₀)/(1 + r); R² is the share of the Bernoulli variance
    explained by the prognostic probability. An approximation checked by Monte Carlo in tests.
    """
    check_range("p0", p0, 1e-9, 1 - 1e-9, "1")
    check_range("p1", p1, 1e-9, 1 - 1e-9, "1")
    pbar = (ratio * p1 + p0) / (1 + ratio)
    return procova_sample_size(math.sqrt(pbar * (1 - pbar)), p1 - p0, r2, power, alpha, ratio)
