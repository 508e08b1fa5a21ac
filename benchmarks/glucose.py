"""Glucose twin benchmark: simglucose 0.2.11 vs healthtwin on the same patients and scenarios.

Prints simulated patient-days per second at 1-min resolution for simglucose, for healthtwin's
compiled kernel (numba, patients over ``--workers`` threads, and on one thread) and for its
NumPy reference path (``--workers`` threads over patient chunks), interleaved in ``--rounds`` rounds, with the
ratios, the load average, the first-call (JIT compile or cache load) time reported apart, the
per-minute agreement with simglucose and between the two paths, and the time to assimilate
one CGM value into 100,000 EnKF twins (propagation of one minute + update).

    .venv/bin/python benchmarks/glucose.py [--reps 100] [--days 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from healthtwin.care.glucose.control import random_meal_scenario
from healthtwin.care.glucose.personalize import GlucoseEnKF
from healthtwin.models.physiology import kernels
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


def run_numpy(p: UVAPadovaParams, meals: np.ndarray, ins: np.ndarray, workers: int) -> np.ndarray:
    """NumPy reference path in ``workers`` threads over patient chunks (NumPy releases the GIL)."""
    chunks = np.array_split(np.arange(p.n), workers)

    def one(idx: np.ndarray) -> np.ndarray:
        sub = UVAPadovaParams(
            [p.names[i] for i in idx],
            {k: v[idx] for k, v in p.values.items()},
            p.x0[:, idx],
            {k: v[idx] for k, v in p.quest.items()},
        )
        return simulate_uva_padova(sub, meals[idx], ins[idx], kernel="numpy").gsub

    with ThreadPoolExecutor(workers) as ex:
        return np.vstack(list(ex.map(one, chunks)))


def run_numba(p: UVAPadovaParams, meals: np.ndarray, ins: np.ndarray) -> np.ndarray:
    return simulate_uva_padova(p, meals, ins, kernel="numba").gsub


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall s, process CPU s, result) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sg-patients", type=int, default=3)
    ap.add_argument("--sg-hours", type=float, default=6.0)
    ap.add_argument("--reps", type=int, default=100, help="copies of the 30 patients (numba)")
    ap.add_argument("--np-reps", type=int, default=10, help="copies of the 30 (NumPy path)")
    ap.add_argument("--days", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--twins", type=int, default=100_000)
    ap.add_argument("--members", type=int, nargs="+", default=[20, 50])
    a = ap.parse_args()
    kernels.set_threads(a.workers)
    names = all_patient_names()
    rng = np.random.default_rng(0)
    sg_names = [names[i] for i in rng.choice(len(names), a.sg_patients, replace=False)]
    sg_p = UVAPadovaParams.from_names(sg_names)
    sg_min = int(a.sg_hours * 60)
    meals, ins = scenario(sg_p, sg_min, seed=1)
    minutes = int(a.days * 1440)
    p = UVAPadovaParams.from_names(names).tile(a.reps)
    m2, i2 = scenario(p, minutes, seed=2)
    pn = UVAPadovaParams.from_names(names).tile(a.np_reps)
    nn = pn.n

    load0 = os.getloadavg()
    first, _, _ = timed(lambda: run_numba(sg_p, meals[:, :10], ins[:, :10]))
    print(f"load average (1, 5, 15 min) : {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} (2 cores)")
    print(f"numba first call            : {first:.2f} s (JIT compile or on-disk cache load; "
          "not in the rates)")  # fmt: skip

    sg_r: list[float] = []
    nb_r: list[float] = []
    nb_cpu: list[float] = []
    nb1_r: list[float] = []
    nb1_cpu: list[float] = []
    np_r: list[float] = []
    np_cpu: list[float] = []
    for r in range(a.rounds):
        w, _, ref = timed(lambda: run_simglucose(sg_names, meals, ins))
        sg_r.append(len(sg_names) * sg_min / 1440 / w)
        w, c, _ = timed(lambda: run_numba(p, m2, i2))
        nb_r.append(p.n * minutes / 1440 / w)
        nb_cpu.append(p.n * minutes / 1440 / c)
        kernels.set_threads(1)  # the same kernel on one thread: what one core does
        w, c, _ = timed(lambda: run_numba(p, m2, i2))
        kernels.set_threads(a.workers)
        nb1_r.append(p.n * minutes / 1440 / w)
        nb1_cpu.append(p.n * minutes / 1440 / c)
        w, c, _ = timed(lambda: run_numpy(pn, m2[:nn], i2[:nn], a.workers))
        np_r.append(nn * minutes / 1440 / w)
        np_cpu.append(nn * minutes / 1440 / c)
        print(f"round {r + 1}: simglucose {sg_r[-1]:.3f}, numba {nb_r[-1]:.0f} "
              f"(1 thread {nb1_r[-1]:.0f}), "
              f"numpy {np_r[-1]:.0f} patient-days/s; load {os.getloadavg()[0]:.2f}")  # fmt: skip
    ours_sg = run_numba(sg_p, meals, ins)
    agree_sg = float(np.max(np.abs(ours_sg - np.asarray(ref))))
    fast = run_numba(pn, m2[:nn], i2[:nn])
    slow = run_numpy(pn, m2[:nn], i2[:nn], a.workers)
    agree_np = float(np.max(np.abs(fast - slow) / np.abs(slow)))
    med = statistics.median
    sg, nb, npy = med(sg_r), med(nb_r), med(np_r)
    print(f"patients (simglucose)       : {', '.join(sg_names)} x {a.sg_hours:g} h")
    print(f"max |Gs_numba - Gs_simgluc.|: {agree_sg:.2e} mg/dL")
    print(f"max rel |numba - numpy|     : {agree_np:.2e}")
    print(f"simglucose 0.2.11           : {sg:10.3f} patient-days/s (1 process; median)")
    print(f"healthtwin numba, {a.workers} threads : {nb:10.0f} patient-days/s "
          f"(best {max(nb_r):.0f}; {p.n} patients x {a.days:g} d; median); "
          f"{med(nb_cpu):.0f} per CPU-second")  # fmt: skip
    print(f"healthtwin numba, 1 thread  : {med(nb1_r):10.0f} patient-days/s "
          f"(best {max(nb1_r):.0f}; median); {med(nb1_cpu):.0f} per CPU-second")  # fmt: skip
    print(f"healthtwin NumPy, {a.workers} threads : {npy:10.0f} patient-days/s "
          f"({nn} patients x {a.days:g} d; median); {med(np_cpu):.0f} per CPU-second")  # fmt: skip
    print(f"ratio numba / simglucose    : {nb / sg:10.0f}x")
    print(f"ratio numba / NumPy         : {nb / npy:10.1f}x")

    for m in a.members:
        for compiled in ("numba", "numpy"):
            os.environ["HEALTHTWIN_KERNEL"] = compiled
            twin = GlucoseEnKF(n_members=m, seed=0).start(
                np.full(a.twins, 70.0), np.full(a.twins, 0.015)
            )
            y = 140.0 + 10.0 * rng.standard_normal(a.twins)
            ins1 = np.full(a.twins, 0.015)
            cho1 = np.zeros(a.twins)
            twin.step(ins1, cho1)  # warm-up (JIT / cache load)
            cycles = []
            for _ in range(3):
                t0 = time.perf_counter()
                twin.step(ins1, cho1)
                t1 = time.perf_counter()
                twin.assimilate(y)
                cycles.append((t1 - t0, time.perf_counter() - t1))
            st, up = min(cycles, key=lambda c: c[0] + c[1])
            print(f"EnKF {a.twins} twins x {m} members ({compiled:5s}): propagate 1 min {st:.3f}"
                  f" s + assimilate {up:.3f} s = {st + up:.3f} s (best of 3; load "
                  f"{os.getloadavg()[0]:.2f})")  # fmt: skip
    os.environ.pop("HEALTHTWIN_KERNEL", None)


if __name__ == "__main__":
    main()
