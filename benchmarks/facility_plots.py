"""Plots for docs/facility-*.md (writes docs/img/facility-*.png). Run:
``.venv/bin/python benchmarks/facility_plots.py``. All plotted results are simulated."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

from healthtwin.operations import queueing
from healthtwin.operations.calibrate import encounters_from_fhir, fit_arrivals, fit_duration
from healthtwin.operations.engine import run_replications
from healthtwin.operations.live import Census, CensusPatient, forecast
from healthtwin.operations.optimize import erlang_screen, rank_interventions
from healthtwin.operations.records import plot_occupancy
from healthtwin.operations.roster import build_roster
from healthtwin.operations.scenarios import extra_staff
from healthtwin.operations.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"


def mmc_validation() -> None:
    lams = np.array([0.12, 0.16, 0.2, 0.22, 0.24])
    means, hws = [], []
    for lam in lams:
        spec = parse_spec(
            {
                "name": "mm3",
                "horizon": 40000,
                "warmup": 2000,
                "stations": {"s": {"servers": 3}},
                "classes": {
                    "a": {
                        "share": 1.0,
                        "pathway": [
                            {
                                "name": "x",
                                "station": "s",
                                "service": {"dist": "exponential", "mean": 10},
                            }
                        ],
                    }
                },
                "arrivals": {"profile": [lam * 60]},
            }
        )
        w = np.array([r.kpis["wait_mean[min]"] for r in run_replications(spec, 10, 1)])
        means.append(w.mean())
        hws.append(stats.t.ppf(0.975, 9) * w.std(ddof=1) / np.sqrt(10))
    grid = np.linspace(0.05, 0.26, 100)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(grid / 0.3, [queueing.mmc(x, 0.1, 3)["wq"] for x in grid], label="Erlang C (exact)")
    ax.errorbar(lams / 0.3, means, yerr=hws, fmt="o", label="healthtwin (simulated, 95 % CI)")
    ax.set_xlabel("utilisation rho [1]")
    ax.set_ylabel("mean wait Wq [min]")
    ax.set_title("M/M/3, mu = 0.1 /min")
    ax.legend()
    fig.tight_layout()
    fig.savefig(IMG / "facility-mmc-validation.png", dpi=100)
    plt.close(fig)


def ed_occupancy() -> None:
    spec = load_spec("ed")
    plot_occupancy(run_replications(spec, 20, 0), IMG / "facility-ed-occupancy.png", spec.name)


def calibration() -> None:
    path = ROOT / "tests" / "facility" / "data" / "encounters_small.ndjson"
    df = encounters_from_fhir(json.loads(x) for x in path.read_text().splitlines())
    df = df[df["status"] == "finished"]
    fit = fit_arrivals(df["start"])
    dur = fit_duration(df["los"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    h = np.arange(24)
    a.errorbar(
        h, fit.hourly, yerr=[fit.hourly - fit.hourly_low, fit.hourly_high - fit.hourly], fmt="o"
    )
    a.axhline(1.5, color="k", ls="--", label="generating rate 1.5 /h")
    a.set_xlabel("hour of day [h]")
    a.set_ylabel("arrival rate [/h]")
    a.set_title("NHPP fit with 95 % Poisson intervals")
    a.legend()
    b.hist(df["los"], bins=30, density=True, alpha=0.5, label="observed LOS")
    x = np.linspace(1, df["los"].max(), 300)
    for _, row in dur.table.iterrows():
        fam = {
            "exponential": stats.expon,
            "lognormal": stats.lognorm,
            "gamma": stats.gamma,
            "weibull": stats.weibull_min,
        }[row["family"]]
        b.plot(x, fam.pdf(x, *row["params"]), label=f"{row['family']} AIC {row['aic']:.0f}")
    b.set_xlabel("length of stay [min]")
    b.set_ylabel("density [/min]")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(IMG / "facility-calibration.png", dpi=100)
    plt.close(fig)


def live_forecast() -> None:
    now = datetime(2026, 1, 19, 14, 0, tzinfo=UTC)
    pats = [
        CensusPatient(
            id=f"t{i}",
            cls="major",
            step="treat",
            arrived=now - timedelta(hours=3),
            since=now - timedelta(minutes=40),
            in_service=True,
        )
        for i in range(12)
    ]
    pats += [
        CensusPatient(id=f"w{i}", cls="minor", step="assess", arrived=now - timedelta(minutes=50))
        for i in range(15)
    ]
    pats += [
        CensusPatient(
            id=f"b{i}",
            cls="major",
            step="admit",
            arrived=now - timedelta(days=1),
            since=now - timedelta(hours=20),
            in_service=True,
        )
        for i in range(28)
    ]
    hours = list(range(1, 25))
    fc = forecast(load_spec("ed"), Census(as_of=now, patients=pats), hours, n_reps=40, seed=0)
    fig, ax = plt.subplots(figsize=(7, 4))
    for q in ("in_emergency_area[1]", "waiting_now[1]", "over_target_present[1]", "busy/ward[1]"):
        f = fc[fc["quantity"] == q]
        ax.plot(f["horizon[h]"], f["mean"], label=q)
        ax.fill_between(f["horizon[h]"], f["p05"], f["p95"], alpha=0.2)
    ax.set_xlabel("hours ahead [h]")
    ax.set_ylabel("patients [1]")
    ax.set_title("ED forecast from a census at 14:00 (simulated, mean and 90 % band)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(IMG / "facility-forecast.png", dpi=100)
    plt.close(fig)


def scenarios_and_roster() -> None:
    spec = load_spec("treatment_centre")
    interventions = {f"+1 {n}": extra_staff(spec, n) for n in spec.stations}
    r = rank_interventions(spec, interventions, "wait_mean[min]", n_reps=20, seed=0)
    fig, ax = plt.subplots(figsize=(7, 4))
    y = np.arange(len(r))
    ax.errorbar(
        r["effect"], y, xerr=[r["effect"] - r["ci_low"], r["ci_high"] - r["effect"]], fmt="o"
    )
    ax.set_yticks(y, r["intervention"])
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("change in mean total wait [min] (paired 95 % CI)")
    ax.set_title("Treatment centre: ranked interventions (simulated, CRN)")
    fig.tight_layout()
    fig.savefig(IMG / "facility-interventions.png", dpi=100)
    plt.close(fig)
    ed = load_spec("ed")
    req = erlang_screen(ed, "assessment", 15, 0.2)["servers[1]"].to_numpy()
    ro = build_roster(req)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    t = np.arange(7 * 24)
    ax.step(t, ro.required.ravel(), where="post", label="required (Erlang C screen)")
    ax.step(t, ro.coverage.ravel(), where="post", label="rostered (CP-SAT)")
    ax.set_xlabel("hour of week [h]")
    ax.set_ylabel("doctors [1]")
    ax.legend()
    fig.tight_layout()
    fig.savefig(IMG / "facility-roster.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    IMG.mkdir(parents=True, exist_ok=True)
    mmc_validation()
    ed_occupancy()
    calibration()
    live_forecast()
    scenarios_and_roster()
    print("wrote", sorted(p.name for p in IMG.glob("facility-*.png")))
