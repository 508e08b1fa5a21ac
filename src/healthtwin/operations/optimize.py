"""Staffing optimisation: Erlang screen per hour -> simulate a shortlist -> ranking & selection.

1. **Screen.** Offered load at a station per hour of day from the arrival profile and the
   expected number of visits per patient (traffic equations of each pathway):
   ``lambda_s(h) = sum_c lambda(h) p_c v_cs`` (/h); the smallest ``c`` with
   ``P(Wq > t*) <= alpha`` under M/M/c (Erlang C) is the hourly requirement.
2. **Shortlist.** Schedules built from that requirement shifted by -1, 0, +1, +2 servers
   (and the current schedule) are simulated with common random numbers.
3. **Select.** Objective per replication ``J = staff hours / day + w * patient waiting
   hours / day`` (h). Nelson et al. (2001) screening with a Bonferroni-t bound keeps every
   candidate not significantly worse than another (the subset contains the best with
   probability >= 1 - alpha); the chosen plan is the best sample mean in that subset.
4. **Roster.** The chosen hourly requirement is covered with OR-Tools CP-SAT (roster.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from healthtwin.operations import queueing
from healthtwin.operations.engine import run_replications
from healthtwin.operations.kpi import kpi_frame, paired_difference
from healthtwin.operations.roster import Roster, build_roster
from healthtwin.operations.scenarios import apply_patch
from healthtwin.operations.spec import EXIT, FacilitySpec, SpecError


def expected_visits(spec: FacilitySpec) -> dict[str, dict[str, tuple[float, float]]]:
    """Per class, per station: (expected visits per patient (1), mean service per visit (min))."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for cname, cls in spec.classes.items():
        names = [s.name for s in cls.pathway]
        n = len(names)
        p = np.zeros((n, n))
        for i, s in enumerate(cls.pathway):
            if s.next is None:
                if i + 1 < n:
                    p[i, i + 1] = 1.0
            else:
                for k, q in s.next.items():
                    if k != EXIT:
                        p[i, names.index(k)] += q
        v = np.linalg.solve(np.eye(n) - p.T, np.eye(n)[0])  # visits to each step
        acc: dict[str, list[float]] = {}
        for i, s in enumerate(cls.pathway):
            a = acc.setdefault(s.station, [0.0, 0.0])
            a[0] += v[i]
            a[1] += v[i] * s.service.expected()
        out[cname] = {st: (a[0], a[1] / a[0] if a[0] else 0.0) for st, a in acc.items()}
    return out


def erlang_screen(
    spec: FacilitySpec,
    station: str,
    target_wait: float = 15.0,
    alpha: float = 0.2,
    weekday: int = 0,
) -> pd.DataFrame:
    """Hourly requirement at ``station``: rows hour (h of day), lambda (/h), mean service (min),
    offered load (1), servers needed (1), P(wait) at that staffing (1)."""
    if station not in spec.stations:
        raise SpecError(f"erlang_screen: unknown station {station!r}")
    vis = expected_visits(spec)
    prof = spec.arrivals.profile
    per = spec.arrivals.period_min
    wk = (spec.arrivals.weekday_factors or [1.0] * 7)[weekday]
    rows = []
    for h in range(24):
        base = prof[int(h * 60 // per) % len(prof)] * wk
        lam = 0.0
        work = 0.0
        for cname, cls in spec.classes.items():
            v, s = vis[cname].get(station, (0.0, 0.0))
            lam += base * cls.share * v
            work += base * cls.share * v * s
        mean_s = work / lam if lam > 0 else 0.0
        if lam > 0:
            c = queueing.min_servers(lam / 60.0, 1.0 / mean_s, target_wait, alpha)
            pw = queueing.erlang_c(c, lam * mean_s / 60.0)
        else:
            c, pw = 0, 0.0
        rows.append(
            {
                "hour": h,
                "lambda[/h]": lam,
                "service_mean[min]": mean_s,
                "load[1]": lam * mean_s / 60.0,
                "servers[1]": c,
                "p_wait[1]": pw,
            }
        )
    return pd.DataFrame(rows)


def schedule_from_hourly(req: np.ndarray) -> list[dict[str, float]]:
    """Compress 24 hourly server counts into schedule blocks."""
    blocks: list[dict[str, float]] = []
    for h, c in enumerate(req.tolist()):
        if not blocks or blocks[-1]["servers"] != c:
            blocks.append({"start_hour": float(h), "servers": int(c)})
    return blocks


def nelson_subset(j: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Screening subset (minimisation) from an (n reps, k systems) matrix under CRN."""
    n, k = j.shape
    if k == 1:
        return np.array([True])
    t = stats.t.ppf((1 - alpha) ** (1 / (k - 1)), n - 1)
    mean = j.mean(axis=0)
    keep = np.ones(k, bool)
    for i in range(k):
        for m in range(k):
            if i == m:
                continue
            s = np.std(j[:, i] - j[:, m], ddof=1)
            if mean[i] > mean[m] + t * s / np.sqrt(n):
                keep[i] = False
                break
    return keep


def optimise_staffing(
    spec: FacilitySpec,
    station: str,
    target_wait: float = 15.0,
    alpha_wait: float = 0.2,
    wait_weight: float = 0.5,
    n_reps: int = 20,
    seed: int = 0,
    workers: int = 1,
    alpha: float = 0.05,
    roster: bool = True,
) -> dict[str, Any]:
    """Screen, simulate a shortlist, select (Nelson screening), roster. All results simulated."""
    screen = erlang_screen(spec, station, target_wait, alpha_wait, spec.start_weekday)
    req = screen["servers[1]"].to_numpy(int)
    cands: dict[str, np.ndarray] = {}
    st = spec.stations[station]
    if st.schedule:
        cur = np.zeros(24, int)
        for b in st.schedule:
            cur[int(b.start_hour) :] = b.servers
        cands["current"] = cur
    else:
        cands["current"] = np.full(24, st.servers)
    for d in (-1, 0, 1, 2):
        cands[f"screen{d:+d}"] = np.maximum(req + d, 1)
    rows, jcols = [], []
    span_days = (spec.horizon - spec.warmup) / 1440.0
    for name, hourly in cands.items():
        sp = apply_patch(spec, {f"stations.{station}.schedule": schedule_from_hourly(hourly)}, name)
        df = kpi_frame(run_replications(sp, n_reps, seed, workers))
        staff_h = float(hourly.sum())
        wait_h_day = (
            df["wait_mean[min]"].to_numpy() * df["throughput[1]"].to_numpy() / 60.0 / span_days
        )
        jv = staff_h + wait_weight * wait_h_day
        jcols.append(jv)
        rows.append(
            {
                "plan": name,
                "staff_hours_per_day[h]": staff_h,
                "wait_mean[min]": float(df["wait_mean[min]"].mean()),
                "breach[1]": float(df["target_breach_fraction[1]"].mean()),
                "objective[h]": float(jv.mean()),
                "objective_sd[h]": float(jv.std(ddof=1)),
            }
        )
    jm = np.column_stack(jcols)
    keep = nelson_subset(jm, alpha)
    table = pd.DataFrame(rows)
    table["in_subset"] = keep
    means = np.where(keep, jm.mean(axis=0), np.inf)
    best = int(np.argmin(means))
    table = table.sort_values("objective[h]").reset_index(drop=True)
    chosen = list(cands)[best]
    out: dict[str, Any] = {
        "screen": screen,
        "candidates": table,
        "chosen": chosen,
        "hourly": cands[chosen].tolist(),
        "simulated": True,
    }
    if roster:
        r: Roster = build_roster(cands[chosen])
        out["roster"] = r
    return out


def rank_interventions(
    spec: FacilitySpec,
    interventions: Mapping[str, Mapping[str, Any]],
    kpi: str = "wait_mean[min]",
    n_reps: int = 20,
    seed: int = 0,
    workers: int = 1,
) -> pd.DataFrame:
    """Paired effect (scenario - base, CRN) of each intervention on ``kpi``, best first."""
    base = kpi_frame(run_replications(spec, n_reps, seed, workers))
    rows = []
    for name, patch in interventions.items():
        other = kpi_frame(run_replications(apply_patch(spec, patch, name), n_reps, seed, workers))
        d = paired_difference(base, other).loc[kpi]
        rows.append(
            {
                "intervention": name,
                "kpi": kpi,
                "effect": d["diff"],
                "ci_low": d["ci_low"],
                "ci_high": d["ci_high"],
                "significant": d["significant"],
            }
        )
    out = pd.DataFrame(rows).sort_values("effect").reset_index(drop=True)
    out.index = out.index + 1
    out.index.name = "rank"
    out.attrs["simulated"] = True
    return out
