"""Run records and outputs: event log (CSV), KPIs (JSON/CSV), plots, and a run record.

The run record (spec, spec hash, seed, replications, code version, KPI summary, created-at)
is what the spine's journal stores for a simulation; until the journal is wired in it is
written to ``run.json`` next to the outputs. Everything written is labelled simulated.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

import healthtwin
from healthtwin.operations.engine import LOG_CODES, RepResult
from healthtwin.operations.kpi import summarise
from healthtwin.operations.spec import FacilitySpec


class RunRecord(BaseModel):
    """A simulation run for the journal (all KPI values are simulated)."""

    kind: str = "simulation"
    simulated: bool = True
    spec_name: str
    spec_hash: str
    spec: dict[str, Any]
    seed: int
    replications: int
    code_version: str = Field(default_factory=lambda: healthtwin.__version__)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    command: str = "simulate"
    kpis: dict[str, dict[str, float | None]]  # None: not defined in any replication
    outputs: list[str] = Field(default_factory=list)


def _clean(x: float) -> float | None:
    return None if (isinstance(x, float) and (math.isnan(x) or math.isinf(x))) else float(x)


def make_record(
    spec: FacilitySpec, seed: int, results: list[RepResult], command: str = "simulate"
) -> RunRecord:
    """Run record with the KPI summary (mean, 95 % CI) of ``results``."""
    summ = summarise(results)
    kpis = {
        k: {c: _clean(float(summ.loc[k, c])) for c in ("mean", "ci_low", "ci_high", "n")}
        for k in summ.index
    }
    return RunRecord(
        spec_name=spec.name,
        spec_hash=spec.digest(),
        spec=spec.model_dump(mode="json"),
        seed=seed,
        replications=len(results),
        command=command,
        kpis=kpis,
    )


def event_log_frame(result: RepResult) -> pd.DataFrame:
    """Event log of one replication: time (min), patient, class, event, station."""
    df = pd.DataFrame(result.log, columns=["time[min]", "patient", "class", "event", "station"])
    df["event"] = pd.Categorical(df["event"], categories=list(LOG_CODES))
    df.attrs["simulated"] = True
    return df


def write_outputs(
    out_dir: str | Path,
    spec: FacilitySpec,
    seed: int,
    results: list[RepResult],
    plots: bool = True,
    command: str = "simulate",
) -> RunRecord:
    """Write kpis.csv (per replication), summary.json/csv, events.csv (replication 0, when
    logged), occupancy.png and run.json; return the run record."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    per_rep = pd.DataFrame([r.kpis for r in results])
    per_rep.insert(0, "replication", range(len(results)))
    per_rep.to_csv(out / "kpis.csv", index=False)
    written.append("kpis.csv")
    summ = summarise(results)
    summ.to_csv(out / "summary.csv")
    written.append("summary.csv")
    (out / "summary.json").write_text(
        json.dumps(
            {
                "simulated": True,
                "level": 0.95,
                "kpis": {
                    k: {c: _clean(float(v)) for c, v in row.items()} for k, row in summ.iterrows()
                },
            },
            indent=2,
        )
    )
    written.append("summary.json")
    if results and results[0].log:
        event_log_frame(results[0]).to_csv(out / "events.csv", index=False)
        written.append("events.csv")
    if plots and results:
        plot_occupancy(results, out / "occupancy.png", spec.name)
        written.append("occupancy.png")
    rec = make_record(spec, seed, results, command)
    rec.outputs = written
    (out / "run.json").write_text(rec.model_dump_json(indent=2))
    return rec


def plot_occupancy(results: list[RepResult], path: str | Path, title: str) -> None:
    """Busy servers per station over time: mean and 5-95 % band across replications."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    occ = np.stack([r.occupancy for r in results])  # (reps, samples, stations)
    t = results[0].sample_times / 60.0
    fig, ax = plt.subplots(figsize=(8, 4))
    for si, st in enumerate(results[0].stations):
        m = occ[:, :, si].mean(axis=0)
        lo, hi = np.percentile(occ[:, :, si], [5, 95], axis=0)
        ax.plot(t, m, label=st)
        ax.fill_between(t, lo, hi, alpha=0.2)
    ax.set_xlabel("time since start [h]")
    ax.set_ylabel("busy servers [1]")
    ax.set_title(f"{title}: occupancy (simulated, mean and 5-95 %)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
