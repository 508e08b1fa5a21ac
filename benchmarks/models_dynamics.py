"""Throughput of the dynamics models (Markov microsimulation, SDE ensembles, trajectory fit),
each run side by side with a reference in the same process, printing both and the ratio.

References: a naive per-individual / per-path Python loop (what the vectorised code replaces),
measured on a subset and compared per individual-cycle (per path-step); for the trajectory
fit, scipy.optimize.least_squares on the full parameter vector (generic nonlinear least
squares, the same maximum-likelihood estimate for alpha, beta, gamma).

Run: ``.venv/bin/python benchmarks/models_dynamics.py`` (add ``--quick`` for a smoke run).
Timings depend on machine load (shared 2-core box): read ratios, not absolutes.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from scipy import optimize

from healthtwin.models.markov import microsimulate, sick_sicker_strategies
from healthtwin.models.sde import gbm_model
from healthtwin.models.trajectory import LinearTrajectoryODE, linear_solution

CPU: dict[str, float] = {}


def _best(fn, repeat: int = 2) -> float:  # type: ignore[no-untyped-def]
    """Best wall time (s); the CPU time of that run is kept in CPU["last"] (load-independent)."""
    best = float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = time.perf_counter() - t0
        if wall < best:
            best, CPU["last"] = wall, time.process_time() - c0
    return best


def bench_microsim(n: int, cycles: int, n_naive: int) -> None:
    spec = sick_sicker_strategies()["Strategy AB"]
    tr, c, u = spec["transition"], spec["costs"], spec["utilities"]
    ours = _best(
        lambda: microsimulate(
            np.zeros(n, dtype=np.int64),
            tr,
            cycles,
            seed=1,
            state_costs=c,
            state_utilities=u,
            discount_cost=0.03,
            discount_effect=0.03,
            wcc="half-cycle",
        ),
        repeat=1,
    )
    ours_cpu = CPU["last"]

    def naive() -> None:
        rng = np.random.default_rng(1)
        for _ in range(n_naive):
            s, cost, qaly = 0, 0.0, 0.0
            for t in range(cycles):
                s = int(rng.choice(4, p=tr[s]))
                cost += c[s] / 1.03 ** (t + 1)
                qaly += u[s] / 1.03 ** (t + 1)

    ref = _best(naive, repeat=1)
    ours_rate = n * cycles / ours
    ref_rate = n_naive * cycles / ref
    print(
        f"markov microsim {n:,} individuals x {cycles} cycles (costs+QALYs): {ours:.2f} s wall, "
        f"{ours_cpu:.2f} s CPU "
        f"({ours_rate / 1e6:.1f} M individual-cycles/s); naive per-individual loop: "
        f"{ref_rate / 1e6:.3f} M/s on {n_naive:,}; ratio {ours_rate / ref_rate:,.0f}x"
    )


def bench_sde(n: int, steps: int, n_naive: int) -> None:
    for method in ("euler", "milstein"):
        m = gbm_model(0.05, 0.2, method=method, dt=1.0 / steps, unit="mg/dL")
        ours = _best(
            lambda m=m: m.simulate(100.0, 1.0, n_paths=n, record_every=steps // 10, seed=2),
            repeat=1,
        )
        ours_cpu = CPU["last"]

        def naive(mil: bool = method == "milstein") -> None:
            rng = np.random.default_rng(2)
            dt = 1.0 / steps
            sq = dt**0.5
            for _ in range(n_naive):
                h = 100.0
                for _ in range(steps):
                    dw = rng.standard_normal() * sq
                    step = 0.05 * h * dt + 0.2 * h * dw
                    if mil:
                        step += 0.5 * 0.2 * h * 0.2 * (dw * dw - dt)
                    h += step

        ref = _best(naive, repeat=1)
        ours_rate, ref_rate = n * steps / ours, n_naive * steps / ref
        print(
            f"sde {method:8s} {n:,} paths x {steps:,} steps: {ours:.2f} s wall, "
            f"{ours_cpu:.2f} s CPU "
            f"({ours_rate / 1e6:.1f} M path-steps/s); naive per-path loop: "
            f"{ref_rate / 1e6:.3f} M/s on {n_naive:,}; ratio {ours_rate / ref_rate:,.0f}x"
        )


def bench_trajectory_fit(n: int, m: int) -> None:
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.uniform(0.2, 1.5, (n, m)), axis=1)
    h0 = rng.normal(120, 10, n)
    x = rng.normal(0, 1, n)
    tr = (rng.random((n, m)) < 0.5).astype(float)
    y = linear_solution(-0.3, h0, times, 1.5 * x[:, None] - 4.0 * tr) + rng.normal(0, 2, (n, m))
    model = LinearTrajectoryODE(unit="mg/dL")
    ours = _best(lambda: model.fit(times, y, h0, X=x, T=tr))

    def resid(th: np.ndarray) -> np.ndarray:
        return (linear_solution(th[0], h0, times, th[1] * x[:, None] - th[2] * tr) - y).ravel()

    res = {}

    def peer() -> None:
        res["x"] = optimize.least_squares(resid, np.zeros(3), method="lm").x

    ref = _best(peer)
    diff = np.max(np.abs(res["x"] - model.theta_[:3]))
    print(
        f"trajectory fit {n:,} patients x {m} visits: ours {ours * 1e3:.0f} ms (MLE + observed "
        f"information); scipy least_squares (point estimate only) {ref * 1e3:.0f} ms; ratio "
        f"{ref / ours:.2f}x; max |estimate difference| {diff:.1e}"
    )


def main() -> None:
    quick = "--quick" in sys.argv
    print("healthtwin dynamics benchmark (shared machine: timings vary with load)")
    if quick:
        bench_microsim(100_000, 20, 200)
        bench_sde(10_000, 100, 50)
        bench_trajectory_fit(500, 6)
    else:
        bench_microsim(1_000_000, 100, 2_000)
        bench_sde(100_000, 1_000, 100)
        bench_trajectory_fit(5_000, 8)


if __name__ == "__main__":
    main()
