"""PROCOVA: prognostic covariate adjustment with heteroskedasticity-robust ANCOVA.

Model (per trial): yᵢ = β₀ + τ·Tᵢ + γ·(Mᵢ − M̄) + εᵢ, where Tᵢ ∈ {0, 1} is the arm and Mᵢ the
prognostic score, i.e. the patient's predicted control outcome from a model trained on
historical control data. τ̂ is the average treatment effect (outcome unit); its standard error
is the HC3 sandwich (MacKinnon & White 1985):

    V̂ = (XᵀX)⁻¹ Xᵀ diag(eᵢ² / (1 − hᵢ)²) X (XᵀX)⁻¹,   hᵢ = xᵢᵀ(XᵀX)⁻¹xᵢ,

with t-based tests on n − p degrees of freedom. All Monte Carlo replications are solved at
once with batched linear algebra (first axis = replications); missing outcomes (NaN) are
dropped per replication by zero-weighting their rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats
from sklearn.base import clone

F = NDArray[np.float64]


class Regressor(Protocol):
    """Any scikit-learn-compatible regressor (``fit`` / ``predict``)."""

    def fit(self, X: Any, y: Any) -> Any: ...
    def predict(self, X: Any) -> Any: ...


@dataclass(frozen=True)
class AncovaResult:
    """Treatment-effect estimate from one trial (estimate, SE and CI in ``unit``)."""

    estimate: float
    se: float
    ci_low: float
    ci_high: float
    p_value_two_sided: float
    p_value_one_sided: float
    df: int
    n: int
    unit: str
    cov_type: str = "HC3"
    level: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BatchAncova:
    """Batched ANCOVA results; every array has one entry per replication."""

    estimate: F
    se: F
    df: F
    n_obs: F

    def t(self) -> F:
        return self.estimate / self.se


def batched_ancova(
    y: ArrayLike,
    treat: ArrayLike,
    covariates: ArrayLike | None = None,
    cov_type: str = "HC3",
) -> BatchAncova:
    """OLS of y on [1, treat, covariates] for R replications at once.

    ``y`` and ``treat`` have shape (R, n) (or (n,)); ``covariates`` (R, n, k) or (R, n).
    NaN outcomes are excluded. ``cov_type`` is "HC3" (default), "HC2", "HC0" or "nonrobust".
    HC3 is conservative in small samples (two-sided 5% test: ≈ 0.0486 at n = 200, ≈ 0.0465 at
    n = 86, measured); HC2 is unbiased under homoskedasticity and holds the level ≈ 0.050.
    Returns the coefficient of ``treat`` and its standard error per replication.
    """
    Y = np.atleast_2d(np.asarray(y, dtype=float))
    T = np.atleast_2d(np.asarray(treat, dtype=float))
    if Y.shape != T.shape:
        raise ValueError(f"y has shape {Y.shape} but treat has shape {T.shape}; they must match")
    R, n = Y.shape
    cols = [np.ones_like(T), T]
    if covariates is not None:
        C = np.asarray(covariates, dtype=float)
        if C.ndim == 1:
            C = C[None, :, None]
        elif C.ndim == 2:
            C = C[..., None]
        if C.shape[:2] != (R, n):
            raise ValueError(
                f"covariates have shape {C.shape}; expected (R, n, k) with R={R}, n={n}"
            )
        if not np.all(np.isfinite(C)):
            raise ValueError("covariates contain NaN or infinite values; impute or drop them")
        cols.extend(np.moveaxis(C, -1, 0))
    X = np.stack(cols, axis=-1)
    p = X.shape[-1]
    obs = np.isfinite(Y)
    X = np.where(obs[..., None], X, 0.0)
    Y = np.where(obs, Y, 0.0)
    n_obs = obs.sum(axis=1).astype(float)
    if np.any(n_obs <= p):
        raise ValueError(f"too few observed outcomes (min {int(n_obs.min())}) for {p} parameters")
    Xt = np.swapaxes(X, 1, 2)
    inv = np.linalg.inv(Xt @ X)
    beta = (inv @ (Xt @ Y[..., None]))[..., 0]
    e = Y - (X @ beta[..., None])[..., 0]
    if cov_type == "nonrobust":
        s2 = (e**2).sum(axis=1) / (n_obs - p)
        var = s2 * inv[:, 1, 1]
    elif cov_type in ("HC0", "HC2", "HC3"):
        w = e**2
        if cov_type != "HC0":
            h = np.sum((X @ inv) * X, axis=-1)
            w = w / np.clip(1.0 - h, 1e-12, None) ** (2 if cov_type == "HC3" else 1)
        # only row 1 of the sandwich is needed: a = inv[:, 1, :] (treatment row)
        a = (X @ inv[:, 1, :, None])[..., 0]
        var = np.sum(a**2 * w, axis=1)
    else:
        raise ValueError(f"cov_type = {cov_type!r}; expected 'HC3', 'HC2', 'HC0' or 'nonrobust'")
    return BatchAncova(beta[:, 1], np.sqrt(var), n_obs - p, n_obs)


def ancova(
    y: ArrayLike,
    treat: ArrayLike,
    covariates: ArrayLike | None = None,
    *,
    unit: str = "1",
    level: float = 0.95,
    cov_type: str = "HC3",
) -> AncovaResult:
    """ANCOVA with robust SE for one trial; ``unit`` is the outcome's UCUM unit."""
    yy = np.asarray(y, dtype=float)
    cov = None if covariates is None else np.asarray(covariates, dtype=float)
    if cov is not None and cov.ndim == 1:
        cov = cov[:, None]
    b = batched_ancova(
        yy[None], np.asarray(treat, dtype=float)[None], None if cov is None else cov[None], cov_type
    )
    est, se, df = float(b.estimate[0]), float(b.se[0]), float(b.df[0])
    tq = stats.t.ppf(0.5 + level / 2, df)
    t = est / se
    return AncovaResult(
        estimate=est,
        se=se,
        ci_low=est - tq * se,
        ci_high=est + tq * se,
        p_value_two_sided=float(2 * stats.t.sf(abs(t), df)),
        p_value_one_sided=float(stats.t.sf(t, df)),
        df=int(df),
        n=int(b.n_obs[0]),
        unit=unit,
        cov_type=cov_type,
        level=level,
    )


class Procova:
    """Prognostic covariate adjustment around any scikit-learn regressor/classifier.

    ``fit(X_hist, y_hist)`` trains a clone of ``model`` on historical controls;
    ``score(X)`` gives the prognostic score (predicted control outcome, outcome unit; for
    ``binary=True`` the predicted control-event probability via ``predict_proba``);
    ``analyze(X, y, treat)`` runs HC3 ANCOVA of y on arm and the centred score.
    """

    def __init__(self, model: Any, *, binary: bool = False, unit: str = "1") -> None:
        self.model = model
        self.binary = binary
        self.unit = unit

    def fit(self, X_hist: ArrayLike, y_hist: ArrayLike) -> Procova:
        yh = np.asarray(y_hist)
        if not np.all(np.isfinite(yh.astype(float))):
            raise ValueError("y_hist (historical control outcomes) contains NaN/inf")
        self.model_ = clone(self.model).fit(X_hist, yh)
        return self

    def score(self, X: ArrayLike) -> F:
        if not hasattr(self, "model_"):
            raise RuntimeError("Procova is not fitted; call fit(X_hist, y_hist) first")
        if self.binary:
            return np.asarray(self.model_.predict_proba(X)[:, 1], dtype=float)
        return np.asarray(self.model_.predict(X), dtype=float)

    def analyze(
        self, X: ArrayLike, y: ArrayLike, treat: ArrayLike, level: float = 0.95
    ) -> AncovaResult:
        m = self.score(X)
        return ancova(y, treat, m - m.mean(), unit=self.unit, level=level)


# --------------------------------------------------------------------------- Monte Carlo


@dataclass
class Scenario:
    """Data-generating process for the operating-characteristics harness (simulated data).

    Covariates x ~ N(shift_trial, I_k); control outcome y₀ = b·x + nonlin·(x₁² − 1) + ε,
    ε ~ N(0, noise_sd²) (outcome unit "1" = standard units); treated y₁ = y₀ + effect.
    Binary: y₀ ~ Bernoulli(expit(b·x)), y₁ ~ Bernoulli(min(expit(b·x) + effect, 1)).
    Historical controls are drawn with mean ``shift_hist``. ``dropout`` is the probability an
    outcome is missing (completely at random).
    """

    n: int = 200
    ratio: float = 1.0
    effect: float = 0.0
    k: int = 3
    coef: tuple[float, ...] = (0.6, 0.4, 0.2)
    nonlin: float = 0.0
    noise_sd: float = 0.8
    shift_trial: float = 0.0
    shift_hist: float = 0.0
    n_hist: int = 2000
    dropout: float = 0.0
    binary: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def control_mean(self, x: F) -> F:
        b = np.asarray(self.coef[: self.k], dtype=float)
        return np.asarray(x @ b + self.nonlin * (x[..., 0] ** 2 - 1), dtype=float)

    def draw_x(self, rng: np.random.Generator, shape: tuple[int, ...], shift: float) -> F:
        return rng.standard_normal((*shape, self.k)) + shift

    def true_effect(self, x: F) -> float:
        """Average treatment effect over covariates ``x`` (risk difference when binary)."""
        if not self.binary:
            return float(self.effect)
        p0 = 1 / (1 + np.exp(-self.control_mean(x)))
        return float(np.mean(np.clip(p0 + self.effect, 0, 1) - p0))

    def outcome(self, rng: np.random.Generator, x: F, treat: F) -> F:
        mu = self.control_mean(x)
        if self.binary:
            p0 = 1 / (1 + np.exp(-mu))
            p = np.clip(p0 + self.effect * treat, 0, 1)
            return (rng.random(mu.shape) < p).astype(float)
        return mu + self.noise_sd * rng.standard_normal(mu.shape) + self.effect * treat


@dataclass(frozen=True)
class OperatingCharacteristics:
    """Monte Carlo operating characteristics of PROCOVA vs the unadjusted analysis (simulated)."""

    reps: int
    n: int
    effect: float
    rejection_adjusted: float
    rejection_unadjusted: float
    rejection_mcse: float
    bias_adjusted: float
    bias_mcse: float
    coverage_adjusted: float
    variance_ratio: float
    rho2: float
    mean_se_adjusted: float
    sided: str
    alpha: float
    cov_type: str
    label: str = "simulated"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _assign(rng: np.random.Generator, reps: int, n: int, ratio: float) -> F:
    """Complete randomisation with exactly round(n·r/(1+r)) treated per replication."""
    n_t = round(n * ratio / (1 + ratio))
    keys = rng.random((reps, n))
    ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
    return (ranks < n_t).astype(float)


def monte_carlo(
    scenario: Scenario,
    model: Any,
    reps: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
    sided: str = "two",
    prognostic: Any | None = None,
    cov_type: str = "HC3",
) -> OperatingCharacteristics:
    """Operating characteristics over ``reps`` replications, all in one batched computation.

    The prognostic model (a clone of ``model``) is trained once on ``n_hist`` historical
    controls; ``prognostic`` may replace its score with any callable x -> score (e.g. a
    deliberately misspecified model). ρ² is the squared correlation of score and control
    outcome in the trial population, estimated on 200,000 independent draws.
    """
    rng = np.random.default_rng(seed)
    s = scenario
    xh = s.draw_x(rng, (s.n_hist,), s.shift_hist)
    yh = s.outcome(rng, xh, np.zeros(s.n_hist))
    proc = Procova(model, binary=s.binary).fit(xh, yh)
    score_fn = prognostic if prognostic is not None else proc.score

    x = s.draw_x(rng, (reps, s.n), s.shift_trial)
    treat = _assign(rng, reps, s.n, s.ratio)
    y = s.outcome(rng, x, treat)
    if s.dropout > 0:
        y = np.where(rng.random(y.shape) < s.dropout, np.nan, y)
    m = np.asarray(score_fn(x.reshape(-1, s.k)), dtype=float).reshape(reps, s.n)
    m = m - m.mean(axis=1, keepdims=True)
    adj = batched_ancova(y, treat, m[..., None], cov_type)
    una = batched_ancova(y, treat, None, cov_type)

    xo = s.draw_x(rng, (200_000,), s.shift_trial)
    yo = s.outcome(rng, xo, np.zeros(200_000))
    mo = np.asarray(score_fn(xo), dtype=float)
    rho2 = float(np.corrcoef(mo, yo)[0, 1] ** 2)

    def reject(b: BatchAncova) -> F:
        t = b.t()
        if sided == "two":
            return np.asarray(2 * stats.t.sf(np.abs(t), b.df) < alpha, dtype=float)
        return np.asarray(stats.t.sf(t, b.df) < alpha, dtype=float)

    ate = s.true_effect(xo)
    ra, ru = reject(adj), reject(una)
    tq = stats.t.ppf(0.975, adj.df)
    cover = np.abs(adj.estimate - ate) <= tq * adj.se
    p = float(ra.mean())
    return OperatingCharacteristics(
        reps=reps,
        n=s.n,
        effect=ate,
        rejection_adjusted=p,
        rejection_unadjusted=float(ru.mean()),
        rejection_mcse=float(np.sqrt(max(p * (1 - p), 1e-12) / reps)),
        bias_adjusted=float(adj.estimate.mean() - ate),
        bias_mcse=float(adj.estimate.std(ddof=1) / np.sqrt(reps)),
        coverage_adjusted=float(cover.mean()),
        variance_ratio=float(adj.estimate.var(ddof=1) / una.estimate.var(ddof=1)),
        rho2=rho2,
        mean_se_adjusted=float(adj.se.mean()),
        sided=sided,
        alpha=alpha,
        cov_type=cov_type,
    )
