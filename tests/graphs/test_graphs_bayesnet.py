"""Bayesian networks against pgmpy (run in the same test) and analytic oracles."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthtwin.models.bayesnet import (
    DiscreteBayesianNetwork,
    LinearGaussianBayesianNetwork,
    bdeu_score,
    bic_gauss_score,
    bic_score,
    hill_climb,
    k2_score,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    from pgmpy.factors.continuous import LinearGaussianCPD
    from pgmpy.factors.discrete import TabularCPD
    from pgmpy.inference import VariableElimination
    from pgmpy.models import DiscreteBayesianNetwork as PgDBN
    from pgmpy.models import LinearGaussianBayesianNetwork as PgLGBN
    from pgmpy.parameter_estimator import DiscreteBayesianEstimator, DiscreteMLE
    from pgmpy.structure_score import BIC as PgBIC
    from pgmpy.structure_score import K2 as PgK2
    from pgmpy.structure_score import BDeu as PgBDeu

# The classic "asia" network (Lauritzen & Spiegelhalter 1988), states ordered ("no", "yes").
ASIA_EDGES = [
    ("asia", "tub"),
    ("smoke", "lung"),
    ("smoke", "bronc"),
    ("tub", "either"),
    ("lung", "either"),
    ("either", "xray"),
    ("either", "dysp"),
    ("bronc", "dysp"),
]
YN = ["no", "yes"]


def _asia_cpts() -> dict[str, np.ndarray]:
    """CPTs in our layout: (*parent cards, child card), parents in edge order."""
    either = np.zeros((2, 2, 2))
    for t, lg in itertools.product(range(2), range(2)):
        either[t, lg] = [0.0, 1.0] if (t or lg) else [1.0, 0.0]
    return {
        "asia": np.array([0.99, 0.01]),
        "smoke": np.array([0.5, 0.5]),
        "tub": np.array([[0.99, 0.01], [0.95, 0.05]]),
        "lung": np.array([[0.99, 0.01], [0.9, 0.1]]),
        "bronc": np.array([[0.7, 0.3], [0.4, 0.6]]),
        "either": either,
        "xray": np.array([[0.95, 0.05], [0.02, 0.98]]),
        "dysp": np.array([[[0.9, 0.1], [0.2, 0.8]], [[0.3, 0.7], [0.1, 0.9]]]),
    }


def _to_pgmpy(model: DiscreteBayesianNetwork) -> PgDBN:
    """The same network as a pgmpy model (pgmpy CPD layout: child rows x parent columns)."""
    pg = PgDBN([tuple(e) for e in model.edges])
    for v in model.variables_:
        if v not in pg.nodes():
            pg.add_node(v)
    for v in model.variables_:
        ps = model.parents_[v]
        t = model.cpts_[v]
        card = model.cardinality_[v]
        values = t.reshape(-1, card).T
        pg.add_cpds(
            TabularCPD(
                v,
                card,
                values,
                evidence=ps or None,
                evidence_card=[model.cardinality_[p] for p in ps] or None,
                state_names={u: model.state_names_[u] for u in [v, *ps]},
            )
        )
    pg.check_model()
    return pg


def _asia() -> DiscreteBayesianNetwork:
    return DiscreteBayesianNetwork.from_cpts(
        ASIA_EDGES, _asia_cpts(), {v: YN for v in _asia_cpts()}
    )


def test_asia_posteriors_equal_pgmpy_for_a_batch_of_patients() -> None:
    ours = _asia()
    ve = VariableElimination(_to_pgmpy(ours))
    rng = np.random.default_rng(3)
    n = 12
    # each patient observes a different subset (None = unobserved)
    ev = {
        "xray": rng.choice(["no", "yes", None], n).tolist(),
        "dysp": rng.choice(["no", "yes"], n).tolist(),
        "smoke": rng.choice(["no", "yes", None], n).tolist(),
    }
    post_lung = ours.query(["lung"], ev)
    post_joint = ours.query(["tub", "bronc"], ev)
    for i in range(n):
        e = {k: v[i] for k, v in ev.items() if v[i] is not None}
        ref = ve.query(["lung"], evidence=e, show_progress=False)
        np.testing.assert_allclose(post_lung[i], ref.values, atol=1e-12)
        refj = ve.query(["tub", "bronc"], evidence=e, show_progress=False)
        refj = (
            refj.transpose(["tub", "bronc"], inplace=False) if hasattr(refj, "transpose") else refj
        )
        np.testing.assert_allclose(post_joint[i], refj.values, atol=1e-12)
        mp, _ = ours.map_query(["tub", "lung", "bronc"], {k: [v[i]] for k, v in ev.items()})
        ref_map = ve.map_query(["tub", "lung", "bronc"], evidence=e, show_progress=False)
        assert list(mp[0]) == [ref_map["tub"], ref_map["lung"], ref_map["bronc"]]


def test_evidence_probability_equals_brute_force_enumeration() -> None:
    ours = _asia()
    cpts = _asia_cpts()
    order = ours.variables_
    # brute-force joint over all 2^8 states (independent oracle)
    total = 0.0
    for states in itertools.product(range(2), repeat=len(order)):
        s = dict(zip(order, states, strict=True))
        if s["xray"] != 1 or s["dysp"] != 1:
            continue
        p = 1.0
        for v in order:
            idx = tuple(s[u] for u in ours.parents_[v]) + (s[v],)
            p *= cpts[v][idx]
        total += p
    got = ours.evidence_probability({"xray": ["yes"], "dysp": ["yes"]})
    np.testing.assert_allclose(got, [total], rtol=1e-12)


def test_soft_evidence_equals_pgmpy_virtual_evidence() -> None:
    ours = _asia()
    pg = _to_pgmpy(ours)
    lik = np.array([[0.2, 0.8]])
    got = ours.query(["lung"], soft_evidence={"xray": lik})
    virt = TabularCPD("xray", 2, [[0.2], [0.8]], state_names={"xray": YN})
    ref = VariableElimination(pg).query(["lung"], virtual_evidence=[virt], show_progress=False)
    np.testing.assert_allclose(got[0], ref.values, atol=1e-12)


def _asia_data(n: int, seed: int) -> pd.DataFrame:
    ours = _asia()
    codes, _ = ours.simulate(n, seed=seed)
    return pd.DataFrame(
        {v: np.asarray(YN, dtype=object)[codes[:, j]] for j, v in enumerate(ours.variables_)}
    )


@pytest.mark.parametrize(
    ("ours_kw", "pg_est"),
    [
        ({"estimator": "mle"}, DiscreteMLE()),
        (
            {"estimator": "bdeu", "equivalent_sample_size": 7.0},
            DiscreteBayesianEstimator(prior_type="BDeu", equivalent_sample_size=7),
        ),
        ({"estimator": "k2"}, DiscreteBayesianEstimator(prior_type="K2")),
    ],
)
def test_parameter_learning_equals_pgmpy(ours_kw: dict, pg_est: object) -> None:
    data = _asia_data(400, seed=11)
    ours = DiscreteBayesianNetwork(ASIA_EDGES, **ours_kw).fit(data)
    pg = PgDBN(ASIA_EDGES)
    pg.fit(data, estimator=pg_est)
    for v in ours.variables_:
        cpd = pg.get_cpds(v)
        ps = ours.parents_[v]
        cpd = cpd.copy()
        cpd.reorder_parents(ps) if len(ps) > 1 else None
        expected = cpd.get_values()  # (card, prod parents)
        got = ours.cpts_[v].reshape(-1, ours.cardinality_[v]).T
        np.testing.assert_allclose(got, expected, atol=1e-12, err_msg=v)


def test_cpt_interval_matches_statsmodels_jeffreys() -> None:
    from statsmodels.stats.proportion import proportion_confint

    data = _asia_data(300, seed=5)
    ours = DiscreteBayesianNetwork(ASIA_EDGES).fit(data)
    lo, hi = ours.cpt_interval("bronc", 0.9)
    counts = ours.counts_["bronc"]
    for j in range(2):
        n_j = counts[j].sum()
        ref = proportion_confint(counts[j, 1], n_j, alpha=0.1, method="jeffreys")
        np.testing.assert_allclose([lo[j, 1], hi[j, 1]], ref, rtol=1e-9)


def test_scores_equal_pgmpy_on_same_data() -> None:
    data = _asia_data(500, seed=2)
    for edges in (ASIA_EDGES, [], [("smoke", "lung"), ("lung", "xray"), ("asia", "xray")]):
        pg = PgDBN(edges)
        pg.add_nodes_from(data.columns)
        assert bic_score(data, edges) == pytest.approx(PgBIC(data).score(pg), rel=1e-10)
        assert bdeu_score(data, edges, 10.0) == pytest.approx(
            PgBDeu(data, equivalent_sample_size=10).score(pg), rel=1e-10
        )
        assert k2_score(data, edges) == pytest.approx(PgK2(data).score(pg), rel=1e-10)


def test_hill_climb_bic_matches_pgmpy_score_and_true_skeleton() -> None:
    from pgmpy.estimators import HillClimbSearch

    # cancer-style network with strong dependencies, 3000 patients
    cpts = {
        "pollution": np.array([0.6, 0.4]),
        "smoker": np.array([0.5, 0.5]),
        "cancer": np.array([[[0.97, 0.03], [0.8, 0.2]], [[0.9, 0.1], [0.5, 0.5]]]),
        "xray": np.array([[0.9, 0.1], [0.2, 0.8]]),
        "dysp": np.array([[0.8, 0.2], [0.3, 0.7]]),
    }
    edges = [
        ("pollution", "cancer"),
        ("smoker", "cancer"),
        ("cancer", "xray"),
        ("cancer", "dysp"),
    ]
    truth = DiscreteBayesianNetwork.from_cpts(edges, cpts, {v: YN for v in cpts})
    codes, _ = truth.simulate(3000, seed=8)
    data = pd.DataFrame(np.asarray(YN, dtype=object)[codes], columns=truth.variables_)
    res = hill_climb(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        dag = HillClimbSearch(data).estimate(scoring_method="bic-d", show_progress=False)
    pg_edges = list(dag.edges())
    # same optimum score (edge orientation within an equivalence class may differ)
    assert res.score == pytest.approx(bic_score(data, pg_edges), abs=1e-6)
    assert res.score == pytest.approx(bic_score(data, res.edges), rel=1e-12)
    # every true dependency is found; greedy search may keep one extra edge closing the
    # pollution -> cancer <- smoker v-structure (a known local optimum, pgmpy finds the same score)
    learned = {frozenset(e) for e in res.edges}
    assert {frozenset(e) for e in edges} <= learned
    assert len(learned) <= len(edges) + 1


def _lg_truth() -> PgLGBN:
    pg = PgLGBN([("age", "sbp"), ("bmi", "sbp"), ("sbp", "risk")])
    pg.add_cpds(
        LinearGaussianCPD("age", [55.0], 10.0),
        LinearGaussianCPD("bmi", [27.0], 4.0),
        LinearGaussianCPD("sbp", [80.0, 0.6, 0.9], 12.0, ["age", "bmi"]),
        LinearGaussianCPD("risk", [-3.0, 0.05], 1.5, ["sbp"]),
    )
    return pg


@pytest.mark.parametrize("std_estimator", ["mle", "unbiased"])
def test_linear_gaussian_fit_and_inference_equal_pgmpy(std_estimator: str) -> None:
    from pgmpy.parameter_estimator import LinearGaussianMLE

    truth = _lg_truth()
    data = truth.simulate(n_samples=800, seed=4)
    edges = [("age", "sbp"), ("bmi", "sbp"), ("sbp", "risk")]
    ours = LinearGaussianBayesianNetwork(edges, std_estimator=std_estimator).fit(data)
    pg = PgLGBN(edges)
    pg.fit(data, estimator=LinearGaussianMLE(std_estimator=std_estimator))
    for v in ours.variables_:
        cpd = pg.get_cpds(v)
        beta = dict(zip(["1", *cpd.evidence], cpd.beta, strict=True))
        exp = [beta["1"], *[beta[p] for p in ours.parents_[v]]]
        np.testing.assert_allclose(ours.coef_[v], exp, rtol=1e-9, atol=1e-9)
        assert ours.std_[v] == pytest.approx(cpd.std, rel=1e-9)
    mu, cov = ours.to_joint_gaussian()
    pmu, pcov = pg.to_joint_gaussian()
    import networkx as nx

    order = list(nx.topological_sort(pg))
    perm = [ours.variables_.index(v) for v in order]
    np.testing.assert_allclose(mu[perm], pmu, atol=1e-6)
    np.testing.assert_allclose(cov[np.ix_(perm, perm)], pcov, atol=1e-6)
    ev = data[["age", "risk"]].iloc[:20]
    hid, mean, pc = ours.query({"age": ev["age"].to_numpy(), "risk": ev["risk"].to_numpy()})
    pvars, pmean, ppc = pg.predict_probability(ev)
    perm = [hid.index(v) for v in pvars]
    np.testing.assert_allclose(mean[:, perm], pmean, rtol=1e-6)
    np.testing.assert_allclose(pc[np.ix_(perm, perm)], ppc, rtol=1e-6)


def test_linear_gaussian_interval_covers_truth_and_matches_statsmodels() -> None:
    import statsmodels.api as sm

    data = _lg_truth().simulate(n_samples=500, seed=9)
    ours = LinearGaussianBayesianNetwork([("age", "sbp"), ("bmi", "sbp")]).fit(data)
    lo, hi = ours.coef_interval("sbp", 0.95)
    ref = sm.OLS(data["sbp"], sm.add_constant(data[["age", "bmi"]])).fit().conf_int(0.05)
    np.testing.assert_allclose(np.column_stack([lo, hi]), ref.to_numpy(), rtol=1e-8)


def test_forward_and_likelihood_weighted_sampling_match_exact_posteriors() -> None:
    ours = _asia()
    n = 20_000
    codes, w = ours.simulate(n, seed=1)
    assert np.all(w == 1.0)
    exact = ours.query(["bronc"])[0, 1]
    est = codes[:, ours.variables_.index("bronc")].mean()
    se = np.sqrt(exact * (1 - exact) / n)
    assert abs(est - exact) < 5 * se  # 5 Monte Carlo standard errors
    codes, w = ours.simulate(n, evidence={"smoke": "yes", "dysp": "yes"}, seed=2)
    exact = ours.query(["bronc"], {"smoke": ["yes"], "dysp": ["yes"]})[0, 1]
    x = codes[:, ours.variables_.index("bronc")]
    est = np.sum(w * x) / np.sum(w)
    # SE of a self-normalised importance estimate (delta method)
    se = np.sqrt(np.sum(w**2 * (x - est) ** 2)) / np.sum(w)
    assert abs(est - exact) < 5 * se


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_random_network_posteriors_equal_pgmpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = [f"x{i}" for i in range(5)]
    edges = [(names[i], names[j]) for i in range(5) for j in range(i + 1, 5) if rng.random() < 0.4]
    cards = {v: int(rng.integers(2, 4)) for v in names}
    parents = {v: [u for u, w in edges if w == v] for v in names}
    cpts = {v: rng.dirichlet(np.ones(cards[v]), size=[cards[p] for p in parents[v]]) for v in names}
    ours = DiscreteBayesianNetwork.from_cpts(edges, cpts, {v: list(range(cards[v])) for v in names})
    ve = VariableElimination(_to_pgmpy(ours))
    q, e = names[int(rng.integers(0, 5))], names[int(rng.integers(0, 5))]
    if q == e:
        return
    for s in range(cards[e]):
        got = ours.query([q], {e: [s]})[0]
        ref = ve.query([q], evidence={e: s}, show_progress=False).values
        np.testing.assert_allclose(got, ref, atol=1e-10)


def test_bad_inputs_raise_clear_errors() -> None:
    ours = _asia()
    with pytest.raises(ValueError, match=r"evidence\['xray'\]\[0\] = 'maybe'"):
        ours.query(["lung"], {"xray": ["maybe"]})
    with pytest.raises(ValueError, match="not in the network"):
        ours.query(["nope"])
    with pytest.raises(ValueError, match="directed cycle"):
        DiscreteBayesianNetwork([("a", "b"), ("b", "a")]).fit({"a": [0, 1], "b": [1, 0]})
    with pytest.raises(ValueError, match="probability zero"):
        ours.query(["lung"], {"tub": ["yes"], "either": ["no"]})
    with pytest.raises(ValueError, match=r"data\['b'\]: missing value at row 1"):
        DiscreteBayesianNetwork([("a", "b")]).fit({"a": [0, 1], "b": [1, None]})
    with pytest.raises(ValueError, match="shape"):
        DiscreteBayesianNetwork.from_cpts(
            [("a", "b")], {"a": [0.5, 0.5], "b": [0.5, 0.5]}, {"a": [0, 1], "b": [0, 1]}
        )


def test_shipped_asia_network_is_the_published_one() -> None:
    from healthtwin.models.bayesnet import asia_network

    shipped = asia_network()
    for v, t in _asia_cpts().items():
        np.testing.assert_array_equal(shipped.cpts_[v], t)


def test_linear_gaussian_refuses_to_extrapolate_unless_asked() -> None:
    from healthtwin.models.base import OutOfRangeError

    data = _lg_truth().simulate(n_samples=300, seed=3)
    net = LinearGaussianBayesianNetwork([("age", "sbp")], units={"age": "a", "sbp": "mm[Hg]"}).fit(
        data[["age", "sbp"]]
    )
    too_old = float(data["age"].max()) + 30.0
    with pytest.raises(
        OutOfRangeError, match=r"evidence\['age'\] = .* a is outside the valid range"
    ):
        net.predict({"age": [50.0, too_old]})
    got = net.predict({"age": [too_old]}, allow_extrapolation=True)
    b = net.coef_["sbp"]
    np.testing.assert_allclose(got[0, 0], b[0] + b[1] * too_old)  # the conditional mean line


def test_gaussian_bic_and_hill_climb_equal_pgmpy() -> None:
    from pgmpy.base import DAG
    from pgmpy.estimators import HillClimbSearch
    from pgmpy.structure_score import BICGauss

    data = _lg_truth().simulate(n_samples=600, seed=12)
    for edges in ([("age", "sbp"), ("bmi", "sbp"), ("sbp", "risk")], [], [("risk", "age")]):
        dag = DAG(edges)
        dag.add_nodes_from(data.columns)
        assert bic_gauss_score(data, edges) == pytest.approx(BICGauss(data).score(dag), rel=1e-10)
    res = hill_climb(data, score="bic-g")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        pg = HillClimbSearch(data).estimate(scoring_method="bic-g", show_progress=False)
    assert res.score == pytest.approx(bic_gauss_score(data, list(pg.edges())), abs=1e-6)
    skeleton = {frozenset(e) for e in res.edges}
    assert {
        frozenset(("age", "sbp")),
        frozenset(("bmi", "sbp")),
        frozenset(("sbp", "risk")),
    } <= skeleton


def test_long_chain_beyond_einsum_label_limit_matches_markov_chain_power() -> None:
    # 80-node binary chain: P(x_79 | x_0 = 1) is row 1 of T^79 (independent oracle)
    T = np.array([[0.9, 0.1], [0.3, 0.7]])
    names = [f"x{i}" for i in range(80)]
    edges = list(zip(names[:-1], names[1:], strict=True))
    cpts = {names[0]: np.array([0.5, 0.5]), **{v: T for v in names[1:]}}
    net = DiscreteBayesianNetwork.from_cpts(edges, cpts, {v: [0, 1] for v in names})
    got = net.query(["x79"], {"x0": [1, 0]})
    expected = np.linalg.matrix_power(T, 79)[[1, 0]]
    np.testing.assert_allclose(got, expected, rtol=1e-10)
