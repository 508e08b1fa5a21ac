"""Primary-care provider workload: face time plus inbox, after-hours share (simulated).

Per working day ``d`` and replication ``r``: visits ``N ~ Poisson(P v / D)`` with panel ``P``
(1), visits per patient-year ``v`` (/a) and ``D = 52 * days_per_week`` working days (/a);
visit types by share; inbox tasks of each kind ``K ~ Poisson(P q_k / D)``. Provider hours
``H = (sum visit minutes + sum inbox minutes) / 60`` (h); after-hours
``max(0, H - clinic_hours)`` (h). Fully vectorised over (replications, days).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from healthtwin.operations.kpi import t_interval
from healthtwin.operations.spec import Dist, PrimaryCare


def _sum_draws(dist: Dist, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sum of ``counts[i]`` i.i.d. draws for every cell (vectorised, no per-cell loop)."""
    flat = counts.ravel()
    total = int(flat.sum())
    draws = dist.sample(rng, total) if total else np.zeros(0)
    idx = np.repeat(np.arange(flat.size), flat)
    return np.bincount(idx, weights=draws, minlength=flat.size).reshape(counts.shape)


def simulate_workload(
    pc: PrimaryCare, n_reps: int = 100, days: int = 20, seed: int = 0
) -> dict[str, np.ndarray]:
    """Arrays of shape (n_reps, days): face_h, inbox_h, total_h, after_hours_h (h), visits (1)."""
    if n_reps < 1 or days < 1:
        raise ValueError(f"simulate_workload: n_reps={n_reps}, days={days}: need >= 1")
    rng = np.random.default_rng([seed, 7])
    per_day = 52.0 * pc.days_per_week
    shape = (n_reps, days)
    visits = rng.poisson(pc.panel_size * pc.visits_per_patient_year / per_day, shape)
    shares = np.array([v.share for v in pc.visit_types.values()])
    shares = shares / shares.sum()
    # sequential binomial split -> multinomial counts per type
    counts = []
    remaining = visits.copy()
    left = 1.0
    for p in shares[:-1]:
        c = rng.binomial(remaining, min(1.0, p / left)) if left > 0 else np.zeros_like(remaining)
        counts.append(c)
        remaining = remaining - c
        left -= p
    counts.append(remaining)
    face = sum(
        _sum_draws(vt.minutes, c, rng)
        for vt, c in zip(pc.visit_types.values(), counts, strict=True)
    )
    inbox = np.zeros(shape)
    for task in pc.inbox.values():
        k = rng.poisson(pc.panel_size * task.per_patient_year / per_day, shape)
        inbox = inbox + _sum_draws(task.minutes, k, rng)
    face_h = np.asarray(face, float) / 60.0
    inbox_h = inbox / 60.0
    total = face_h + inbox_h
    after = np.maximum(0.0, total - pc.clinic_hours_per_day)
    return {
        "face_h": face_h,
        "inbox_h": inbox_h,
        "total_h": total,
        "after_hours_h": after,
        "visits": visits.astype(float),
    }


def workload_summary(
    pc: PrimaryCare, n_reps: int = 100, days: int = 20, seed: int = 0
) -> pd.DataFrame:
    """Per-day means with 95 % t intervals across replications (simulated)."""
    w = simulate_workload(pc, n_reps, days, seed)
    rows = {}
    for k, unit in (
        ("visits", "1"),
        ("face_h", "h"),
        ("inbox_h", "h"),
        ("total_h", "h"),
        ("after_hours_h", "h"),
    ):
        m, hw, lo, hi = t_interval(w[k].mean(axis=1))
        rows[f"{k}_per_day[{unit}]"] = {"mean": m, "ci_low": lo, "ci_high": hi}
    share = w["after_hours_h"].sum(axis=1) / w["total_h"].sum(axis=1)
    m, hw, lo, hi = t_interval(share)
    rows["after_hours_share[1]"] = {"mean": m, "ci_low": lo, "ci_high": hi}
    out = pd.DataFrame(rows).T
    out.attrs["simulated"] = True
    return out
