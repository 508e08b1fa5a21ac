"""Draw the figures of docs/models-bayesnet.md and docs/models-mdp.md into docs/img/.

Run: ``.venv/bin/python benchmarks/models_graphs_plots.py``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from healthtwin.models.bayesnet import asia_network
from healthtwin.models.mdp import finite_horizon, policy_iteration, value_iteration

IMG = Path(__file__).resolve().parents[1] / "docs" / "img"

POS = {
    "asia": (0.0, 3.0),
    "tub": (0.0, 2.0),
    "smoke": (2.5, 3.0),
    "lung": (1.6, 2.0),
    "bronc": (3.4, 2.0),
    "either": (0.8, 1.0),
    "xray": (0.0, 0.0),
    "dysp": (2.2, 0.0),
}


def plot_asia() -> Path:
    model = asia_network()
    evidence = {"xray": ["yes"], "dysp": ["yes"]}
    hidden = [v for v in model.variables_ if v not in evidence]
    prior = model.marginals(hidden)
    post = model.marginals(hidden, evidence)
    fig, ax = plt.subplots(figsize=(7, 5))
    for v, ps in model.parents_.items():
        for p in ps:
            ax.annotate(
                "",
                xy=POS[v],
                xytext=POS[p],
                arrowprops={"arrowstyle": "-|>", "color": "0.4", "shrinkA": 22, "shrinkB": 22},
            )
    for v, (x, y) in POS.items():
        observed = v in evidence
        ax.scatter([x], [y], s=2600, color="#f4b183" if observed else "#bdd7ee", zorder=2)
        if observed:
            text = f"{v}\nobserved: yes"
        else:
            text = f"{v}\n{prior[v][0, 1]:.3f} -> {post[v][0, 1]:.3f}"
        ax.text(x, y, text, ha="center", va="center", fontsize=8, zorder=3)
    ax.set_title("asia network: P(yes) prior -> posterior given xray = dysp = yes (exact VE)")
    ax.set_xlim(-0.8, 4.2)
    ax.set_ylim(-0.7, 3.7)
    ax.axis("off")
    out = IMG / "models-bayesnet-asia.png"
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def forest(
    S: int, r1: float = 4.0, r2: float = 2.0, p: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    P = np.zeros((2, S, S))
    P[0, :, 0] = p
    for s in range(S):
        P[0, s, min(s + 1, S - 1)] += 1 - p
    P[1, :, 0] = 1.0
    R = np.zeros((S, 2))
    R[-1, 0] = r1
    R[1:, 1] = 1.0
    R[-1, 1] = r2
    return P, R


def plot_mdp() -> Path:
    S = 10
    P, R = forest(S)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    states = np.arange(S)
    for g in (0.8, 0.9, 0.95):
        sol = policy_iteration(P, R, g)
        axes[0].plot(states, sol.V, marker="o", label=f"gamma = {g}")
        cut = sol.policy == 1
        axes[0].scatter(states[cut], sol.V[cut], s=120, facecolors="none", edgecolors="k")
    axes[0].set_xlabel("forest age class s")
    axes[0].set_ylabel("V*(s) (reward unit)")
    axes[0].set_title("optimal value; circled = 'cut' is optimal")
    axes[0].legend()
    v_star = policy_iteration(P, R, 0.95).V
    lo, hi, it = [], [], []
    for k in range(1, 80):
        sol = value_iteration(P, R, 0.95, epsilon=1e-12, max_iter=k)
        lo.append(sol.V_lower[0])
        hi.append(sol.V_upper[0])
        it.append(k)
    axes[1].plot(it, lo, label="MacQueen-Porteus lower bound")
    axes[1].plot(it, hi, label="upper bound")
    axes[1].axhline(v_star[0], color="k", ls="--", label="V*(0) by policy iteration")
    axes[1].set_xlabel("value-iteration sweeps")
    axes[1].set_ylabel("V(0) (reward unit)")
    axes[1].set_title("value iteration brackets V* (gamma 0.95)")
    axes[1].legend(fontsize=8)
    fh = finite_horizon(P, R, 0.95, 30)
    axes[2].imshow(fh.policy, aspect="auto", cmap="Greys", origin="lower", vmin=0, vmax=1)
    axes[2].set_xlabel("decision epoch n")
    axes[2].set_ylabel("state s")
    axes[2].set_title("finite-horizon policy (black = cut), N = 30")
    fig.tight_layout()
    out = IMG / "models-mdp-forest.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main() -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    for path in (plot_asia(), plot_mdp()):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
