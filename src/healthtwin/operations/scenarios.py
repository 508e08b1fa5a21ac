"""Scenarios (spec patches), paired comparison under common random numbers, stress tests.

A scenario is a mapping of dotted spec paths to new values, e.g.
``{"stations.triage.servers": 3}`` or ``{"policies.discharge_hours": [8, 12]}``; list
indices are allowed (``classes.minor.pathway.0.service.mean``). Every scenario is run with
the same seed, so replication ``r`` of each scenario shares its random streams (CRN) and the
differences are paired.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pandas as pd

from healthtwin.operations.engine import run_replications
from healthtwin.operations.kpi import kpi_frame, paired_difference
from healthtwin.operations.spec import FacilitySpec, SpecError, parse_spec


def apply_patch(
    spec: FacilitySpec, patch: Mapping[str, Any], name: str = "scenario"
) -> FacilitySpec:
    """A new spec with dotted-path values replaced (validated; errors name the path)."""
    d = spec.model_dump(mode="json")
    for path, value in patch.items():
        parts = path.split(".")
        node: Any = d
        for j, key in enumerate(parts[:-1]):
            try:
                node = node[int(key)] if isinstance(node, list) else node[key]
            except (KeyError, IndexError, ValueError):
                where = ".".join(parts[: j + 1])
                raise SpecError(f"scenario {name!r}: path {path!r} has no {where!r}") from None
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = copy.deepcopy(value)
        elif isinstance(node, dict):
            node[last] = copy.deepcopy(value)
        else:
            raise SpecError(f"scenario {name!r}: cannot set {path!r}")
    return parse_spec(d, f"(scenario {name!r})")


# ---- standard interventions ----
def extra_staff(spec: FacilitySpec, station: str, n: int = 1) -> dict[str, Any]:
    """Patch: ``n`` more servers at ``station`` in every shift block."""
    st = spec.stations[station]
    if st.schedule:
        blocks = [{"start_hour": b.start_hour, "servers": b.servers + n} for b in st.schedule]
        return {f"stations.{station}.schedule": blocks}
    return {f"stations.{station}.servers": st.servers + n}


def overflow_beds(spec: FacilitySpec, station: str, beds: int) -> dict[str, Any]:
    """Patch: ``beds`` overflow beds opened at a ward (or any bed station)."""
    if spec.stations[station].kind != "ward":
        raise SpecError(f"overflow_beds: station {station!r} is not a ward")
    return extra_staff(spec, station, beds)


def shift_pattern(
    spec: FacilitySpec, station: str, blocks: list[tuple[float, int]]
) -> dict[str, Any]:
    """Patch: a new daily schedule ``[(start_hour h, servers), ...]`` for ``station``."""
    if station not in spec.stations:
        raise SpecError(f"shift_pattern: unknown station {station!r}")
    return {f"stations.{station}.schedule": [{"start_hour": h, "servers": n} for h, n in blocks]}


def discharge_before_noon(spec: FacilitySpec) -> dict[str, Any]:
    """Patch: ward discharges only 08:00-12:00 (patients stay until the window opens)."""
    return {"policies.discharge_hours": [8.0, 12.0]}


def surge(
    spec: FacilitySpec, factor: float = 1.5, start: float | None = None, hours: float = 6.0
) -> dict[str, Any]:
    """Stress patch: arrivals x ``factor`` for ``hours`` h from ``start`` min (default: after warm-up)."""
    t0 = spec.warmup if start is None else start
    ev = [d.model_dump(mode="json") for d in spec.disruptions]
    ev.append({"kind": "surge", "start": t0, "end": t0 + hours * 60.0, "factor": factor})
    return {"disruptions": ev}


def equipment_failure(
    spec: FacilitySpec, station: str, lost: int = 1, start: float | None = None, hours: float = 12.0
) -> dict[str, Any]:
    """Stress patch: ``lost`` servers at ``station`` out of service for ``hours`` h."""
    t0 = spec.warmup if start is None else start
    ev = [d.model_dump(mode="json") for d in spec.disruptions]
    ev.append(
        {
            "kind": "capacity",
            "start": t0,
            "end": t0 + hours * 60.0,
            "station": station,
            "delta": -lost,
        }
    )
    return {"disruptions": ev}


def staff_sickness(
    spec: FacilitySpec, role: str, absent: int = 1, start: float | None = None, hours: float = 24.0
) -> dict[str, Any]:
    """Stress patch: ``absent`` staff of ``role`` missing (from its first station) for ``hours`` h."""
    stations = [n for n, s in spec.stations.items() if s.role == role]
    if not stations:
        raise SpecError(f"staff_sickness: no station has role {role!r}")
    return equipment_failure(spec, stations[0], absent, start, hours)


def compare(
    spec: FacilitySpec,
    scenarios: Mapping[str, Mapping[str, Any]],
    n_reps: int = 20,
    seed: int = 0,
    workers: int = 1,
    level: float = 0.95,
) -> dict[str, pd.DataFrame]:
    """Run base and each scenario with common random numbers; paired differences per KPI.

    Returns ``{"base": kpi frame, name: paired-difference table (scenario - base)}``; every
    value is simulated.
    """
    base = kpi_frame(run_replications(spec, n_reps, seed, workers))
    out: dict[str, pd.DataFrame] = {"base": base}
    for name, patch in scenarios.items():
        sp = apply_patch(spec, patch, name)
        other = kpi_frame(run_replications(sp, n_reps, seed, workers))
        out[name] = paired_difference(base, other, level)
    return out


def stress_test(
    spec: FacilitySpec, n_reps: int = 20, seed: int = 0, workers: int = 1
) -> pd.DataFrame:
    """Surge x1.5 for 6 h, loss of one server at the busiest station for 12 h and one absent
    staff member of each role for 24 h; paired effect on the headline KPIs (simulated)."""
    tests: dict[str, dict[str, Any]] = {"surge_x1.5_6h": surge(spec, 1.5, hours=6.0)}
    finite = [n for n, s in spec.stations.items() if not s.infinite and s.servers > 0]
    if finite:
        busiest = max(finite, key=lambda n: spec.stations[n].servers)
        tests[f"failure_{busiest}_12h"] = equipment_failure(spec, busiest, 1, hours=12.0)
    for role in sorted({s.role for s in spec.stations.values() if s.role}):
        try:
            tests[f"sickness_{role}_24h"] = staff_sickness(spec, role, 1, hours=24.0)
        except SpecError:
            continue
    res = compare(spec, tests, n_reps, seed, workers)
    heads = ["wait_mean[min]", "target_breach_fraction[1]", "lwbs_fraction[1]", "boarding_hours[h]"]
    rows = []
    for name in tests:
        tab = res[name]
        for k in heads:
            if k in tab.index:
                r = tab.loc[k]
                rows.append(
                    {
                        "test": name,
                        "kpi": k,
                        "base": r["base"],
                        "stressed": r["scenario"],
                        "diff": r["diff"],
                        "ci_low": r["ci_low"],
                        "ci_high": r["ci_high"],
                    }
                )
    out = pd.DataFrame(rows)
    out.attrs["simulated"] = True
    return out
