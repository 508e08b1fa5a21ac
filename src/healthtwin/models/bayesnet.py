"""Bayesian networks: discrete (CPT) and linear-Gaussian, with a given or learned DAG.

Why our own implementation rather than a wrapper around pgmpy
-------------------------------------------------------------
pgmpy is the maintained reference and every result here is tested against it (same networks,
same data, in the same test). We do not wrap it because the product needs things pgmpy's
object model does not give cheaply: (i) population-scale inference, i.e. one variable-elimination
pass for *many patients at once*, each with their own (possibly partial, possibly soft) evidence,
where pgmpy runs one query per evidence dict; (ii) NumPy arrays in and out with the first axis
being patients, as the :class:`~healthtwin.models.base.TwinModel` interface requires; and
(iii) vectorised forward / likelihood-weighted sampling seeded by :class:`numpy.random.Generator`.
Here every factor carries a leading batch axis, so the elimination loop runs over *variables*,
never over patients.

Mathematics
-----------
A discrete network factorises ``P(X_1..X_V) = prod_v P(X_v | Pa(X_v))``. Parameters are
``theta[v, j, k] = (N_vjk + alpha_vjk) / (N_vj + alpha_vj)`` (maximum likelihood: ``alpha = 0``;
K2: ``alpha = 1``; BDeu: ``alpha = ess / (r_v q_v)``). Posterior queries are computed by variable
elimination: evidence enters as indicator (or likelihood) factors, every non-query variable is
summed out in a greedy min-weight order, and the result is normalised per patient. MAP over a set
of variables is the arg-max of their joint posterior. The BIC score of a DAG is
``sum_v [ sum_jk N_vjk log(N_vjk / N_vj) - 0.5 log(N) q_v (r_v - 1) ]`` (identical to pgmpy's
``BIC``); hill climbing adds, removes or reverses one edge at a time while the score improves.

A linear-Gaussian network has ``X_v = b_v0 + sum_{u in Pa(v)} b_vu X_u + e_v``,
``e_v ~ N(0, s_v^2)``; it is the joint normal ``N(mu, (I - B)^-T Omega (I - B)^-1)``, and
conditioning on observed variables uses the Schur complement.

Units: probabilities are dimensionless ("1"); linear-Gaussian variables carry the units of the
data they were fitted on (stated by the caller through ``units``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats

from healthtwin.models.base import TwinModel, check_range

__all__ = [
    "DiscreteBayesianNetwork",
    "LinearGaussianBayesianNetwork",
    "HillClimbResult",
    "bic_score",
    "bic_gauss_score",
    "bdeu_score",
    "k2_score",
    "hill_climb",
    "topological_order",
    "asia_network",
]

Edge = tuple[str, str]
FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


# --------------------------------------------------------------------------------------------
# graph helpers
# --------------------------------------------------------------------------------------------


def _parents_map(nodes: Sequence[str], edges: Iterable[Edge]) -> dict[str, list[str]]:
    parents: dict[str, list[str]] = {n: [] for n in nodes}
    for u, v in edges:
        for end in (u, v):
            if end not in parents:
                raise ValueError(
                    f"edge ({u!r}, {v!r}): node {end!r} is not a variable of the network"
                )
        if u == v:
            raise ValueError(f"edge ({u!r}, {v!r}): self-loops are not allowed in a DAG")
        if u not in parents[v]:
            parents[v].append(u)
    return parents


def topological_order(nodes: Sequence[str], edges: Iterable[Edge]) -> list[str]:
    """Kahn's topological order (ties broken by the order of ``nodes``); raises on a cycle."""
    parents = _parents_map(nodes, edges)
    indeg = {n: len(p) for n, p in parents.items()}
    children: dict[str, list[str]] = {n: [] for n in nodes}
    for v, ps in parents.items():
        for u in ps:
            children[u].append(v)
    queue = deque(n for n in nodes if indeg[n] == 0)
    order: list[str] = []
    while queue:
        n = queue.popleft()
        order.append(n)
        for c in children[n]:
            indeg[c] -= 1
            if indeg[c] == 0:
                queue.append(c)
    if len(order) != len(nodes):
        cyclic = sorted(set(nodes) - set(order))
        raise ValueError(
            f"edges: the graph has a directed cycle through {cyclic}; a DAG is required"
        )
    return order


def _nodes_from_edges(edges: Sequence[Edge], extra: Iterable[str] = ()) -> list[str]:
    nodes: list[str] = []
    for e in edges:
        if len(e) != 2:
            raise ValueError(f"edges: {e!r} is not a (parent, child) pair")
        for n in e:
            if n not in nodes:
                nodes.append(n)
    for n in extra:
        if n not in nodes:
            nodes.append(n)
    return nodes


# --------------------------------------------------------------------------------------------
# discrete data encoding and counting
# --------------------------------------------------------------------------------------------


def _encode(
    data: pd.DataFrame | Mapping[str, ArrayLike],
    variables: Sequence[str],
    state_names: Mapping[str, Sequence[Hashable]] | None,
) -> tuple[IntArray, dict[str, list[Hashable]]]:
    """Encode columns as integer codes (n, V); states default to the sorted observed values."""
    df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(dict(data))
    missing = [v for v in variables if v not in df.columns]
    if missing:
        raise ValueError(f"data: missing column(s) {missing}; the network needs {list(variables)}")
    n = len(df)
    if n == 0:
        raise ValueError("data: no rows to fit on")
    codes = np.empty((n, len(variables)), dtype=np.int64)
    states: dict[str, list[Hashable]] = {}
    for j, v in enumerate(variables):
        col = df[v].to_numpy()
        if pd.isna(col).any():
            bad = int(np.flatnonzero(pd.isna(col))[0])
            raise ValueError(f"data[{v!r}]: missing value at row {bad}; complete data is required")
        if state_names is not None and v in state_names:
            sv = list(state_names[v])
        else:
            sv = sorted(pd.unique(col).tolist())
        if len(set(sv)) != len(sv):
            raise ValueError(f"state_names[{v!r}]: duplicate states in {sv}")
        c = np.asarray(pd.Categorical(col, categories=sv).codes, dtype=np.int64)
        if np.any(c < 0):
            bad = int(np.flatnonzero(c < 0)[0])
            raise ValueError(
                f"data[{v!r}]: value {col[bad]!r} at row {bad} is not one of the states {sv}"
            )
        codes[:, j] = c
        states[v] = sv
    return codes, states


def _family_counts(
    codes: IntArray, child: int, parents: Sequence[int], cards: IntArray
) -> IntArray:
    """Counts N[j, k] (parent configuration j in C order, child state k): shape (q, r)."""
    r = int(cards[child])
    q = int(np.prod(cards[list(parents)])) if parents else 1
    idx = np.zeros(codes.shape[0], dtype=np.int64)
    for p in parents:
        idx = idx * cards[p] + codes[:, p]
    flat = np.bincount(idx * r + codes[:, child], minlength=q * r)
    return flat.reshape(q, r)


def _local_bic(counts: IntArray, n: int) -> float:
    q, r = counts.shape
    nj = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ll = np.where(counts > 0, counts * (np.log(counts) - np.log(nj)), 0.0)
    return float(ll.sum() - 0.5 * np.log(n) * q * (r - 1))


def _local_bdeu(counts: IntArray, ess: float) -> float:
    q, r = counts.shape
    a_jk = ess / (q * r)
    a_j = ess / q
    nj = counts.sum(axis=1)
    return float(
        np.sum(special.gammaln(a_j) - special.gammaln(nj + a_j))
        + np.sum(special.gammaln(counts + a_jk) - special.gammaln(a_jk))
    )


def _local_k2(counts: IntArray) -> float:
    q, r = counts.shape
    nj = counts.sum(axis=1)
    return float(
        np.sum(special.gammaln(r) - special.gammaln(nj + r)) + np.sum(special.gammaln(counts + 1.0))
    )


def _score_dag(
    data: pd.DataFrame | Mapping[str, ArrayLike],
    edges: Sequence[Edge],
    kind: str,
    state_names: Mapping[str, Sequence[Hashable]] | None,
    ess: float = 10.0,
) -> float:
    df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(dict(data))
    nodes = list(df.columns)
    parents = _parents_map(nodes, edges)
    topological_order(nodes, edges)
    codes, states = _encode(df, nodes, state_names)
    cards = np.array([len(states[v]) for v in nodes], dtype=np.int64)
    pos = {v: i for i, v in enumerate(nodes)}
    total = 0.0
    for v in nodes:
        c = _family_counts(codes, pos[v], [pos[p] for p in parents[v]], cards)
        if kind == "bic":
            total += _local_bic(c, codes.shape[0])
        elif kind == "bdeu":
            total += _local_bdeu(c, ess)
        else:
            total += _local_k2(c)
    return total


def bic_score(
    data: pd.DataFrame | Mapping[str, ArrayLike],
    edges: Sequence[Edge],
    state_names: Mapping[str, Sequence[Hashable]] | None = None,
) -> float:
    """BIC (MDL) score of the DAG ``edges`` over all columns of ``data`` (nats; unit "1")."""
    return _score_dag(data, edges, "bic", state_names)


def bdeu_score(
    data: pd.DataFrame | Mapping[str, ArrayLike],
    edges: Sequence[Edge],
    equivalent_sample_size: float = 10.0,
    state_names: Mapping[str, Sequence[Hashable]] | None = None,
) -> float:
    """Log BDeu marginal likelihood of the DAG (nats), equivalent sample size ``ess``."""
    if equivalent_sample_size <= 0:
        raise ValueError(f"equivalent_sample_size = {equivalent_sample_size}: must be > 0")
    return _score_dag(data, edges, "bdeu", state_names, float(equivalent_sample_size))


def k2_score(
    data: pd.DataFrame | Mapping[str, ArrayLike],
    edges: Sequence[Edge],
    state_names: Mapping[str, Sequence[Hashable]] | None = None,
) -> float:
    """Log K2 marginal likelihood of the DAG (Dirichlet(1,...,1) priors; nats)."""
    return _score_dag(data, edges, "k2", state_names)


def _continuous(df: pd.DataFrame, nodes: Sequence[str]) -> FloatArray:
    missing = [v for v in nodes if v not in df.columns]
    if missing:
        raise ValueError(f"data: missing column(s) {missing}")
    x = df[list(nodes)].to_numpy(dtype=float)
    if x.shape[0] < 3:
        raise ValueError(f"data: {x.shape[0]} rows; need at least 3")
    if not np.all(np.isfinite(x)):
        r, c = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"data[{nodes[c]!r}]: non-finite value at row {r}")
    return x


def _local_bic_gauss(y: FloatArray, parents: FloatArray) -> float:
    """Gaussian BIC of y on its parents: max log-likelihood - (k + 2)/2 log n (k slopes)."""
    n = y.shape[0]
    design = np.column_stack([np.ones(n), parents])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ beta
    sigma2 = float(resid @ resid) / n
    ll = -0.5 * n * (np.log(2 * np.pi * sigma2) + 1.0)
    return float(ll - 0.5 * (parents.shape[1] + 2) * np.log(n))


def bic_gauss_score(data: pd.DataFrame | Mapping[str, ArrayLike], edges: Sequence[Edge]) -> float:
    """Linear-Gaussian BIC of the DAG over all (continuous) columns of ``data`` (nats).

    Per node: the maximised normal log-likelihood of the least-squares regression on its parents
    (variance RSS/n) minus ``(k + 2)/2 log n`` for k slopes, intercept and variance.
    """
    df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(dict(data))
    nodes = [str(c) for c in df.columns]
    parents = _parents_map(nodes, edges)
    topological_order(nodes, edges)
    x = _continuous(df, nodes)
    pos = {v: i for i, v in enumerate(nodes)}
    return float(
        sum(_local_bic_gauss(x[:, pos[v]], x[:, [pos[p] for p in parents[v]]]) for v in nodes)
    )


@dataclass(frozen=True)
class HillClimbResult:
    """Outcome of :func:`hill_climb`: the learned edges, their total score and the step count."""

    edges: list[Edge]
    score: float
    n_iter: int


def _creates_cycle(parents: dict[str, set[str]], u: str, v: str) -> bool:
    """Would adding u -> v close a cycle, i.e. is u reachable from v?"""
    children: dict[str, list[str]] = {n: [] for n in parents}
    for c, ps in parents.items():
        for p in ps:
            children[p].append(c)
    stack, seen = [v], {v}
    while stack:
        n = stack.pop()
        if n == u:
            return True
        for c in children[n]:
            if c not in seen:
                seen.add(c)
                stack.append(c)
    return False


def hill_climb(
    data: pd.DataFrame | Mapping[str, ArrayLike],
    *,
    score: Literal["bic", "bdeu", "k2", "bic-g"] = "bic",
    equivalent_sample_size: float = 10.0,
    max_indegree: int | None = None,
    tabu_length: int = 100,
    epsilon: float = 1e-4,
    max_iter: int = 10_000,
    state_names: Mapping[str, Sequence[Hashable]] | None = None,
) -> HillClimbResult:
    """Greedy hill climbing over DAGs from the empty graph, with a tabu list.

    Each step applies the single edge addition, removal or reversal with the largest score gain;
    it stops when no legal move gains at least ``epsilon`` nats. Local scores are cached by
    (variable, parent set); counts are vectorised with ``np.bincount``. ``score="bic-g"`` treats
    every column as continuous and uses the linear-Gaussian BIC (:func:`bic_gauss_score`).
    """
    if score not in ("bic", "bdeu", "k2", "bic-g"):
        raise ValueError(f"score = {score!r}: must be 'bic', 'bdeu', 'k2' or 'bic-g'")
    df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(dict(data))
    nodes = [str(c) for c in df.columns]
    pos = {v: i for i, v in enumerate(nodes)}
    if score == "bic-g":
        xg = _continuous(df, nodes)
        codes = np.zeros((xg.shape[0], 0), dtype=np.int64)
        cards = np.zeros(0, dtype=np.int64)
    else:
        xg = np.zeros((0, 0))
        codes, states = _encode(df, nodes, state_names)
        cards = np.array([len(states[v]) for v in nodes], dtype=np.int64)
    n = codes.shape[0]
    cache: dict[tuple[str, frozenset[str]], float] = {}

    def local(v: str, ps: frozenset[str]) -> float:
        key = (v, ps)
        if key not in cache:
            if score == "bic-g":
                cols = [pos[p] for p in sorted(ps, key=pos.__getitem__)]
                cache[key] = _local_bic_gauss(xg[:, pos[v]], xg[:, cols])
                return cache[key]
            c = _family_counts(
                codes, pos[v], [pos[p] for p in sorted(ps, key=pos.__getitem__)], cards
            )
            if score == "bic":
                cache[key] = _local_bic(c, n)
            elif score == "bdeu":
                cache[key] = _local_bdeu(c, equivalent_sample_size)
            else:
                cache[key] = _local_k2(c)
        return cache[key]

    max_in = len(nodes) if max_indegree is None else int(max_indegree)
    parents: dict[str, set[str]] = {v: set() for v in nodes}
    tabu: deque[tuple[str, Edge]] = deque(maxlen=tabu_length)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        best: tuple[float, str, Edge] | None = None
        for u in nodes:
            for v in nodes:
                if u == v:
                    continue
                if u in parents[v]:
                    # removal
                    if ("+", (u, v)) not in tabu:
                        d = local(v, frozenset(parents[v] - {u})) - local(v, frozenset(parents[v]))
                        if best is None or d > best[0]:
                            best = (d, "-", (u, v))
                    # reversal u->v becomes v->u
                    if ("flip", (v, u)) not in tabu and len(parents[u]) < max_in:
                        parents[v].discard(u)
                        cyc = _creates_cycle(parents, v, u)
                        parents[v].add(u)
                        if not cyc:
                            d = (
                                local(v, frozenset(parents[v] - {u}))
                                - local(v, frozenset(parents[v]))
                                + local(u, frozenset(parents[u] | {v}))
                                - local(u, frozenset(parents[u]))
                            )
                            if best is None or d > best[0]:
                                best = (d, "flip", (u, v))
                elif v not in parents[u] and (
                    ("-", (u, v)) not in tabu
                    and len(parents[v]) < max_in
                    and not _creates_cycle(parents, u, v)
                ):
                    d = local(v, frozenset(parents[v] | {u})) - local(v, frozenset(parents[v]))
                    if best is None or d > best[0]:
                        best = (d, "+", (u, v))
        if best is None or best[0] < epsilon:
            break
        _, op, (u, v) = best
        if op == "+":
            parents[v].add(u)
            tabu.append(("-", (u, v)))
        elif op == "-":
            parents[v].discard(u)
            tabu.append(("+", (u, v)))
        else:
            parents[v].discard(u)
            parents[u].add(v)
            tabu.append(("flip", (u, v)))
    edges = [(u, v) for v in nodes for u in sorted(parents[v], key=pos.__getitem__)]
    total = sum(local(v, frozenset(parents[v])) for v in nodes)
    return HillClimbResult(edges=edges, score=float(total), n_iter=it)


# --------------------------------------------------------------------------------------------
# batched factors and variable elimination
# --------------------------------------------------------------------------------------------


@dataclass
class _Factor:
    """A non-negative table over ``scope`` with a leading batch axis (size 1 or n)."""

    scope: tuple[str, ...]
    table: FloatArray  # shape (B, *cards[scope])


def _multiply_sum(factors: list[_Factor], keep: Sequence[str], label: Mapping[str, int]) -> _Factor:
    """Product of ``factors`` summed over every variable not in ``keep`` (one einsum).

    Variables are relabelled 0..k-1 per call (einsum allows 52 labels per call, not per network).
    """
    local: dict[str, int] = {}
    for v in sorted({w for f in factors for w in f.scope} | set(keep), key=label.__getitem__):
        local[v] = len(local)
    if len(local) > 52:
        raise ValueError(
            f"variable elimination: an intermediate factor spans {len(local)} variables (> 52); "
            "the network is too densely connected for exact inference"
        )
    operands: list[Any] = []
    for f in factors:
        operands.append(f.table)
        operands.append([Ellipsis, *[local[v] for v in f.scope]])
    operands.append([Ellipsis, *[local[v] for v in keep]])
    out = np.einsum(*operands, optimize=len(factors) > 2)
    return _Factor(tuple(keep), np.asarray(out, dtype=float))


def _eliminate(
    factors: list[_Factor],
    query: Sequence[str],
    cards: Mapping[str, int],
) -> _Factor:
    """Variable elimination (greedy min-weight order) down to a factor over ``query``."""
    label = {v: i for i, v in enumerate(cards)}
    factors = list(factors)
    to_go = {v for f in factors for v in f.scope} - set(query)
    while to_go:
        current = factors
        var = min(
            sorted(to_go),
            key=lambda x: float(
                np.prod([cards[w] for w in {w for f in current if x in f.scope for w in f.scope}])
            ),
        )
        touching = [f for f in factors if var in f.scope]
        rest = [f for f in factors if var not in f.scope]
        keep = sorted({w for f in touching for w in f.scope} - {var}, key=label.__getitem__)
        new = _multiply_sum(touching, keep, label)
        factors = [*rest, new]
        to_go.discard(var)
    return _multiply_sum(factors, list(query), label)


class DiscreteBayesianNetwork(TwinModel):
    """Discrete Bayesian network on a given DAG, with CPTs learned or supplied.

    Parameters
    ----------
    edges : list of (parent, child)
        The DAG. Isolated nodes are taken from ``nodes``.
    nodes : optional list of variable names (adds isolated nodes; fixes the column order).
    state_names : optional {variable: ordered states}; default: sorted observed values.
    estimator : "mle", "bdeu", "k2" or "dirichlet".
    equivalent_sample_size : BDeu equivalent sample size (pseudo-observations, unit "1").
    pseudo_counts : Dirichlet pseudo count per cell for ``estimator="dirichlet"``.

    Learned attributes: ``variables_`` (topological order), ``parents_``, ``state_names_``,
    ``cardinality_``, ``cpts_`` ({v: array of shape (*parent cards, card v)}, rows sum to 1),
    ``counts_`` (same shapes: observed family counts), ``alpha_`` (prior pseudo counts).
    """

    def __init__(
        self,
        edges: Sequence[Edge] = (),
        nodes: Sequence[str] | None = None,
        state_names: Mapping[str, Sequence[Hashable]] | None = None,
        estimator: Literal["mle", "bdeu", "k2", "dirichlet"] = "mle",
        equivalent_sample_size: float = 5.0,
        pseudo_counts: float = 1.0,
    ) -> None:
        self.edges = edges
        self.nodes = nodes
        self.state_names = state_names
        self.estimator = estimator
        self.equivalent_sample_size = equivalent_sample_size
        self.pseudo_counts = pseudo_counts

    # -- construction ------------------------------------------------------------------------

    def _structure(self, extra: Iterable[str] = ()) -> tuple[list[str], dict[str, list[str]]]:
        edges = [tuple(e) for e in self.edges]
        nodes = _nodes_from_edges(edges, [*(self.nodes or []), *extra])  # type: ignore[arg-type]
        order = topological_order(nodes, edges)  # type: ignore[arg-type]
        return order, _parents_map(nodes, edges)  # type: ignore[arg-type]

    @classmethod
    def from_cpts(
        cls,
        edges: Sequence[Edge],
        cpts: Mapping[str, ArrayLike],
        state_names: Mapping[str, Sequence[Hashable]],
    ) -> DiscreteBayesianNetwork:
        """Build a network from known CPTs ``{v: array (*parent cards, card v)}``.

        Parents are in the order they first appear as (parent, v) in ``edges``.
        """
        model = cls(edges=edges, nodes=list(cpts), state_names=state_names)
        order, parents = model._structure()
        model.variables_ = order
        model.parents_ = parents
        model.state_names_ = {v: list(state_names[v]) for v in order}
        model.cardinality_ = {v: len(model.state_names_[v]) for v in order}
        model.cpts_ = {}
        for v in order:
            if v not in cpts:
                raise ValueError(f"cpts: no table for variable {v!r}")
            t = np.asarray(cpts[v], dtype=float)
            shape = tuple(model.cardinality_[p] for p in parents[v]) + (model.cardinality_[v],)
            if t.shape != shape:
                raise ValueError(
                    f"cpts[{v!r}]: shape {t.shape}, expected {shape} (parents {parents[v]}, child last)"
                )
            if np.any(t < 0) or not np.allclose(t.sum(axis=-1), 1.0, atol=1e-8):
                raise ValueError(
                    f"cpts[{v!r}]: rows must be probabilities summing to 1 over the child"
                )
            model.cpts_[v] = t
        model.counts_ = {v: np.zeros_like(model.cpts_[v]) for v in order}
        model.alpha_ = {v: np.zeros_like(model.cpts_[v]) for v in order}
        return model

    def fit(self, data: pd.DataFrame | Mapping[str, ArrayLike]) -> DiscreteBayesianNetwork:
        """Estimate the CPTs from complete discrete data (one row per patient)."""
        df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(dict(data))
        order, parents = self._structure()
        codes, states = _encode(df, order, self.state_names)
        cards = np.array([len(states[v]) for v in order], dtype=np.int64)
        pos = {v: i for i, v in enumerate(order)}
        if self.estimator not in ("mle", "bdeu", "k2", "dirichlet"):
            raise ValueError(
                f"estimator = {self.estimator!r}: must be 'mle', 'bdeu', 'k2' or 'dirichlet'"
            )
        if self.estimator == "bdeu" and not self.equivalent_sample_size > 0:
            raise ValueError(f"equivalent_sample_size = {self.equivalent_sample_size}: must be > 0")
        if self.estimator == "dirichlet" and not self.pseudo_counts >= 0:
            raise ValueError(f"pseudo_counts = {self.pseudo_counts}: must be >= 0")
        self.variables_ = order
        self.parents_ = parents
        self.state_names_ = states
        self.cardinality_ = {v: int(cards[pos[v]]) for v in order}
        self.cpts_: dict[str, FloatArray] = {}
        self.counts_: dict[str, FloatArray] = {}
        self.alpha_: dict[str, FloatArray] = {}
        for v in order:
            ps = parents[v]
            c = _family_counts(codes, pos[v], [pos[p] for p in ps], cards).astype(float)
            shape = tuple(int(cards[pos[p]]) for p in ps) + (int(cards[pos[v]]),)
            c = c.reshape(shape)
            if self.estimator == "mle":
                a = np.zeros_like(c)
            elif self.estimator == "k2":
                a = np.ones_like(c)
            elif self.estimator == "bdeu":
                a = np.full_like(c, self.equivalent_sample_size / c.size)
            else:
                a = np.full_like(c, float(self.pseudo_counts))
            tot = c + a
            rowsum = tot.sum(axis=-1, keepdims=True)
            # unseen parent configuration under MLE: uniform (pgmpy does the same)
            theta = np.where(rowsum > 0, tot / np.where(rowsum > 0, rowsum, 1.0), 1.0 / shape[-1])
            self.cpts_[v] = theta
            self.counts_[v] = c
            self.alpha_[v] = a
        return self

    # -- parameter uncertainty ------------------------------------------------------------

    def cpt_interval(self, variable: str, level: float = 0.95) -> tuple[FloatArray, FloatArray]:
        """Equal-tailed interval for each CPT entry (probability, unit "1").

        Each entry's marginal posterior is Beta(N_jk + a_jk, N_j + a_j - N_jk - a_jk) from the
        Dirichlet posterior; with the MLE (no prior) Jeffreys' a = 1/2 is used for the interval.
        """
        self._require_fitted("cpts_")
        if variable not in self.cpts_:
            raise ValueError(f"variable = {variable!r}: not in the network {self.variables_}")
        if not 0 < level < 1:
            raise ValueError(f"level = {level}: must be in (0, 1)")
        c, a = self.counts_[variable], self.alpha_[variable]
        if not np.any(a > 0):
            a = np.full_like(c, 0.5)
            a_row = np.full_like(c, 1.0)  # Jeffreys Beta(x + 1/2, n - x + 1/2), per entry
        else:
            a_row = a.sum(axis=-1, keepdims=True) * np.ones_like(c)
        n_row = c.sum(axis=-1, keepdims=True)
        alpha = c + a
        beta = n_row + a_row - alpha
        lo = stats.beta.ppf((1 - level) / 2, alpha, beta)
        hi = stats.beta.ppf((1 + level) / 2, alpha, beta)
        return np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)

    # -- inference ---------------------------------------------------------------------------

    def _codes_for(self, variable: str, values: ArrayLike) -> IntArray:
        """Evidence values (states, or None / NaN for unobserved) -> integer codes (-1 = none)."""
        if variable not in self.state_names_:
            raise ValueError(f"evidence: {variable!r} is not a variable of the network")
        arr = np.atleast_1d(np.asarray(values, dtype=object))
        if arr.ndim != 1:
            raise ValueError(f"evidence[{variable!r}]: need one value per patient, shape (n,)")
        states = self.state_names_[variable]
        missing = np.asarray(pd.isna(arr), dtype=bool)
        out = np.asarray(pd.Categorical(arr, categories=states).codes, dtype=np.int64)
        bad = (out < 0) & ~missing
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"evidence[{variable!r}][{i}] = {arr[i]!r}: not one of the states "
                f"{states} (use None for unobserved)"
            )
        return out

    def _evidence_factors(
        self,
        evidence: Mapping[str, ArrayLike] | None,
        soft_evidence: Mapping[str, ArrayLike] | None,
    ) -> tuple[list[_Factor], int]:
        factors: list[_Factor] = []
        sizes: set[int] = set()
        for v, vals in (evidence or {}).items():
            codes = self._codes_for(v, vals)
            r = self.cardinality_[v]
            ind = np.zeros((codes.shape[0], r))
            obs = codes >= 0
            ind[obs, codes[obs]] = 1.0
            ind[~obs] = 1.0
            factors.append(_Factor((v,), ind))
            sizes.add(codes.shape[0])
        for v, lik in (soft_evidence or {}).items():
            if v not in self.cardinality_:
                raise ValueError(f"soft_evidence: {v!r} is not a variable of the network")
            arr = np.atleast_2d(np.asarray(lik, dtype=float))
            if arr.shape[-1] != self.cardinality_[v] or np.any(arr < 0):
                raise ValueError(
                    f"soft_evidence[{v!r}]: need non-negative likelihoods of shape (n, "
                    f"{self.cardinality_[v]}), got shape {arr.shape}"
                )
            factors.append(_Factor((v,), arr))
            sizes.add(arr.shape[0])
        sizes.discard(1)
        if len(sizes) > 1:
            raise ValueError(f"evidence: arrays have different numbers of patients {sorted(sizes)}")
        return factors, (sizes.pop() if sizes else 1)

    def _relevant(self, targets: Iterable[str]) -> list[str]:
        """Ancestral set of ``targets`` (barren nodes are pruned before elimination)."""
        keep: set[str] = set()
        stack = list(targets)
        while stack:
            v = stack.pop()
            if v not in keep:
                keep.add(v)
                stack.extend(self.parents_[v])
        return [v for v in self.variables_ if v in keep]

    def _cpt_factor(self, v: str) -> _Factor:
        return _Factor((*self.parents_[v], v), self.cpts_[v][None, ...])

    def _joint(
        self,
        variables: Sequence[str],
        evidence: Mapping[str, ArrayLike] | None,
        soft_evidence: Mapping[str, ArrayLike] | None,
    ) -> tuple[FloatArray, FloatArray]:
        self._require_fitted("cpts_")
        variables = list(variables)
        for v in variables:
            if v not in self.cpts_:
                raise ValueError(f"variables: {v!r} is not in the network {self.variables_}")
        if len(set(variables)) != len(variables):
            raise ValueError(f"variables: duplicates in {variables}")
        both = set(variables) & set(evidence or {})
        if both:
            raise ValueError(f"variables and evidence overlap: {sorted(both)}")
        ev, n = self._evidence_factors(evidence, soft_evidence)
        targets = [*variables, *(evidence or {}), *(soft_evidence or {})]
        nodes = self._relevant(targets)
        factors = [self._cpt_factor(v) for v in nodes] + ev
        cards = {v: self.cardinality_[v] for v in self.variables_}
        out = _eliminate(factors, variables, cards).table
        out = np.broadcast_to(out, (n, *out.shape[1:])).copy()
        z = out.reshape(n, -1).sum(axis=1)
        if np.any(z <= 0):
            bad = int(np.flatnonzero(z <= 0)[0])
            raise ValueError(f"evidence: patient {bad} has evidence of probability zero")
        return out / z.reshape((n,) + (1,) * len(variables)), z

    def query(
        self,
        variables: Sequence[str],
        evidence: Mapping[str, ArrayLike] | None = None,
        soft_evidence: Mapping[str, ArrayLike] | None = None,
    ) -> FloatArray:
        """Joint posterior P(variables | evidence) per patient, shape (n, *cards); unit "1".

        ``evidence`` maps variables to arrays of observed states (one per patient; ``None``
        marks unobserved for that patient). ``soft_evidence`` maps variables to likelihood
        vectors of shape (n, card) (virtual evidence).
        """
        return self._joint(variables, evidence, soft_evidence)[0]

    def marginals(
        self,
        variables: Sequence[str],
        evidence: Mapping[str, ArrayLike] | None = None,
        soft_evidence: Mapping[str, ArrayLike] | None = None,
    ) -> dict[str, FloatArray]:
        """Posterior marginal of each variable, {v: array (n, card v)}; unit "1"."""
        return {v: self.query([v], evidence, soft_evidence) for v in variables}

    def evidence_probability(
        self,
        evidence: Mapping[str, ArrayLike],
        soft_evidence: Mapping[str, ArrayLike] | None = None,
    ) -> FloatArray:
        """P(evidence) per patient, shape (n,) (unit "1"): the normalising constant."""
        return self._joint([], evidence, soft_evidence)[1]

    def map_query(
        self,
        variables: Sequence[str],
        evidence: Mapping[str, ArrayLike] | None = None,
        soft_evidence: Mapping[str, ArrayLike] | None = None,
    ) -> tuple[NDArray[np.object_], FloatArray]:
        """Most probable joint state of ``variables`` per patient (others summed out).

        Returns (states (n, len(variables)) as state labels, their posterior probability (n,)).
        """
        post = self.query(variables, evidence, soft_evidence)
        n = post.shape[0]
        flat = post.reshape(n, -1)
        best = flat.argmax(axis=1)
        idx = np.unravel_index(best, post.shape[1:])
        out = np.empty((n, len(variables)), dtype=object)
        for j, v in enumerate(variables):
            out[:, j] = np.asarray(self.state_names_[v], dtype=object)[idx[j]]
        return out, flat[np.arange(n), best]

    def predict_proba(
        self, evidence: Mapping[str, ArrayLike], target: str | None = None
    ) -> FloatArray:
        """Posterior of ``target`` (default: the last variable in topological order), (n, card)."""
        self._require_fitted("cpts_")
        t = target if target is not None else self.variables_[-1]
        return self.query([t], evidence)

    def predict(self, evidence: Mapping[str, ArrayLike], target: str | None = None) -> NDArray[Any]:
        """Most probable state of ``target`` per patient, shape (n,)."""
        self._require_fitted("cpts_")
        t = target if target is not None else self.variables_[-1]
        post = self.query([t], evidence)
        return np.asarray(self.state_names_[t], dtype=object)[post.argmax(axis=1)]

    # -- sampling ----------------------------------------------------------------------------

    def simulate(
        self,
        n: int,
        evidence: Mapping[str, Hashable] | None = None,
        seed: int | np.random.Generator | None = None,
    ) -> tuple[IntArray, FloatArray]:
        """Simulated patients by forward sampling, or likelihood weighting given ``evidence``.

        Returns (codes (n, V) in the order ``variables_``, weights (n,)); state labels are
        ``state_names_[v][code]``. Without evidence all weights are 1. With evidence, evidence
        variables are clamped and each sample is weighted by prod P(e_v | parents) (unit "1");
        weighted averages estimate posterior expectations. Results are simulated.
        """
        self._require_fitted("cpts_")
        if n < 1:
            raise ValueError(f"n = {n}: must be a positive number of simulated patients")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        pos = {v: i for i, v in enumerate(self.variables_)}
        fixed: dict[str, int] = {}
        for v, s in (evidence or {}).items():
            fixed[v] = int(self._codes_for(v, np.array([s], dtype=object))[0])
            if fixed[v] < 0:
                raise ValueError(f"evidence[{v!r}]: must be an observed state for sampling")
        codes = np.zeros((n, len(self.variables_)), dtype=np.int64)
        logw = np.zeros(n)
        for v in self.variables_:
            ps = self.parents_[v]
            table = self.cpts_[v].reshape(-1, self.cardinality_[v])
            row = np.zeros(n, dtype=np.int64)
            for p in ps:
                row = row * self.cardinality_[p] + codes[:, pos[p]]
            probs = table[row]
            if v in fixed:
                codes[:, pos[v]] = fixed[v]
                with np.errstate(divide="ignore"):
                    logw += np.log(probs[:, fixed[v]])
            else:
                u = rng.random(n)
                cum = np.cumsum(probs, axis=1)
                codes[:, pos[v]] = np.minimum(
                    (cum < u[:, None] * cum[:, -1:]).sum(axis=1), table.shape[1] - 1
                )
        return codes, np.exp(logw)

    def log_likelihood(self, data: pd.DataFrame | Mapping[str, ArrayLike]) -> FloatArray:
        """Log-likelihood of each complete row under the fitted CPTs, shape (n,), nats."""
        self._require_fitted("cpts_")
        df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(dict(data))
        codes, _ = _encode(df, self.variables_, self.state_names_)
        pos = {v: i for i, v in enumerate(self.variables_)}
        ll = np.zeros(codes.shape[0])
        for v in self.variables_:
            idx = tuple(codes[:, pos[p]] for p in self.parents_[v]) + (codes[:, pos[v]],)
            with np.errstate(divide="ignore"):
                ll += np.log(self.cpts_[v][idx])
        return ll


# --------------------------------------------------------------------------------------------
# linear-Gaussian networks
# --------------------------------------------------------------------------------------------


class LinearGaussianBayesianNetwork(TwinModel):
    """Linear-Gaussian Bayesian network ``X_v = b_v0 + sum_u b_vu X_u + N(0, s_v^2)``.

    Parameters
    ----------
    edges : the DAG as (parent, child) pairs.
    nodes : optional extra (isolated) nodes.
    std_estimator : "mle" (divide RSS by n) or "unbiased" (by n - 1 - |Pa|), as pgmpy.
    units : optional {variable: UCUM unit} carried into outputs (default "1").

    Learned attributes: ``variables_``, ``parents_``, ``coef_`` ({v: [b_v0, b_v,pa...]}),
    ``coef_se_`` (OLS standard errors), ``std_`` (residual s.d., unit of v), ``n_samples_``.
    """

    def __init__(
        self,
        edges: Sequence[Edge] = (),
        nodes: Sequence[str] | None = None,
        std_estimator: Literal["mle", "unbiased"] = "unbiased",
        units: Mapping[str, str] | None = None,
    ) -> None:
        self.edges = edges
        self.nodes = nodes
        self.std_estimator = std_estimator
        self.units = units

    def fit(self, data: pd.DataFrame | Mapping[str, ArrayLike]) -> LinearGaussianBayesianNetwork:
        """Ordinary least squares for each node on its parents (the MLE of the coefficients)."""
        if self.std_estimator not in ("mle", "unbiased"):
            raise ValueError(f"std_estimator = {self.std_estimator!r}: must be 'mle' or 'unbiased'")
        df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(dict(data))
        edges = [tuple(e) for e in self.edges]
        nodes = _nodes_from_edges(edges, self.nodes or [])  # type: ignore[arg-type]
        order = topological_order(nodes, edges)  # type: ignore[arg-type]
        parents = _parents_map(nodes, edges)  # type: ignore[arg-type]
        missing = [v for v in order if v not in df.columns]
        if missing:
            raise ValueError(f"data: missing column(s) {missing}")
        x = df[order].to_numpy(dtype=float)
        if not np.all(np.isfinite(x)):
            r, c = np.argwhere(~np.isfinite(x))[0]
            raise ValueError(f"data[{order[c]!r}]: non-finite value at row {r}")
        n = x.shape[0]
        pos = {v: i for i, v in enumerate(order)}
        self.variables_ = order
        self.parents_ = parents
        self.n_samples_ = n
        self.data_range_ = {
            v: (float(x[:, pos[v]].min()), float(x[:, pos[v]].max())) for v in order
        }
        self.coef_: dict[str, FloatArray] = {}
        self.coef_se_: dict[str, FloatArray] = {}
        self.std_: dict[str, float] = {}
        for v in order:
            k = len(parents[v])
            if n <= k + 1:
                raise ValueError(
                    f"data: {n} rows cannot fit {v!r} on {k} parent(s) and an intercept"
                )
            design = np.column_stack([np.ones(n), x[:, [pos[p] for p in parents[v]]]])
            y = x[:, pos[v]]
            beta, *_ = np.linalg.lstsq(design, y, rcond=None)
            resid = y - design @ beta
            rss = float(resid @ resid)
            ddof = 0 if self.std_estimator == "mle" else 1 + k
            self.coef_[v] = beta
            self.std_[v] = float(np.sqrt(rss / (n - ddof)))
            cov = rss / (n - 1 - k) * np.linalg.pinv(design.T @ design)
            self.coef_se_[v] = np.sqrt(np.diag(cov))
        return self

    def coef_interval(self, variable: str, level: float = 0.95) -> tuple[FloatArray, FloatArray]:
        """t-based confidence interval for [b_v0, b_v,pa...] (units of v per unit of parent)."""
        self._require_fitted("coef_")
        if variable not in self.coef_:
            raise ValueError(f"variable = {variable!r}: not in the network {self.variables_}")
        dof = self.n_samples_ - len(self.coef_[variable])
        t = stats.t.ppf((1 + level) / 2, dof)
        b, se = self.coef_[variable], self.coef_se_[variable]
        return b - t * se, b + t * se

    def to_joint_gaussian(self) -> tuple[FloatArray, FloatArray]:
        """Mean (V,) and covariance (V, V) of the implied joint normal, order ``variables_``."""
        self._require_fitted("coef_")
        order = self.variables_
        pos = {v: i for i, v in enumerate(order)}
        m = len(order)
        b = np.zeros((m, m))
        c = np.zeros(m)
        omega = np.zeros(m)
        for v in order:
            c[pos[v]] = self.coef_[v][0]
            for j, p in enumerate(self.parents_[v]):
                b[pos[v], pos[p]] = self.coef_[v][j + 1]
            omega[pos[v]] = self.std_[v] ** 2
        inv = np.linalg.inv(np.eye(m) - b)
        return inv @ c, inv @ np.diag(omega) @ inv.T

    def query(
        self, evidence: Mapping[str, ArrayLike], *, allow_extrapolation: bool = False
    ) -> tuple[list[str], FloatArray, FloatArray]:
        """Posterior of the unobserved variables given per-patient observations.

        ``evidence`` maps a subset of variables to arrays (n,), the same subset observed for every
        patient. Returns (unobserved variables, posterior means (n, k), covariance (k, k)); the
        covariance does not depend on the observed values. Observations outside the range seen
        at fit time raise :class:`~healthtwin.models.base.OutOfRangeError` unless
        ``allow_extrapolation=True`` (the linear model is then used beyond its data).
        """
        mu, cov = self.to_joint_gaussian()
        pos = {v: i for i, v in enumerate(self.variables_)}
        for v, vals in evidence.items():
            if v not in pos:
                raise ValueError(f"evidence: {v!r} is not a variable of the network")
            lo, hi = self.data_range_[v]
            check_range(
                f"evidence[{v!r}]",
                vals,
                lo,
                hi,
                self.unit(v),
                allow_extrapolation=allow_extrapolation,
            )
        obs = [v for v in self.variables_ if v in evidence]
        hid = [v for v in self.variables_ if v not in evidence]
        if not hid:
            raise ValueError("evidence: every variable is observed; nothing to infer")
        xb = (
            np.column_stack([np.atleast_1d(np.asarray(evidence[v], dtype=float)) for v in obs])
            if obs
            else None
        )
        ia, ib = [pos[v] for v in hid], [pos[v] for v in obs]
        if xb is None:
            return hid, mu[ia][None, :], cov[np.ix_(ia, ia)]
        s_ab = cov[np.ix_(ia, ib)]
        s_bb = cov[np.ix_(ib, ib)]
        gain = np.linalg.solve(s_bb, s_ab.T).T
        mean = mu[ia][None, :] + (xb - mu[ib][None, :]) @ gain.T
        post_cov = cov[np.ix_(ia, ia)] - gain @ s_ab.T
        return hid, mean, post_cov

    def predict(
        self, evidence: Mapping[str, ArrayLike], *, allow_extrapolation: bool = False
    ) -> FloatArray:
        """Posterior mean of the unobserved variables (n, k), in their data units."""
        return self.query(evidence, allow_extrapolation=allow_extrapolation)[1]

    def simulate(self, n: int, seed: int | np.random.Generator | None = None) -> FloatArray:
        """Simulated patients (n, V) by ancestral sampling, columns ordered as ``variables_``."""
        self._require_fitted("coef_")
        if n < 1:
            raise ValueError(f"n = {n}: must be a positive number of simulated patients")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        pos = {v: i for i, v in enumerate(self.variables_)}
        x = np.zeros((n, len(self.variables_)))
        for v in self.variables_:
            b = self.coef_[v]
            mean = b[0] + x[:, [pos[p] for p in self.parents_[v]]] @ b[1:]
            x[:, pos[v]] = mean + self.std_[v] * rng.standard_normal(n)
        return x

    def log_likelihood(self, data: pd.DataFrame | Mapping[str, ArrayLike]) -> FloatArray:
        """Log density of each row under the fitted network, shape (n,) (nats)."""
        self._require_fitted("coef_")
        df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(dict(data))
        x = df[self.variables_].to_numpy(dtype=float)
        pos = {v: i for i, v in enumerate(self.variables_)}
        ll = np.zeros(x.shape[0])
        for v in self.variables_:
            b = self.coef_[v]
            mean = b[0] + x[:, [pos[p] for p in self.parents_[v]]] @ b[1:]
            ll += stats.norm.logpdf(x[:, pos[v]], mean, self.std_[v])
        return ll

    def unit(self, variable: str) -> str:
        """UCUM unit of ``variable`` (as given in ``units``; "1" when not stated)."""
        return (self.units or {}).get(variable, "1")


def asia_network() -> DiscreteBayesianNetwork:
    """The classic "asia" chest-clinic network (Lauritzen & Spiegelhalter 1988).

    Eight binary variables with states ("no", "yes"): visit to Asia, smoking, tuberculosis,
    lung cancer, bronchitis, "either" (tuberculosis or cancer), positive X-ray, dyspnoea.
    A worked example for docs, the CLI and benchmarks; the probabilities are the published ones.
    """
    either = np.zeros((2, 2, 2))
    either[0, 0] = [1.0, 0.0]
    either[0, 1] = either[1, 0] = either[1, 1] = [0.0, 1.0]
    cpts = {
        "asia": np.array([0.99, 0.01]),
        "smoke": np.array([0.5, 0.5]),
        "tub": np.array([[0.99, 0.01], [0.95, 0.05]]),
        "lung": np.array([[0.99, 0.01], [0.9, 0.1]]),
        "bronc": np.array([[0.7, 0.3], [0.4, 0.6]]),
        "either": either,
        "xray": np.array([[0.95, 0.05], [0.02, 0.98]]),
        "dysp": np.array([[[0.9, 0.1], [0.2, 0.8]], [[0.3, 0.7], [0.1, 0.9]]]),
    }
    edges = [
        ("asia", "tub"),
        ("smoke", "lung"),
        ("smoke", "bronc"),
        ("tub", "either"),
        ("lung", "either"),
        ("either", "xray"),
        ("either", "dysp"),
        ("bronc", "dysp"),
    ]
    return DiscreteBayesianNetwork.from_cpts(edges, cpts, {v: ["no", "yes"] for v in cpts})
