"""Cohort-twin benchmarks (simulated data). Run: .venv/bin/python benchmarks/cohort.py [--quick]

1. Batched HC3 ANCOVA (ours) vs a loop of statsmodels OLS(cov_type="HC3") fits (the peer):
   same replications, both timings and the ratio, and the largest difference in the SEs.
2. 10,000-patient trial simulation in-process (weekly HbA1c, 52 visits).
3. 1,000,000 virtual patients × 52 weekly visits: in-process, then Ray with 1 and 2 workers
   (local cluster; fixed chunking, so all three give identical arrays — checked).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
import statsmodels.api as sm

from healthtwin.research.engine import simulate_population
from healthtwin.research.procova import batched_ancova
from healthtwin.research.trial import TrialSpec, simulate_trial


def bench_ancova(reps: int, n: int = 200) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((reps, n))
    t = (rng.random((reps, n)) < 0.5).astype(float)
    y = 0.7 * x + 0.3 * t + rng.standard_normal((reps, n))
    t0 = time.perf_counter()
    ours = batched_ancova(y, t, x[..., None])
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    se = np.empty(reps)
    for r in range(reps):
        fit = sm.OLS(y[r], sm.add_constant(np.column_stack([t[r], x[r]]))).fit(cov_type="HC3")
        se[r] = fit.bse[1]
    t_peer = time.perf_counter() - t0
    diff = float(np.max(np.abs(se - ours.se) / se))
    print(
        f"ANCOVA HC3, {reps} replications x n={n}: ours {t_ours:.3f} s, statsmodels loop {t_peer:.3f} s, "
        f"ratio {t_peer / t_ours:.0f}x, max rel. SE difference {diff:.1e}"
    )


def bench_trial(n: int = 10_000) -> None:
    rng = np.random.default_rng(1)
    pop = pd.DataFrame({"age": rng.normal(58, 10, n), "bmi": rng.normal(31, 5, n)})
    spec = TrialSpec(
        n=n, dropout_rate=0.005, model_params={"coef": {"bmi": 0.05}, "centre": {"bmi": 31}}
    )
    t0 = time.perf_counter()
    res = simulate_trial(spec, pop)
    dt = time.perf_counter() - t0
    print(
        f"trial simulation, {n} virtual patients x 53 visits in-process: {dt:.3f} s (true ATE {res.true_ate:.3f} %)"
    )


def bench_population(n: int, chunk: int) -> None:
    import ray

    t0 = time.perf_counter()
    ref = simulate_population(n, 52, seed=0, chunk_size=chunk)
    t_in = time.perf_counter() - t0
    print(f"population {n} x 52 visits, in-process (1 core): {t_in:.2f} s")
    times = {}
    for workers in (1, 2):
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        simulate_population(
            2 * chunk, 52, seed=0, chunk_size=chunk, engine="ray"
        )  # warm the workers
        t0 = time.perf_counter()
        run = simulate_population(n, 52, seed=0, chunk_size=chunk, engine="ray")
        times[workers] = time.perf_counter() - t0
        ray.shutdown()
        same = np.array_equal(run.y, ref.y) and np.array_equal(
            run.mean_trajectory_treated, ref.mean_trajectory_treated
        )
        print(
            f"population {n} x 52 visits, Ray {workers} worker(s): {times[workers]:.2f} s; identical to in-process: {same}"
        )
    print(
        f"Ray speed-up 1 -> 2 workers: {times[1] / times[2]:.2f}x; in-process / Ray-2 ratio {t_in / times[2]:.2f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    a = ap.parse_args()
    print(f"load average at start: {os.getloadavg()}, CPUs: {os.cpu_count()}")
    bench_ancova(200 if a.quick else 2000)
    bench_trial(2000 if a.quick else 10_000)
    bench_population(100_000 if a.quick else 1_000_000, 50_000)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
