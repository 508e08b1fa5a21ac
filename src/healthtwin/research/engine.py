"""Population-scale simulation in fixed chunks, in-process or on a Ray cluster.

Patients are split into fixed chunks of ``chunk_size`` (independent of the number of
workers). Chunk c draws from ``SeedSequence(seed, spawn_key=(c,))`` — identical to
``SeedSequence(seed).spawn(C)[c]`` — so the same seed gives bit-identical results whether the
chunks run in one process, in any order, or on any number of Ray workers.

Each chunk simulates virtual patients (age "a", BMI "kg/m2", baseline HbA1c "%") and weekly
HbA1c trajectories from :class:`~healthtwin.research.trial.LinearProgression` under a
randomised 1:1 assignment; it returns per-patient endpoint values (change from baseline at
the last visit, "%"), the control counterfactual and per-visit sums.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from healthtwin.research.trial import LinearProgression

F = NDArray[np.float64]


@dataclass
class PopulationRun:
    """Result of a population simulation (simulated; endpoint unit "%")."""

    n_patients: int
    n_visits: int
    treated: NDArray[np.int8]
    y: NDArray[np.float32]
    y_control: NDArray[np.float32]
    mean_trajectory_treated: F
    mean_trajectory_control: F
    chunk_size: int
    engine: str
    label: str = "simulated"

    def ate(self) -> tuple[float, float]:
        """Average treatment effect on the treated from known ITEs, with its standard error ("%")."""
        d = (self.y - self.y_control)[self.treated == 1].astype(float)
        return float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size))


def simulate_chunk(
    seed: int, chunk: int, start: int, stop: int, n_visits: int, dose: float
) -> dict[str, Any]:
    """Simulate patients [start, stop) of chunk ``chunk``; vectorised over patients."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(chunk,)))
    n = stop - start
    age = np.clip(rng.normal(58, 12, n), 18, 95)
    bmi = np.clip(rng.normal(31, 5, n), 16, 60)
    X = pd.DataFrame({"age": age, "bmi": bmi})
    model = LinearProgression(
        coef={"age": 0.01, "bmi": 0.05},
        centre={"age": 58, "bmi": 31},
        n_visits=n_visits,
        effect_modifier=0.2,
    )
    treated = (rng.random(n) < 0.5).astype(np.int8)
    noise = model.draw_noise(n, rng)
    t0 = model.outcome(X, np.zeros(n), noise)
    t1 = model.outcome(X, np.asarray(dose * treated, dtype=float), noise)
    return {
        "treated": treated,
        "y": (t1[:, -1] - t1[:, 0]).astype(np.float32),
        "y_control": (t0[:, -1] - t0[:, 0]).astype(np.float32),
        "sum_t": t1[treated == 1].sum(axis=0),
        "sum_c": t1[treated == 0].sum(axis=0),
    }


def simulate_population(
    n_patients: int,
    n_visits: int = 52,
    seed: int = 0,
    chunk_size: int = 50_000,
    engine: Literal["inprocess", "ray"] = "inprocess",
    dose: float = 100.0,
    ray_address: str | None = None,
) -> PopulationRun:
    """Simulate ``n_patients`` × ``n_visits`` weekly visits (plus baseline) in fixed chunks.

    ``engine="ray"`` submits one task per chunk to the running Ray cluster (or starts a local
    one with ``ray.init(address=ray_address)`` if none is running).
    """
    if n_patients < 1 or chunk_size < 1 or n_visits < 1:
        raise ValueError(
            f"n_patients ({n_patients}), chunk_size ({chunk_size}) and n_visits ({n_visits}) must be ≥ 1"
        )
    bounds = [
        (c, s, min(s + chunk_size, n_patients))
        for c, s in enumerate(range(0, n_patients, chunk_size))
    ]
    nv = n_visits + 1
    if engine == "inprocess":
        parts = [simulate_chunk(seed, c, a, b, nv, dose) for c, a, b in bounds]
    elif engine == "ray":
        import ray

        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        if not ray.is_initialized():
            ray.init(address=ray_address, include_dashboard=False, log_to_driver=False)
        task = ray.remote(num_cpus=1)(simulate_chunk)
        parts = ray.get([task.remote(seed, c, a, b, nv, dose) for c, a, b in bounds])
    else:
        raise ValueError(f"engine = {engine!r}; expected 'inprocess' or 'ray'")
    treated = np.concatenate([p["treated"] for p in parts])
    n_t = max(int(treated.sum()), 1)
    n_c = max(int(treated.size - treated.sum()), 1)
    return PopulationRun(
        n_patients=n_patients,
        n_visits=n_visits,
        treated=treated,
        y=np.concatenate([p["y"] for p in parts]),
        y_control=np.concatenate([p["y_control"] for p in parts]),
        mean_trajectory_treated=np.sum([p["sum_t"] for p in parts], axis=0) / n_t,
        mean_trajectory_control=np.sum([p["sum_c"] for p in parts], axis=0) / n_c,
        chunk_size=chunk_size,
        engine=engine,
    )
