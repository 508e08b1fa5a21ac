"""Glucose twin evaluation (results recorded in docs/glucose-twin.md) and the docs' plots.

1. Closed loop on all 30 virtual patients, multi-day random meal scenarios: basal-bolus
   baseline vs MPC twin controller (TIR / TBR / TAR, LBGI / HBGI, CVGA zones).
2. Forecasts on all 30 patients, 2-fold held out: twin settings tuned on one fold of
   patients (seed 11), scored on the other fold (``--seed``), day 2 after a day of
   personalisation; plus cross-model personalisation and cold-start forecasts on adolescents
   and children (day 1), CGM noise model GuardianRT, CR boluses x U(0.8, 1.8).
3. Predicted-hypoglycaemia alerts: precision, recall, lead time.
4. Plots to docs/img/.

    .venv/bin/python benchmarks/glucose_evaluation.py [--days 3] [--seed 1] [--no-plots]
        [--simglucose-baseline] [--only forecast|control]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from healthtwin.care.glucose import metrics as M
from healthtwin.care.glucose.alerts import predictive_alerts, score_alerts
from healthtwin.care.glucose.control import closed_loop, random_meal_scenario
from healthtwin.care.glucose.forecast import rolling_forecast
from healthtwin.care.glucose.personalize import GlucoseEnKF
from healthtwin.care.glucose.whatif import run_whatif
from healthtwin.models.physiology.devices import CGMSensor
from healthtwin.models.physiology.uva_padova import (
    UVAPadovaParams,
    all_patient_names,
    simulate_uva_padova,
)

IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


def _q(v: np.ndarray) -> str:
    q = np.percentile(v, [10, 50, 90])
    return f"median {q[1]:6.2f} (10-90%: {q[0]:6.2f}-{q[2]:6.2f}) mean {v.mean():6.2f}"


def _paired(d: np.ndarray) -> str:
    q = np.percentile(d, [10, 50, 90])
    return f"median {q[1]:+5.1f} (10-90%: {q[0]:+5.1f} to {q[2]:+5.1f})"


def closed_loop_eval(days: int, seed: int) -> dict[str, object]:
    p = UVAPadovaParams.from_names(all_patient_names())
    meals = random_meal_scenario(p.n, days, np.random.default_rng(seed))
    out: dict[str, object] = {}
    for c in ("bb", "mpc"):
        t0 = time.perf_counter()
        r = closed_loop(p, meals, c, seed=seed)
        out[c] = r
        print(f"\n[closed loop, {c}, 30 patients x {days} d, seed {seed}, "
              f"{time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f}, simulated]")  # fmt: skip
        for k in ("tir", "tbr", "tar", "lbgi", "hbgi"):
            print(f"  {k:5s}: {_q(r.metrics[k])}")
        zones, counts = np.unique(M.cvga_zone(r.bg), return_counts=True)
        print("  CVGA :", dict(zip(zones.tolist(), counts.tolist(), strict=True)))
    bb, mpc = out["bb"], out["mpc"]
    print("  per patient: TIR / TBR / TAR (%) basal-bolus | MPC")
    for i, name in enumerate(p.names):
        b, q = bb.metrics, mpc.metrics  # type: ignore[attr-defined]
        print(f"   {name:15s} {b['tir'][i]:5.1f} / {b['tbr'][i]:4.1f} / {b['tar'][i]:4.1f} | "
              f"{q['tir'][i]:5.1f} / {q['tbr'][i]:4.1f} / {q['tar'][i]:4.1f}")  # fmt: skip
    d_tir = mpc.metrics["tir"] - bb.metrics["tir"]  # type: ignore[attr-defined]
    d_tbr = mpc.metrics["tbr"] - bb.metrics["tbr"]  # type: ignore[attr-defined]
    print("  paired MPC - basal-bolus per patient (percentage points):")
    for grp in ("all", "adolescent", "adult", "child"):
        idx = np.array([grp == "all" or n.startswith(grp) for n in p.names])
        better = (d_tir > 0) & (d_tbr <= 0)
        not_worse = (d_tir >= 0) & (d_tbr <= 0)
        print(f"   {grp:10s} TIR {bb.metrics['tir'][idx].mean():5.1f} -> {mpc.metrics['tir'][idx].mean():5.1f} "  # type: ignore[attr-defined]
              f"TBR {bb.metrics['tbr'][idx].mean():4.1f} -> {mpc.metrics['tbr'][idx].mean():4.1f} (means); "  # type: ignore[attr-defined]
              f"dTIR {_paired(d_tir[idx])}; dTBR {_paired(d_tbr[idx])}; "
              f"higher TIR & no more TBR {int(better[idx].sum())}/{int(idx.sum())}, "
              f"not worse {int(not_worse[idx].sum())}/{int(idx.sum())}")  # fmt: skip
    return out


def simglucose_scenario_adult001() -> None:
    """adult#001 on simglucose's own RandomScenario(seed=1) meals for 3 days (BB vs MPC)."""
    from datetime import datetime, timedelta

    from simglucose.simulation.scenario_gen import RandomScenario

    start = datetime(2026, 1, 1)
    sc = RandomScenario(start_time=start, seed=1)
    meals = np.array([[sc.get_action(start + timedelta(minutes=k)).meal for k in range(3 * 1440)]])
    p = UVAPadovaParams.from_names(["adult#001"])
    print(
        "\n[adult#001, simglucose RandomScenario(seed=1) meals, 3 d, our CGM seeds 1-3, simulated]"
    )
    for c in ("bb", "mpc"):
        ms = [closed_loop(p, meals, c, seed=s).metrics for s in (1, 2, 3)]
        tir = np.mean([m["tir"][0] for m in ms])
        tbr = np.mean([m["tbr"][0] for m in ms])
        print(f"  {c:3s}: TIR {tir:5.1f} %  TBR {tbr:4.1f} %  (mean of 3 sensor seeds)")


def simglucose_bb_baseline() -> None:
    """simglucose's own basal-bolus controller, adult#001, 3 d, RandomScenario(seed=1)."""
    from datetime import datetime, timedelta

    from simglucose.actuator.pump import InsulinPump
    from simglucose.controller.basal_bolus_ctrller import BBController
    from simglucose.patient.t1dpatient import T1DPatient
    from simglucose.sensor.cgm import CGMSensor as SgCGM
    from simglucose.simulation.env import T1DSimEnv
    from simglucose.simulation.scenario_gen import RandomScenario
    from simglucose.simulation.sim_engine import SimObj, sim

    start = datetime(2026, 1, 1)
    env = T1DSimEnv(
        T1DPatient.withName("adult#001"),
        SgCGM.withName("Dexcom", seed=1),
        InsulinPump.withName("Insulet"),
        RandomScenario(start_time=start, seed=1),
    )
    df = sim(
        SimObj(env, BBController(), timedelta(days=3), animate=False, path="/tmp/simglucose-bb")
    )
    bg = df.BG.to_numpy()
    print("\n[simglucose 0.2.11 BBController, adult#001, 3 d, RandomScenario(seed=1)]")
    print(
        f"  TIR {100 * np.mean((bg >= 70) & (bg <= 180)):.1f} %  TBR {100 * np.mean(bg < 70):.1f} %"
    )


#: forecast tuning folds: patients #001-#005 (A) and #006-#010 (B) of every age group
FOLDS = {
    "A": [f"{g}#{i:03d}" for g in ("adolescent", "adult", "child") for i in range(1, 6)],
    "B": [f"{g}#{i:03d}" for g in ("adolescent", "adult", "child") for i in range(6, 11)],
}
TUNE_SEED = 11
#: twin settings searched on the tuning fold (disturbance sd mg/dL/min, its time constant min)
GRID = [
    {"disturbance_sd": s, "disturbance_tau_min": t} for s in (0.5, 1.0, 2.0) for t in (60.0, 120.0)
]


def forecast_run(names: list[str], seed: int, cfg: dict[str, float]) -> object:
    """Day 1 personalises the twin, day 2 is scored (origins every 15 min)."""
    d = data(names, seed, hours=48)
    return rolling_forecast(GlucoseEnKF(seed=seed, **cfg), d["y"], d["ins"], d["cho"], d["bw"],
                            d["ub"], score_from_min=1440)  # fmt: skip


def _fc_line(s: dict[str, float]) -> str:
    return (f"RMSE {s['rmse_mg_dl']:5.1f} mg/dL  MARD {s['mard_pct']:5.1f} %  coverage "
            f"{s['coverage_pct']:5.1f} %  Clarke A {s['clarke_A_pct']:5.1f} B {s['clarke_B_pct']:4.1f} "
            f"C {s['clarke_C_pct']:3.1f} D {s['clarke_D_pct']:3.1f} E {s['clarke_E_pct']:3.1f} %")  # fmt: skip


def forecast_eval(seed: int) -> None:
    """2-fold: tune on one fold (seed TUNE_SEED), score the other fold on ``seed``."""
    rows: dict[str, list[np.ndarray]] = {}
    for tune, test in (("A", "B"), ("B", "A")):
        t0 = time.perf_counter()
        best = min(
            GRID, key=lambda c: forecast_run(FOLDS[tune], TUNE_SEED, c).scores[30]["rmse_mg_dl"]
        )  # type: ignore[attr-defined]
        print(f"\n[forecast fold {test}: tuned on fold {tune} seed {TUNE_SEED} -> {best}; "
              f"{time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f}]")  # fmt: skip
        for name, cfg in (
            ("previous twin (no disturbance), calibrated", {"disturbance_sd": 0.0}),
            ("tuned twin", best),
        ):
            ev = forecast_run(FOLDS[test], seed, cfg)
            print(f"  {name}, fold {test} seed {seed}, day 2 (simulated):")
            for h, sc in ev.scores.items():  # type: ignore[attr-defined]
                print(f"   {h:3d} min: {_fc_line(sc)}")
            if name == "tuned twin":
                for h in ev.horizons:  # type: ignore[attr-defined]
                    rows.setdefault(f"{h}", []).append(
                        np.stack([ev.median[h], ev.reference[h], ev.low[h], ev.high[h]])
                    )  # type: ignore[attr-defined]
                rows.setdefault("names", []).append(np.array(FOLDS[test]))
                rows.setdefault("scored", []).append(ev.origins >= 1440)  # type: ignore[attr-defined]
    names = np.concatenate(rows["names"])
    print(f"\n[forecast, all 30 patients held out (2 folds), seed {seed}, day 2, simulated]")
    for grp in ("all", "adolescent", "adult", "child"):
        sel = np.array([grp == "all" or n.startswith(grp) for n in names])
        print(f"  {grp}:")
        for h in (30, 60, 120):
            a = np.concatenate(rows[f"{h}"], axis=1)[:, :, rows["scored"][0]]
            med, ref, lo, hi = (a[i][sel] for i in range(4))
            ok = np.isfinite(ref)
            z = M.zone_percentages(ref[ok], med[ok])
            per = [M.rmse(med[i], ref[i]) for i in range(med.shape[0])]
            print(f"   {h:3d} min: RMSE {M.rmse(med, ref):5.1f} mg/dL (per patient {_q(np.array(per))})  "
                  f"MARD {M.mard(med, ref):5.1f} %  coverage {M.coverage(ref[ok], lo[ok], hi[ok]):5.1f} %  "
                  f"Clarke A {z['A']:5.1f} B {z['B']:4.1f} C {z['C']:3.1f} D {z['D']:3.1f} E {z['E']:3.1f} %")  # fmt: skip


def data(names: list[str], seed: int, hours: int = 24) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = UVAPadovaParams.from_names(names)
    t = hours * 60
    meals = random_meal_scenario(p.n, int(np.ceil(hours / 24)), rng)[:, :t]
    ins = p.basal_u_per_min[:, None] + meals / p.quest["CR"][:, None] * rng.uniform(
        0.8, 1.8, (p.n, 1)
    )
    r = simulate_uva_padova(p, meals, ins)
    ts, cgm = CGMSensor.named("GuardianRT").measure(r.t, r.gsub, rng)
    y = np.full((p.n, t + 1), np.nan)
    y[:, ts.astype(int)] = cgm
    pad = np.zeros((p.n, 1))
    return {"y": y, "gsub": r.gsub, "bg": r.bg, "bw": p["BW"], "ub": p.basal_u_per_min,
            "ins": np.hstack([r.insulin, pad]), "cho": np.hstack([r.cho, pad])}  # fmt: skip


def twin_eval(seed: int) -> dict[str, np.ndarray]:
    names = [n for n in all_patient_names() if not n.startswith("adult")]
    d = data(names, seed)
    f = GlucoseEnKF(seed=seed).fit(d["y"], d["ins"], d["cho"], d["bw"], d["ub"])
    fit = [M.rmse(f.filtered_[i], d["gsub"][i]) for i in range(len(names))]
    print(f"\n[personalisation, EnKF, {len(names)} adolescents+children, 24 h, simulated]")
    print(f"  24-h fit RMSE vs true Gs (mg/dL): {_q(np.array(fit))}")
    ev = rolling_forecast(GlucoseEnKF(seed=seed), d["y"], d["ins"], d["cho"], d["bw"], d["ub"])
    print(
        "  forecasts, cold start (day 1 from 2 h; reference = noisy CGM at origin + horizon,"
        " 90 % intervals):"
    )
    for h, s in ev.scores.items():
        print(f"   {h:3d} min: RMSE {s['rmse_mg_dl']:5.1f} mg/dL  MARD {s['mard_pct']:5.1f} %  "
              f"coverage {s['coverage_pct']:5.1f} %  Clarke A {s['clarke_A_pct']:5.1f} B "
              f"{s['clarke_B_pct']:4.1f} C {s['clarke_C_pct']:3.1f} D {s['clarke_D_pct']:3.1f} "
              f"E {s['clarke_E_pct']:3.1f} %")  # fmt: skip
    ev_alert = predictive_alerts(
        GlucoseEnKF(seed=seed), d["y"], d["ins"], d["cho"], d["bw"], d["ub"]
    )
    sc = score_alerts(ev_alert, d["bg"], "hypo-predicted")
    print(f"  hypo alerts (<70 within 30 min): precision {sc.precision:.2f}, recall {sc.recall:.2f}, "
          f"median lead {sc.median_lead_min:.0f} min ({sc.n_alerts} alerts, {sc.n_events} episodes)")  # fmt: skip
    sh = score_alerts(ev_alert, d["bg"], "hyper-predicted", threshold=250.0)
    print(f"  hyper alerts (>250 within 30 min): precision {sh.precision:.2f}, recall {sh.recall:.2f}, "
          f"median lead {sh.median_lead_min:.0f} min ({sh.n_alerts} alerts, {sh.n_events} episodes)")  # fmt: skip
    return {**d, "filtered": f.filtered_, "names": np.array(names)}


def plots(cl: dict[str, object], tw: dict[str, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    # 1. simglucose protocol
    p = UVAPadovaParams.from_names(["adult#001"])
    meals = np.zeros((1, 360))
    meals[0, 60] = 50
    ins = np.full((1, 360), p.basal_u_per_min[0])
    ins[0, 60] += 50 / p.quest["CR"][0]
    r = simulate_uva_padova(p, meals, ins)
    rh = simulate_uva_padova(p, meals, ins, meal_dose="announced")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(r.t, r.bg[0], label="plasma glucose (S2008, simglucose-compatible)")
    ax.plot(r.t, r.gsub[0], label="subcutaneous glucose")
    ax.plot(rh.t, rh.gsub[0], "--", label="subcutaneous, meal_dose='announced'")
    ax.set(
        xlabel="time (min)",
        ylabel="glucose (mg/dL)",
        title="adult#001: 50 g at 60 min + 50/CR bolus (simulated)",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(IMG / "glucose-protocol.png", dpi=110)
    # 2. closed loop: paired per patient, by age group
    fig, ax = plt.subplots(1, 2, figsize=(9, 4))
    bb, mpc = cl["bb"].metrics, cl["mpc"].metrics  # type: ignore[attr-defined]
    groups = np.array([n.split("#")[0] for n in cl["bb"].names])  # type: ignore[attr-defined]
    for i, (k, lim) in enumerate((("tir", (0, 101)), ("tbr", (-1, 75)))):
        for g, mk in (("adolescent", "o"), ("adult", "s"), ("child", "^")):
            sel = groups == g
            ax[i].scatter(bb[k][sel], mpc[k][sel], marker=mk, label=g, alpha=0.8)
        ax[i].plot(lim, lim, "k--", lw=0.8)
        ax[i].set(xlim=lim, ylim=lim, xlabel=f"basal-bolus {k.upper()} (%)",
                  ylabel=f"MPC twin {k.upper()} (%)")  # fmt: skip
    ax[0].set_title("TIR: above the diagonal = MPC better")
    ax[1].set_title("TBR: below the diagonal = MPC better")
    ax[0].legend(fontsize=8)
    fig.suptitle("30 virtual patients, 3 days, paired per patient (simulated)")
    fig.tight_layout()
    fig.savefig(IMG / "glucose-closed-loop.png", dpi=110)
    # 3. forecast/filter example + what-if
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    t = np.arange(tw["y"].shape[1])
    ax[0].plot(t, tw["gsub"][0], label="true Gs (UVA/Padova)")
    ax[0].plot(t, tw["y"][0], ".", ms=2, label="CGM (noisy)")
    ax[0].plot(t, tw["filtered"][0], label="EnKF Bergman twin")
    ax[0].set(xlabel="time (min)", ylabel="mg/dL", title=f"{tw['names'][0]} (simulated)")
    ax[0].legend(fontsize=8)
    twin = GlucoseEnKF(seed=1).start(np.array([70.0]), np.array([0.015]), np.array([130.0]))
    base = {"name": "meal + bolus", "hours": 6, "meals": [[30, 60]], "boluses": [[30, "auto"]]}
    specs = [base, {**base, "name": "missed bolus", "missed": [30]},
             {**base, "name": "exercise 60-180 min", "exercise": [[60, 180, 2.0]]}]  # fmt: skip
    for res in run_whatif(twin, specs, np.array([10.0])):
        ax[1].plot(res.t, res.p50[0], label=res.name)
        ax[1].fill_between(res.t, res.p05[0], res.p95[0], alpha=0.2)
    ax[1].set(xlabel="time (min)", ylabel="CGM (mg/dL)", title="what-if, 90 % bands (simulated)")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(IMG / "glucose-twin.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument(
        "--simglucose-baseline", action="store_true", help="also run simglucose (~1 min)"
    )
    ap.add_argument("--only", choices=["forecast", "control"], help="run one part only")
    a = ap.parse_args()
    if a.only == "forecast":
        forecast_eval(a.seed)
        return
    if a.only == "control":
        closed_loop_eval(a.days, a.seed)
        return
    cl = closed_loop_eval(a.days, a.seed)
    simglucose_scenario_adult001()
    if a.simglucose_baseline:
        simglucose_bb_baseline()
    forecast_eval(a.seed)
    tw = twin_eval(a.seed)
    if not a.no_plots:
        plots(cl, tw)


if __name__ == "__main__":
    main()
