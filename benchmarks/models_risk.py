"""Benchmark: Pooled Cohort Equations throughput and logistic fit vs statsmodels (same run).

Run: ``.venv/bin/python benchmarks/models_risk.py``. Times are wall clock, best of ``repeats``;
on a shared machine load inflates them, so run it twice and keep the better figure.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import statsmodels.api as sm

from healthtwin.models.risk import LogisticRiskModel, pooled_cohort_risk


def _best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _cohort(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "age": rng.uniform(40, 79, n),
        "sex": np.where(rng.random(n) < 0.5, "female", "male"),
        "race": np.where(rng.random(n) < 0.2, "african_american", "white"),
        "total_chol": rng.uniform(130, 320, n),
        "hdl": rng.uniform(20, 100, n),
        "sbp": rng.uniform(90, 200, n),
        "bp_treated": rng.random(n) < 0.3,
        "smoker": rng.random(n) < 0.15,
        "diabetes": rng.random(n) < 0.1,
    }


def main(
    n_patients: int = 1_000_000, n_fit: int = 100_000, n_features: int = 10, repeats: int = 3
) -> None:
    """Print PCE patients/s for ``n_patients`` and logistic fit time vs statsmodels Logit."""
    cohort = _cohort(n_patients)
    t_pce = _best(lambda: pooled_cohort_risk(**cohort), repeats)
    print(
        f"PCE, {n_patients:,} patients: {t_pce:.3f} s  ({n_patients / t_pce:,.0f} patients/s; target < 1 s)"
    )

    rng = np.random.default_rng(1)
    X = rng.normal(size=(n_fit, n_features))
    beta = rng.normal(0, 0.5, n_features)
    y = (rng.random(n_fit) < 1 / (1 + np.exp(-(X @ beta - 1.0)))).astype(float)
    t_ours = _best(lambda: LogisticRiskModel().fit(X, y), repeats)
    t_sm = _best(lambda: sm.Logit(y, sm.add_constant(X)).fit(disp=0), repeats)
    ours, ref = LogisticRiskModel().fit(X, y), sm.Logit(y, sm.add_constant(X)).fit(disp=0)
    diff = float(np.max(np.abs(ours.params_ - ref.params)))
    print(
        f"Logistic fit, {n_fit:,} x {n_features}: ours {t_ours:.3f} s, statsmodels Logit {t_sm:.3f} s, "
        f"ratio statsmodels/ours {t_sm / t_ours:.2f}  (max |coef diff| {diff:.1e})"
    )


if __name__ == "__main__":
    main()
