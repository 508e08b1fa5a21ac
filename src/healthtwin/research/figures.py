"""Regenerate the documentation figures: ``python -m healthtwin.research.figures docs/img``.

Writes cohort-power-curves.png, cohort-external-shift.png, cohort-vpop-fit.png and
cohort-dose.png (all from simulated data, fixed seeds). The virtual-population figure uses the
Synthea bundles in ``$HEALTHTWIN_SHARED/data`` (or ``../shared/data``) when present and a
synthetic cohort otherwise.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd


def main(out_dir: str = "docs/img") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from healthtwin.research.external import shift_experiment
    from healthtwin.research.optimize import optimise_dose
    from healthtwin.research.report import DesignSpec, design_report
    from healthtwin.research.vpop import UNITS, VirtualPopulation, load_synthea_cohort

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        design_report(DesignSpec(reps=4000), tmp, seed=0)
        (out / "cohort-power-curves.png").write_bytes((Path(tmp) / "power_curves.png").read_bytes())

    shifts = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0]
    res = shift_experiment(shifts, reps=4000, seed=0)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(shifts, [r.type1_external for r in res], "o-", label="naive external control")
    ax.plot(shifts, [r.type1_twin for r in res], "s-", label="twin synthetic control")
    ax.plot(shifts, [r.type1_procova for r in res], "^-", label="randomised + PROCOVA")
    ax.axhline(0.05, color="grey", ls=":")
    ax.set_xlabel("shift of an unmeasured prognostic factor (sd)")
    ax.set_ylabel("type-I error (1), two-sided α = 0.05")
    ax.set_title("Simulated: external controls under population shift")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "cohort-external-shift.png", dpi=110)
    plt.close(fig)

    shared = Path(os.environ.get("HEALTHTWIN_SHARED", Path.cwd().parent / "shared")) / "data"
    bundles = shared / "fhir" / "synthea-bundles"
    if bundles.is_dir():
        cohort, source = load_synthea_cohort(bundles), "Synthea (56 bundles, adults)"
    else:
        rng0 = np.random.default_rng(0)
        cohort = pd.DataFrame(
            {
                "age": rng0.normal(55, 9, 60),
                "bmi": rng0.normal(28, 3, 60),
                "sbp": rng0.normal(130, 15, 60),
            }
        )
        source = "synthetic cohort"
    rng = np.random.default_rng(1)
    vp = VirtualPopulation().fit(cohort)
    plaus, _ = vp.plausible(30_000, np.random.default_rng(1))
    sel = vp.select(30_000, rng)
    cols = [c for c in ("age", "bmi", "sbp", "chol") if c in cohort.columns]
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3.2))
    for ax, c in zip(np.atleast_1d(axes), cols, strict=True):
        for data, lab, st in (
            (plaus[c], "plausible", ":"),
            (sel[c], "selected virtual", "-"),
            (cohort[c].dropna(), "target", "--"),
        ):
            x = np.sort(np.asarray(data, float))
            ax.step(x, np.arange(1, x.size + 1) / x.size, st, where="post", label=lab)
        ax.set_xlabel(f"{c} ({UNITS[c]})")
        ax.set_ylabel("ECDF (1)")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle(f"Virtual population vs {source} (simulated)")
    fig.tight_layout()
    fig.savefig(out / "cohort-vpop-fit.png", dpi=110)
    plt.close(fig)

    doses = np.linspace(5, 400, 80)
    ch = optimise_dose(
        doses,
        n=150,
        sigma=1.0,
        e_max=(0.8, 0.1),
        ed50=(50, 10),
        ae_intercept=(-3.0, 0.3),
        ae_slope=(0.01, 0.002),
        max_ae=0.3,
    )
    t = ch.table
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(t["dose_mg"], t["power_mean"], label="expected power")
    ax.plot(t["dose_mg"], t["p_ae_mean"], label="P(adverse event)")
    ax.fill_between(t["dose_mg"], t["p_ae_low95"], t["p_ae_up95"], alpha=0.3, label="95% interval")
    ax.axhline(0.3, color="grey", ls=":")
    ax.axvline(ch.dose, color="k", ls="--", label=f"chosen {ch.dose:.0f} mg")
    ax.set_xlabel("dose (mg)")
    ax.set_ylabel("probability (1)")
    ax.set_title("Simulated dose optimisation (n = 150, upper P_AE ≤ 0.3)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "cohort-dose.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main(*sys.argv[1:])
