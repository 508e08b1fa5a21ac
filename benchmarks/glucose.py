"""Glucose twin benchmark: simglucose 0.2.11 vs healthtwin on the same patients and scenarios.

Prints simulated patient-days per second at 1-min resolution for both and the ratio, the
maximum per-minute difference of subcutaneous glucose on the shared runs, and the time to
assimilate one CGM value into 100,000 EnKF twins.

    .venv/bin/python benchmarks/glucose.py [--sg-patients 3] [--sg-hours 6] [--reps 100]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from healthtwin.care.glucose.control import random_meal_scenario
from healthtwin.care.glucose.personalize import GlucoseEnKF
from healthtwin.models.physiology.uva_padova import (
    UVAPadovaParams,
    all_patient_names,
    simulate_uva_padova,
)


def scenario(p: UVAPadovaParams, minutes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random meals with CR boluses on top of basal (g, U/min), shape (N, minutes)."""
    days = int(np.ceil((minutes + 360) / 1440))
    # start at 06:00 so that short runs contain breakfast and lunch
    meals = random_meal_scenario(p.n, days, np.random.default_rng(seed))[:, 360 : 360 + minutes]
    ins = p.basal_u_per_min[:, None] + meals / p.quest["CR"][:, None]
    return meals, ins


def run_simglucose(names: list[str], meals: np.ndarray, ins: np.ndarray) -> np.ndarray:
    from simglucose.patient.t1dpatient import Action, T1DPatient

    out = np.empty((len(names), meals.shape[1] + 1))
    for i, name in enumerate(names):
        pat = T1DPatient.withName(name)
        out[i, 0] = pat.observation.Gsub
        for k in range(meals.shape[1]):
            pat.step(Action(CHO=float(meals[i, k]), insulin=float(ins[i, k])))
            out[i, k + 1] = pat.observation.Gsub
    return out


def run_healthtwin(
    p: UVAPadovaParams, meals: np.ndarray, ins: np.ndarray, workers: int
) -> np.ndarray:
    """Simulate in ``workers`` threads over patient chunks (NumPy releases the GIL)."""
    chunks = np.array_split(np.arange(p.n), workers)

    def one(idx: np.ndarray) -> np.ndarray:
        sub = UVAPadovaParams(
            [p.names[i] for i in idx],
            {k: v[idx] for k, v in p.values.items()},
            p.x0[:, idx],
            {k: v[idx] for k, v in p.quest.items()},
        )
        return simulate_uva_padova(sub, meals[idx], ins[idx]).gsub

    with ThreadPoolExecutor(workers) as ex:
        return np.vstack(list(ex.map(one, chunks)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sg-patients", type=int, default=3)
    ap.add_argument("--sg-hours", type=float, default=6.0)
    ap.add_argument("--reps", type=int, default=100, help="copies of the 30 patients (healthtwin)")
    ap.add_argument("--days", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--twins", type=int, default=100_000)
    a = ap.parse_args()
    names = all_patient_names()
    rng = np.random.default_rng(0)
    sg_names = [names[i] for i in rng.choice(len(names), a.sg_patients, replace=False)]
    sg_p = UVAPadovaParams.from_names(sg_names)
    sg_min = int(a.sg_hours * 60)
    meals, ins = scenario(sg_p, sg_min, seed=1)

    t0 = time.perf_counter()
    ref = run_simglucose(sg_names, meals, ins)
    t_sg = time.perf_counter() - t0
    ours = simulate_uva_padova(sg_p, meals, ins).gsub
    sg_rate = len(sg_names) * sg_min / 1440 / t_sg

    p = UVAPadovaParams.from_names(names).tile(a.reps)
    minutes = int(a.days * 1440)
    m2, i2 = scenario(p, minutes, seed=2)
    t0 = time.perf_counter()
    run_healthtwin(p, m2, i2, a.workers)
    t_ht = time.perf_counter() - t0
    ht_rate = p.n * minutes / 1440 / t_ht

    print(f"patients (simglucose)        : {', '.join(sg_names)} x {a.sg_hours:g} h")
    print(f"max |Gs_ours - Gs_simglucose|: {np.max(np.abs(ours - ref)):.2e} mg/dL")
    print(f"simglucose 0.2.11            : {sg_rate:10.3f} patient-days/s (1 process)")
    print(f"healthtwin (RK4, {a.workers} threads)  : {ht_rate:10.1f} patient-days/s "
          f"({p.n} patients x {a.days:g} d)")  # fmt: skip
    print(f"ratio healthtwin/simglucose  : {ht_rate / sg_rate:10.0f}x")

    twin = GlucoseEnKF(n_members=20, seed=0).start(np.full(a.twins, 70.0), np.full(a.twins, 0.015))
    y = 140.0 + 10.0 * rng.standard_normal(a.twins)
    t0 = time.perf_counter()
    twin.assimilate(y)
    t_as = time.perf_counter() - t0
    print(f"EnKF assimilate 1 CGM value  : {t_as:.3f} s for {a.twins} twins x 20 members")


if __name__ == "__main__":
    main()
