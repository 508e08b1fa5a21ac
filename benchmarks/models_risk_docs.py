"""Figures and numbers for docs/models-risk.md and docs/models-evaluation.md.

Run: ``.venv/bin/python benchmarks/models_risk_docs.py`` (writes docs/img/*.png, prints the
worked-example numbers quoted in the docs). Offline: uses scikit-learn's breast-cancer data.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_breast_cancer

from healthtwin.models import evaluation as ev
from healthtwin.models.risk import LogisticRiskModel, framingham_cvd_risk, pooled_cohort_risk

IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


def breast_cancer_split(
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Three standardised features, outcome = malignant (1), random half split."""
    data = load_breast_cancer()
    names = ["mean radius", "mean texture", "mean smoothness"]
    X = data.data[:, [list(data.feature_names).index(c) for c in names]]
    y = (data.target == 0).astype(float)  # sklearn codes malignant as 0
    idx = np.random.default_rng(seed).permutation(y.size)
    tr, te = idx[: y.size // 2], idx[y.size // 2 :]
    mu, sd = X[tr].mean(axis=0), X[tr].std(axis=0)
    Z = (X - mu) / sd
    return Z[tr], y[tr], Z[te], y[te], names


def main() -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    # --- PCE by age for the guideline example profile
    age = np.linspace(40, 79, 80)
    fig, ax = plt.subplots(figsize=(6, 4))
    for sex in ("female", "male"):
        for race in ("white", "african_american"):
            r = pooled_cohort_risk(age, sex, race, 213, 50, 120, 0, 0, 0)
            ax.plot(age, 100 * r, label=f"PCE {race.replace('_', ' ')} {sex}")
    ax.plot(
        age[age <= 74],
        100 * framingham_cvd_risk(age[age <= 74], "male", 213, 50, 120, 0, 0, 0),
        "k--",
        label="Framingham 2008 male",
    )
    ax.axvline(55, color="grey", lw=0.5)
    ax.set(
        xlabel="age (a)",
        ylabel="10-year risk (%)",
        title="TC 213 mg/dL, HDL 50 mg/dL, SBP 120 mm[Hg] untreated",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(IMG / "risk_pce_by_age.png", dpi=110)
    plt.close(fig)

    # --- logistic model on breast cancer, evaluated on the held-out half
    Xtr, ytr, Xte, yte, names = breast_cancer_split()
    model = LogisticRiskModel(feature_names=names, allow_extrapolation=True).fit(Xtr, ytr)
    for row in model.summary():
        print(
            f"{row['name']:>16}: {row['estimate']:+.3f} (95 % CI {row['lower']:+.3f} to {row['upper']:+.3f})"
        )
    p = model.predict_proba(Xte)[:, 1]
    for k, e in ev.evaluate_binary(yte, p, n_boot=1000, seed=0).items():
        print(f"{k:>22}: {e.value:.3f} (95 % CI {e.lower:.3f} to {e.upper:.3f})")

    cc = ev.calibration_curve(yte, p, n_bins=8, strategy="quantile")
    smooth_p = np.sort(p)
    from statsmodels.nonparametric.smoothers_lowess import lowess

    sm_fit = lowess(yte, p, frac=0.75, it=0)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, label="ideal")
    ax.errorbar(
        cc["mean_predicted"],
        cc["observed"],
        yerr=[cc["observed"] - cc["observed_lower"], cc["observed_upper"] - cc["observed"]],
        fmt="o",
        label="binned (Wilson 95 % CI)",
    )
    ax.plot(sm_fit[:, 0], sm_fit[:, 1], label="lowess (ICI)")
    ax.plot(smooth_p, np.full_like(smooth_p, -0.02), "|", color="k", alpha=0.3)
    ax.set(
        xlabel="predicted P(malignant)",
        ylabel="observed fraction",
        title="Calibration, held-out half",
        xlim=(-0.03, 1.01),
        ylim=(-0.05, 1.01),
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(IMG / "evaluation_calibration.png", dpi=110)
    plt.close(fig)

    t = np.linspace(0.02, 0.9, 45)
    nb = ev.net_benefit(yte, p, t)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(t, nb["net_benefit"], label="logistic model")
    ax.plot(t, nb["treat_all"], label="treat all")
    ax.plot(t, nb["treat_none"], label="treat none")
    ax.set(
        xlabel="threshold probability",
        ylabel="net benefit",
        ylim=(-0.05, max(nb["treat_all"].max(), nb["net_benefit"].max()) + 0.05),
        title="Decision curve, held-out half",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(IMG / "evaluation_decision_curve.png", dpi=110)
    plt.close(fig)
    print("wrote", *sorted(x.name for x in IMG.glob("*.png")))


if __name__ == "__main__":
    main()
