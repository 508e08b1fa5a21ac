"""What-if scenarios on a personalised twin: trajectories with uncertainty bands.

A scenario spec (dict, e.g. from YAML/JSON) over a horizon of ``hours`` (h)::

    {"name": "skip lunch bolus", "hours": 6,
     "meals": [[60, 50]],            # minute, carbohydrate (g)
     "boluses": [[60, "auto"]],      # minute, insulin ([IU]) or "auto" = meal / CR
     "basal": [[0, 0.8]],            # minute, basal rate from then on (U/h)
     "exercise": [[120, 180, 1.5]],  # start min, end min, insulin-sensitivity multiplier
     "missed": [60]}                 # minutes whose boluses are not given (missed dose)

Every result is simulated and carries the spec, seed and model version (for journaling).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from healthtwin.care.glucose.personalize import GlucoseEnKF
from healthtwin.models.physiology.bergman import MODEL_NAME, MODEL_VERSION

F64 = NDArray[np.float64]
_KEYS = {"name", "hours", "meals", "boluses", "basal", "exercise", "missed"}


@dataclass
class WhatIfResult:
    """Simulated CGM quantiles (N, T+1) in mg/dL: 5 %, 50 %, 95 %; ``t`` in min."""

    name: str
    t: F64
    p05: F64
    p50: F64
    p95: F64
    spec: dict[str, Any]
    seed: int | None
    model: str = MODEL_NAME
    version: str = MODEL_VERSION
    simulated: bool = True
    inputs: dict[str, F64] = field(default_factory=dict)


def scenario_inputs(
    spec: dict[str, Any], basal_u_min: F64, cr_g_per_u: F64
) -> tuple[F64, F64, F64, int]:
    """Insulin (U/min), carbohydrate (g/min) and SI factor (1), each (N, T), and T (min)."""
    unknown = set(spec) - _KEYS
    if unknown:
        raise ValueError(f"scenario {spec.get('name', '?')!r}: unknown keys {sorted(unknown)}")
    hours = float(spec.get("hours", 6))
    if not 0 < hours <= 72:
        raise ValueError(f"scenario hours = {hours} h is outside (0, 72] h")
    t = int(round(hours * 60))
    ub = np.atleast_1d(np.asarray(basal_u_min, dtype=float))
    cr = np.broadcast_to(np.asarray(cr_g_per_u, dtype=float), ub.shape)
    n = ub.shape[0]
    ins = np.repeat(ub[:, None], t, axis=1)
    cho = np.zeros((n, t))
    si = np.ones((n, t))

    def minute(v: Any, what: str) -> int:
        k = int(v)
        if not 0 <= k < t:
            raise ValueError(f"scenario {what} at minute {k} is outside [0, {t}) min")
        return k

    for k, rate_u_h in sorted(spec.get("basal", []), key=lambda r: r[0]):
        if not 0 <= float(rate_u_h) <= 10:
            raise ValueError(f"scenario basal {rate_u_h} U/h is outside [0, 10] U/h")
        ins[:, minute(k, "basal change") :] = float(rate_u_h) / 60.0
    for k, grams in spec.get("meals", []):
        if not 0 <= float(grams) <= 300:
            raise ValueError(f"scenario meal {grams} g is outside [0, 300] g")
        cho[:, minute(k, "meal")] += float(grams)
    missed = {int(m) for m in spec.get("missed", [])}
    for k, units in spec.get("boluses", []):
        kk = minute(k, "bolus")
        if kk in missed:
            continue
        if units == "auto":
            meal_here = np.array([g for m, g in spec.get("meals", []) if int(m) == kk]).sum()
            dose = meal_here / cr
        else:
            dose = np.full(n, float(units))
            if not 0 <= float(units) <= 50:
                raise ValueError(f"scenario bolus {units} [IU] is outside [0, 50] [IU]")
        ins[:, kk] += dose
    for a, b, factor in spec.get("exercise", []):
        if not 0.5 <= float(factor) <= 5:
            raise ValueError(f"scenario exercise factor {factor} is outside [0.5, 5]")
        si[:, minute(a, "exercise start") : int(b)] = float(factor)
    return ins, cho, si, t


def run_whatif(
    twin: GlucoseEnKF, scenarios: list[dict[str, Any]], cr_g_per_u: F64
) -> list[WhatIfResult]:
    """Simulate each scenario from the twin's current ensemble (side by side)."""
    twin._require_fitted("ens_")
    ub = twin.ub_.reshape(twin.n_twins_, twin.n_members)[:, 0]
    out = []
    for i, spec in enumerate(scenarios):
        ins, cho, si, t = scenario_inputs(spec, ub, cr_g_per_u)
        s = twin.forecast(t, ins, cho, si_factor=si)
        q = np.quantile(s, [0.05, 0.5, 0.95], axis=1)
        out.append(
            WhatIfResult(
                str(spec.get("name", f"scenario {i + 1}")), np.arange(t + 1, dtype=float),
                q[0], q[1], q[2], dict(spec), twin.seed,
                inputs={"insulin_u_min": ins, "cho_g_min": cho, "si_factor": si},
            )
        )  # fmt: skip
    return out
