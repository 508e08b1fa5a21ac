"""Make the figures of docs/models-trajectory.md, docs/models-markov.md and docs/models-sde.md.

Run: ``.venv/bin/python benchmarks/models_dynamics_plots.py`` (writes docs/img/*.png).
The trajectory figure uses the Synthea bundles in ../shared/data when present (BMI of adults);
otherwise it falls back to a simulated panel and says so in the title.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from healthtwin.models.markov import (  # noqa: E402
    MarkovCohortModel,
    microsimulate,
    sick_sicker_strategies,
)
from healthtwin.models.sde import (  # noqa: E402
    brownian_increments,
    euler_maruyama,
    gbm_exact,
    milstein,
    ou_exact_moments,
    ou_model,
)
from healthtwin.models.trajectory import LinearTrajectoryODE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMG = REPO / "docs" / "img"


def load_synthea_bmi(root: Path, min_obs: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BMI (kg/m2, LOINC 39156-5) panels from the Synthea bundles: (times a, y, h0).

    Times are years since each patient's first BMI; h0 is that first BMI; rows are padded
    with NaN (ragged panel)."""
    rows = []
    for f in sorted((root / "fhir" / "synthea-bundles").glob("*.json")):
        obs = []
        for e in json.loads(f.read_text())["entry"]:
            r = e["resource"]
            if r["resourceType"] != "Observation" or "valueQuantity" not in r:
                continue
            if r["code"]["coding"][0]["code"] != "39156-5":
                continue
            when = datetime.fromisoformat(r["effectiveDateTime"].replace("Z", "+00:00"))
            obs.append((when.timestamp() / (365.25 * 86400), r["valueQuantity"]["value"]))
        obs.sort()
        if len(obs) >= min_obs:
            t = np.array([o[0] for o in obs])
            keep = np.concatenate([[True], np.diff(t) > 1e-3])  # drop same-day repeats
            rows.append((t[keep] - t[0], np.array([o[1] for o in obs])[keep]))
    m = max(len(t) for t, _ in rows) - 1
    times = np.full((len(rows), m), np.nan)
    y = np.full((len(rows), m), np.nan)
    h0 = np.empty(len(rows))
    for i, (t, v) in enumerate(rows):
        times[i, : len(t) - 1] = t[1:]
        y[i, : len(t) - 1] = v[1:]
        h0[i] = v[0]
    return times, y, h0


def plot_trajectory() -> None:
    shared = Path(os.environ.get("HEALTHTWIN_SHARED", REPO.parent / "shared")) / "data"
    if shared.is_dir():
        times, y, h0 = load_synthea_bmi(shared)
        source = f"Synthea BMI, {len(h0)} patients (../shared/data)"
    else:  # fallback: simulated
        rng = np.random.default_rng(0)
        times = np.cumsum(rng.uniform(0.5, 2, (40, 6)), axis=1)
        h0 = rng.normal(28, 4, 40)
        y = 26 + (h0[:, None] - 26) * np.exp(-0.2 * times) + rng.normal(0, 1, times.shape)
        source = "simulated panel (shared data absent)"
    ones = np.ones(h0.size)  # X = 1: dH/dt = alpha H + beta (set point -beta/alpha)
    model = LinearTrajectoryODE(unit="kg/m2", time_unit="a").fit(times, y, h0, X=ones)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i in range(min(6, h0.size)):
        ok = np.isfinite(y[i])
        grid = np.linspace(0.01, np.nanmax(times[i][ok]), 40)
        est, lo, hi = model.predict_interval(
            grid[None, :], h0[i : i + 1], X=ones[:1], include_noise=True, n_draws=200
        )
        (line,) = ax.plot(grid, est[0], lw=1.5)
        ax.fill_between(grid, lo[0], hi[0], color=line.get_color(), alpha=0.15)
        ax.plot(
            np.concatenate([[0], times[i][ok]]),
            np.concatenate([[h0[i]], y[i][ok]]),
            "o",
            color=line.get_color(),
            ms=4,
        )
    tab = model.summary_.table
    ax.set_title(
        f"dH/dt = aH + b fitted to {source}\n"
        f"a = {tab.loc['alpha', 'estimate']:.3f} /a "
        f"[{tab.loc['alpha', 'ci_low']:.3f}, {tab.loc['alpha', 'ci_high']:.3f}]",
        fontsize=9,
    )
    ax.set_xlabel("years since first BMI (a)")
    ax.set_ylabel("BMI (kg/m2)")
    fig.tight_layout()
    fig.savefig(IMG / "trajectory-fit.png", dpi=110)
    plt.close(fig)
    print(tab)


def plot_markov() -> None:
    specs = sick_sicker_strategies()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    names = ["Healthy", "Sick", "Sicker", "Dead"]
    for ax, strat in zip(axes, ["Standard of care", "Strategy AB"], strict=True):
        spec = specs[strat]
        trace = MarkovCohortModel(spec["transition"]).simulate([1, 0, 0, 0], 75)
        sim = microsimulate(np.zeros(20_000, dtype=np.int64), spec["transition"], 75, seed=1)
        for k, name in enumerate(names):
            (line,) = ax.plot(trace[:, k], label=f"{name} (cohort)")
            ax.plot(sim.trace()[:, k], ":", color=line.get_color(), lw=2)
        ax.set_title(f"Sick-Sicker, {strat}\n(solid: cohort; dotted: 20,000 simulated)", fontsize=9)
        ax.set_xlabel("cycle (a), age 25 + cycle")
    axes[0].set_ylabel("proportion of cohort")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(IMG / "markov-sick-sicker-trace.png", dpi=110)
    plt.close(fig)


def plot_sde() -> None:
    theta, mu, sigma, h0 = 0.8, 100.0, 12.0, 160.0  # glucose-like mg/dL, time in d
    model = ou_model(theta, mu, sigma, dt=0.01, unit="mg/dL", time_unit="d")
    bands = model.quantile_bands(h0, 5.0, n_paths=20_000, record_every=5, seed=0)
    mean, var = ou_exact_moments(h0, theta, mu, sigma, bands.times)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    ax.fill_between(bands.times, bands.values[0], bands.values[-1], alpha=0.2, label="5-95 %")
    ax.fill_between(bands.times, bands.values[1], bands.values[-2], alpha=0.3, label="25-75 %")
    ax.plot(bands.times, bands.values[2], label="median (simulated)")
    ax.plot(bands.times, mean, "k--", lw=1, label="exact mean")
    ax.plot(bands.times, mean + 1.645 * np.sqrt(var), "k:", lw=1, label="exact 5/95 %")
    ax.plot(bands.times, mean - 1.645 * np.sqrt(var), "k:", lw=1)
    ax.set_title("OU dH = 0.8(100 - H)dt + 12 dW: simulated quantile bands", fontsize=9)
    ax.set_xlabel("time (d)")
    ax.set_ylabel("H (mg/dL)")
    ax.legend(fontsize=7)
    # convergence on GBM against the exact solution on the same Brownian path
    rng = np.random.default_rng(11)
    fine, n_paths, mu_g, sig_g = 2**10, 2000, 0.5, 0.8
    dw = brownian_increments(n_paths, fine, 1.0 / fine, rng)
    exact = gbm_exact(1.0, mu_g, sig_g, 1.0, dw.sum(axis=1))
    dts, em_err, mil_err = [], [], []
    for n in (2**3, 2**4, 2**5, 2**6, 2**7, 2**8):
        c = dw.reshape(n_paths, n, -1).sum(axis=2)
        x_em = euler_maruyama(lambda h, x, t: mu_g * h, lambda h, x, t: sig_g * h, 1.0, c, 1 / n)
        x_mil = milstein(
            lambda h, x, t: mu_g * h,
            lambda h, x, t: sig_g * h,
            lambda h, x, t: sig_g,
            1.0,
            c,
            1 / n,
        )
        dts.append(1 / n)
        em_err.append(np.mean(np.abs(x_em[:, -1] - exact)))
        mil_err.append(np.mean(np.abs(x_mil[:, -1] - exact)))
    s_em = np.polyfit(np.log(dts), np.log(em_err), 1)[0]
    s_mil = np.polyfit(np.log(dts), np.log(mil_err), 1)[0]
    ax = axes[1]
    ax.loglog(dts, em_err, "o-", label=f"Euler-Maruyama (slope {s_em:.2f})")
    ax.loglog(dts, mil_err, "s-", label=f"Milstein (slope {s_mil:.2f})")
    ax.set_xlabel("dt")
    ax.set_ylabel("E|X_T - X(T)| (strong error)")
    ax.set_title("GBM strong convergence, same Brownian paths (2,000)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(IMG / "sde-bands-convergence.png", dpi=110)
    plt.close(fig)
    print(f"strong slopes: Euler {s_em:.3f}, Milstein {s_mil:.3f}")


def main() -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    plot_trajectory()
    plot_markov()
    plot_sde()


if __name__ == "__main__":
    main()
