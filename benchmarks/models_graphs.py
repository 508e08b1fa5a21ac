"""Benchmark: healthtwin Bayesian networks vs pgmpy, and MDP solvers vs pymdptoolbox.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/models_graphs.py`` (``--quick`` for a
smaller run; single-thread BLAS keeps dense-solve timings stable on a loaded shared machine). Prints our
time, the peer's time on the same work in the same run, and the ratio (peer / ours). Timings are
wall-clock best-of-N on a shared machine; treat them as indicative.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from healthtwin.models.bayesnet import DiscreteBayesianNetwork, asia_network, hill_climb
from healthtwin.models.mdp import policy_iteration, value_iteration

warnings.simplefilter("ignore", FutureWarning)


def _best(fn: Callable[[], Any], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _row(label: str, ours: float, peer: float, peer_name: str) -> None:
    print(
        f"{label:<52} ours {ours * 1e3:10.2f} ms   {peer_name} {peer * 1e3:10.2f} ms"
        f"   ratio {peer / ours:8.1f}x"
    )


def _to_pgmpy(model: DiscreteBayesianNetwork) -> Any:
    from pgmpy.factors.discrete import TabularCPD
    from pgmpy.models import DiscreteBayesianNetwork as PgDBN

    pg = PgDBN([tuple(e) for e in model.edges])
    for v in model.variables_:
        ps = model.parents_[v]
        pg.add_cpds(
            TabularCPD(
                v,
                model.cardinality_[v],
                model.cpts_[v].reshape(-1, model.cardinality_[v]).T,
                evidence=ps or None,
                evidence_card=[model.cardinality_[p] for p in ps] or None,
                state_names={u: model.state_names_[u] for u in [v, *ps]},
            )
        )
    return pg


def bench_bayesnet(n_queries: int, n_fit: int) -> None:
    from pgmpy.inference import VariableElimination
    from pgmpy.parameter_estimator import DiscreteMLE

    model = asia_network()
    rng = np.random.default_rng(0)
    ev = {
        "xray": rng.choice(["no", "yes"], n_queries).tolist(),
        "dysp": rng.choice(["no", "yes"], n_queries).tolist(),
        "smoke": rng.choice(["no", "yes"], n_queries).tolist(),
    }
    ve = VariableElimination(_to_pgmpy(model))

    def pg_queries() -> None:
        for i in range(n_queries):
            ve.query(["lung"], evidence={k: v[i] for k, v in ev.items()}, show_progress=False)

    ours = _best(lambda: model.query(["lung"], ev))
    peer = _best(pg_queries, repeat=1)
    _row(f"VE: P(lung | 3 findings), {n_queries} patients", ours, peer, "pgmpy")
    big = {k: v * (100_000 // n_queries) for k, v in ev.items()}
    t_big = _best(lambda: model.query(["lung"], big), repeat=1)
    print(f"{'VE: same query, 100000 patients (ours only)':<52} ours {t_big * 1e3:10.2f} ms")

    codes, _ = model.simulate(n_fit, seed=1)
    data = pd.DataFrame(
        {
            v: np.asarray(["no", "yes"], dtype=object)[codes[:, j]]
            for j, v in enumerate(model.variables_)
        }
    )
    from pgmpy.models import DiscreteBayesianNetwork as PgDBN

    ours = _best(lambda: DiscreteBayesianNetwork(model.edges).fit(data))
    peer = _best(lambda: PgDBN(model.edges).fit(data, estimator=DiscreteMLE()))
    _row(f"MLE fit of asia CPTs, {n_fit} rows", ours, peer, "pgmpy")

    from pgmpy.estimators import HillClimbSearch

    sub = data.iloc[: n_fit // 4]
    ours = _best(lambda: hill_climb(sub), repeat=1)
    peer = _best(
        lambda: HillClimbSearch(sub).estimate(scoring_method="bic-d", show_progress=False), repeat=1
    )
    _row(f"hill climbing (BIC), asia data, {len(sub)} rows", ours, peer, "pgmpy")


def bench_mdp(S: int, A: int) -> None:
    import mdptoolbox.mdp

    rng = np.random.default_rng(0)
    P = rng.random((A, S, S))
    P /= P.sum(axis=2, keepdims=True)
    R = rng.normal(size=(S, A))
    gamma, eps = 0.95, 1e-4
    sol = value_iteration(P, R, gamma, epsilon=eps, iteration_bound=True)

    def peer_run() -> None:
        vi = mdptoolbox.mdp.ValueIteration(P, R, gamma, epsilon=eps)
        vi.run()
        assert vi.iter == sol.n_iter
        assert np.array_equal(np.asarray(vi.policy), sol.policy)

    ours = _best(lambda: value_iteration(P, R, gamma, epsilon=eps, iteration_bound=True))
    peer = _best(peer_run)
    _row(f"value iteration, random MDP S={S} A={A} ({sol.n_iter} it)", ours, peer, "pymdptoolbox")

    import mdptoolbox.example

    Pf, Rf = mdptoolbox.example.forest(S=S)
    solf = value_iteration(Pf, Rf, 0.99, epsilon=1e-6, iteration_bound=True)

    def peer_forest() -> None:
        vi = mdptoolbox.mdp.ValueIteration(Pf, Rf, 0.99, epsilon=1e-6)
        vi.run()
        assert vi.iter == solf.n_iter

    ours = _best(lambda: value_iteration(Pf, Rf, 0.99, epsilon=1e-6, iteration_bound=True))
    peer = _best(peer_forest)
    _row(f"value iteration, forest S={S} gamma 0.99 ({solf.n_iter} it)", ours, peer, "pymdptoolbox")
    ours = _best(lambda: policy_iteration(Pf, Rf, 0.99), repeat=1)

    def peer_pi() -> None:
        pi = mdptoolbox.mdp.PolicyIteration(Pf, Rf, 0.99)
        pi.run()

    peer = _best(peer_pi, repeat=1)
    _row(f"policy iteration, forest S={S} gamma 0.99", ours, peer, "pymdptoolbox")


def main() -> None:
    quick = "--quick" in sys.argv
    print("healthtwin graphs benchmark (wall clock, best of N; shared machine, indicative)")
    bench_bayesnet(n_queries=100 if quick else 500, n_fit=20_000 if quick else 100_000)
    bench_mdp(S=200 if quick else 1000, A=4 if quick else 10)


if __name__ == "__main__":
    main()
