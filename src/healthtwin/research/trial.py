"""In-silico trial simulation: arms, randomisation, enrolment, dosing, endpoints, dropout.

Every virtual patient's potential outcomes are simulated from one noise draw, so the
individual treatment effect (ITE) ``y(dose) − y(0)`` of every patient is known. Outcome
models implement :class:`OutcomeModel`; two are provided here (an Emax dose–response on a
linear progression, and a three-state Markov progression). A physiology model (e.g. glucose)
plugs in by implementing the same protocol. All outputs are labelled ``simulated``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import orjson
import pandas as pd
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator

from healthtwin.models.base import check_range

F = NDArray[np.float64]


@runtime_checkable
class OutcomeModel(Protocol):
    """Plug-in point for outcome generators (first axis of every array = patients).

    ``visits`` are visit times in weeks ("wk"); ``unit`` the outcome's UCUM unit.
    ``draw_noise(n, rng)`` returns all randomness for n patients; ``outcome(X, dose, noise)``
    is deterministic given the noise and returns an (n, n_visits) array of outcome values.
    """

    unit: str
    visits: F

    def draw_noise(self, n: int, rng: np.random.Generator) -> dict[str, F]: ...
    def outcome(self, X: pd.DataFrame, dose: F, noise: dict[str, F]) -> F: ...


def emax(dose: F, e_max: F | float, ed50: float, hill: float = 1.0) -> F:
    """Emax dose–response E(d) = Eₘₐₓ·dʰ/(ED50ʰ + dʰ); dose and ED50 in "mg"."""
    d = np.asarray(dose, dtype=float)
    check_range("dose", d, 0.0, np.inf, "mg")
    dh = d**hill
    return np.asarray(e_max * dh / (ed50**hill + dh), dtype=float)


@dataclass
class LinearProgression:
    """Continuous progression with an Emax drug effect (e.g. HbA1c in "%").

    y_ij = b₀ + Σ_c β_c·(x_ic − centre_c) + (s + vᵢ)·t_j + uᵢ − E(dᵢ)·(1 + κ·zᵢ)·min(t_j/onset, 1) + ε_ij

    u ~ N(0, sd_intercept²), v ~ N(0, sd_slope²) [unit/wk], ε ~ N(0, sd_resid²);
    zᵢ = Σ_c β_c·(x_ic − centre_c) (outcome unit), so κ [1/unit] makes the ITE heterogeneous. Covariates absent from
    ``X`` raise a clear error.
    """

    baseline: float = 8.0
    coef: dict[str, float] | None = None
    centre: dict[str, float] | None = None
    slope: float = 0.01
    sd_intercept: float = 0.8
    sd_slope: float = 0.005
    sd_resid: float = 0.3
    e_max: float = 1.2
    ed50: float = 50.0
    hill: float = 1.0
    effect_modifier: float = 0.0
    onset: float = 12.0
    n_visits: int = 53
    unit: str = "%"

    def __post_init__(self) -> None:
        self.coef = dict(self.coef or {})
        self.centre = dict(self.centre or {})
        self.visits = np.arange(self.n_visits, dtype=float)

    def draw_noise(self, n: int, rng: np.random.Generator) -> dict[str, F]:
        return {
            "u": rng.standard_normal(n) * self.sd_intercept,
            "v": rng.standard_normal(n) * self.sd_slope,
            "eps": rng.standard_normal((n, self.visits.size)) * self.sd_resid,
        }

    def linear_predictor(self, X: pd.DataFrame) -> F:
        assert self.coef is not None and self.centre is not None
        lp = np.full(len(X), self.baseline, dtype=float)
        for name, b in self.coef.items():
            if name not in X.columns:
                raise KeyError(
                    f"LinearProgression needs covariate column {name!r}; got {list(X.columns)}"
                )
            lp += b * (X[name].to_numpy(float) - self.centre.get(name, 0.0))
        return lp

    def outcome(self, X: pd.DataFrame, dose: F, noise: dict[str, F]) -> F:
        lp = self.linear_predictor(X)
        z = lp - self.baseline
        eff = emax(np.asarray(dose, float), self.e_max, self.ed50, self.hill) * (
            1 + self.effect_modifier * z
        )
        ramp = np.minimum(self.visits / self.onset, 1.0)
        t = self.visits
        return (
            (lp + noise["u"])[:, None]
            + (self.slope + noise["v"])[:, None] * t[None, :]
            - eff[:, None] * ramp[None, :]
            + noise["eps"]
        )


@dataclass
class MarkovProgression:
    """Weekly three-state progression 0 = stable, 1 = progressed, 2 = severe (absorbing).

    Weekly transition probabilities p₀₁ = expit(a₀₁ + β·(x − centre)), p₁₂ = expit(a₁₂ + β·…);
    treatment multiplies them by (1 − E(d)) with E an Emax curve (0 ≤ Eₘₐₓ < 1). Common
    uniforms drive both arms, so each patient's counterfactual path is known. Unit "1" (state).
    """

    a01: float = -4.0
    a12: float = -3.5
    coef: dict[str, float] | None = None
    centre: dict[str, float] | None = None
    e_max: float = 0.5
    ed50: float = 50.0
    n_visits: int = 53
    unit: str = "1"

    def __post_init__(self) -> None:
        self.coef = dict(self.coef or {})
        self.centre = dict(self.centre or {})
        self.visits = np.arange(self.n_visits, dtype=float)
        check_range("MarkovProgression.e_max", self.e_max, 0.0, 0.999, "1")

    def draw_noise(self, n: int, rng: np.random.Generator) -> dict[str, F]:
        return {"u": rng.random((n, self.visits.size))}

    def outcome(self, X: pd.DataFrame, dose: F, noise: dict[str, F]) -> F:
        assert self.coef is not None and self.centre is not None
        lp = np.zeros(len(X))
        for name, b in self.coef.items():
            if name not in X.columns:
                raise KeyError(f"MarkovProgression needs covariate column {name!r}")
            lp += b * (X[name].to_numpy(float) - self.centre.get(name, 0.0))
        mult = 1 - emax(np.asarray(dose, float), self.e_max, self.ed50)
        p01 = mult / (1 + np.exp(-(self.a01 + lp)))
        p12 = mult / (1 + np.exp(-(self.a12 + lp)))
        u = noise["u"]
        state = np.zeros(len(X))
        out = np.empty_like(u)
        out[:, 0] = 0.0
        for j in range(1, u.shape[1]):  # loop over visits, vectorised over patients
            up = np.where(state == 0, u[:, j] < p01, np.where(state == 1, u[:, j] < p12, False))
            state = state + up
            out[:, j] = state
        return out


# ------------------------------------------------------------------------------- spec


class Arm(BaseModel):
    """One arm: dose per administration ("mg"), administrations per week ("/wk"), weight ("1").

    The regimen's exposure passed to the outcome model is ``dose × per_week`` (mg/wk; the
    built-in models' ED50 is in the same unit).
    """

    model_config = ConfigDict(extra="forbid")
    name: str
    dose: float = Field(ge=0)
    per_week: float = Field(default=1.0, gt=0)
    weight: float = Field(default=1.0, gt=0)

    @property
    def exposure(self) -> float:
        """Weekly exposure (mg/wk)."""
        return self.dose * self.per_week


class TrialSpec(BaseModel):
    """Declarative trial design (YAML/JSON). Times in weeks ("wk"), rates in "/wk"."""

    model_config = ConfigDict(extra="forbid")
    n: int = Field(gt=3, description="patients randomised")
    arms: list[Arm] = Field(
        default_factory=lambda: [Arm(name="control", dose=0), Arm(name="treated", dose=100)]
    )
    randomisation: Literal["simple", "block", "stratified"] = "block"
    block_size: int = Field(default=4, gt=0)
    strata: list[str] = Field(default_factory=list)
    enrolment_rate: float = Field(default=10.0, gt=0, description="patients /wk (Poisson)")
    endpoint: Literal["continuous", "binary", "tte"] = "continuous"
    endpoint_visit: int = Field(default=52, ge=1)
    binary_threshold: float = 7.0
    dropout_rate: float = Field(default=0.0, ge=0, description="hazard /wk")
    dropout_covariate: str | None = Field(
        default=None, description="MAR dropout: hazard × exp(log_hr · standardised covariate)"
    )
    dropout_log_hr: float = 0.0
    model: Literal["linear", "markov", "glucose"] = "linear"
    model_params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0

    @field_validator("arms")
    @classmethod
    def _two_arms(cls, v: list[Arm]) -> list[Arm]:
        if len(v) < 2:
            raise ValueError("a trial needs at least two arms")
        if len({a.name for a in v}) != len(v):
            raise ValueError("arm names must be unique")
        return v

    def spec_hash(self) -> str:
        """SHA-256 of the canonical JSON of the spec."""
        return hashlib.sha256(
            orjson.dumps(self.model_dump(), option=orjson.OPT_SORT_KEYS)
        ).hexdigest()

    def outcome_model(self) -> OutcomeModel:
        if self.model == "linear":
            return LinearProgression(n_visits=self.endpoint_visit + 1, **self.model_params)
        if self.model == "glucose":  # UVA/Padova virtual patients (healthtwin.models.physiology)
            from healthtwin.research.glucose_outcome import GlucoseOutcome

            return GlucoseOutcome(n_visits=self.endpoint_visit + 1, **self.model_params)
        return MarkovProgression(n_visits=self.endpoint_visit + 1, **self.model_params)


# ----------------------------------------------------------------------- randomisation


def randomise(
    n: int,
    weights: list[float],
    rng: np.random.Generator,
    method: str = "block",
    block_size: int = 4,
    strata: NDArray[Any] | None = None,
) -> NDArray[np.int64]:
    """Arm index per patient; ``weights`` per arm in order, e.g. [1, 2]: arm 1 gets 2 per 1 on arm 0.

    simple: independent draws; block: permuted blocks whose size is a multiple of the
    allocation pattern; stratified: permuted blocks within each stratum label.
    """
    w = np.asarray(weights, dtype=float)
    if method == "simple":
        return np.asarray(rng.choice(w.size, size=n, p=w / w.sum()), dtype=np.int64)
    if not np.allclose(w, np.round(w)):
        raise ValueError(f"block randomisation needs integer allocation weights; got {weights}")
    pattern = np.repeat(np.arange(w.size), w.astype(int))
    if block_size % pattern.size:
        raise ValueError(
            f"block_size {block_size} is not a multiple of the allocation pattern size {pattern.size}"
        )
    if method == "block":
        return _blocks(n, pattern, block_size, rng)
    if method == "stratified":
        if strata is None:
            raise ValueError("stratified randomisation needs strata labels")
        out = np.empty(n, dtype=np.int64)
        labels = np.asarray(strata)
        for lab in np.unique(labels):
            idx = np.flatnonzero(labels == lab)
            out[idx] = _blocks(idx.size, pattern, block_size, rng)
        return out
    raise ValueError(f"randomisation method {method!r}; expected simple, block or stratified")


def _blocks(
    n: int, pattern: NDArray[Any], block_size: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    n_blocks = -(-n // block_size)
    base = np.tile(pattern, block_size // pattern.size)
    keys = rng.random((n_blocks, block_size))
    blocks = base[np.argsort(keys, axis=1)]
    return np.asarray(blocks.ravel()[:n], dtype=np.int64)


# -------------------------------------------------------------------------- simulate


@dataclass
class TrialResult:
    """Patient-level simulated trial data plus the known truth."""

    data: pd.DataFrame
    trajectories: F
    spec: TrialSpec
    true_ate: float
    unit: str
    label: str = "simulated"


def simulate_trial(
    spec: TrialSpec, population: pd.DataFrame, model: OutcomeModel | None = None
) -> TrialResult:
    """Simulate one trial on the first ``spec.n`` rows of a (virtual) population.

    ``model`` overrides the spec's built-in outcome model (any :class:`OutcomeModel`).

    Columns of ``data``: arm, dose (weekly exposure, mg/wk), enrol_time (wk), y_control (counterfactual endpoint),
    y (observed endpoint, NaN if dropped out), ite (known individual effect), dropout_time (wk),
    event/time (tte endpoint), plus the population's covariates. For tte, ``y_control`` is
    the counterfactual event time (inf = no event by the last visit) and ``ite`` is finite only
    where both potential event times fall within follow-up.
    """
    if len(population) < spec.n:
        raise ValueError(
            f"population has {len(population)} patients but the spec asks for n = {spec.n}"
        )
    rng = np.random.default_rng(spec.seed)
    X = population.iloc[: spec.n].reset_index(drop=True)
    model = spec.outcome_model() if model is None else model
    if not isinstance(model, OutcomeModel):
        raise TypeError(
            f"model {type(model).__name__} does not implement the OutcomeModel protocol"
        )
    if model.visits.size <= spec.endpoint_visit:
        raise ValueError(
            f"endpoint_visit {spec.endpoint_visit} is beyond the model's {model.visits.size} visits"
        )
    strata = None
    if spec.randomisation == "stratified":
        missing = [c for c in spec.strata if c not in X.columns]
        if missing or not spec.strata:
            raise ValueError(
                f"stratified randomisation: strata columns {missing or '(none given)'} not in population"
            )
        strata = X[spec.strata].astype(str).agg("|".join, axis=1).to_numpy()
    arm = randomise(
        spec.n, [a.weight for a in spec.arms], rng, spec.randomisation, spec.block_size, strata
    )
    doses = np.array([a.exposure for a in spec.arms])[arm]
    enrol = np.cumsum(rng.exponential(1 / spec.enrolment_rate, spec.n))
    noise = model.draw_noise(spec.n, rng)
    traj0 = model.outcome(X, np.zeros(spec.n), noise)
    traj = model.outcome(X, doses, noise)
    if spec.dropout_rate > 0:
        rate = np.full(spec.n, spec.dropout_rate)
        if spec.dropout_covariate is not None:
            if spec.dropout_covariate not in X.columns:
                raise ValueError(
                    f"dropout_covariate {spec.dropout_covariate!r} is not a population column"
                )
            c = X[spec.dropout_covariate].to_numpy(float)
            rate = rate * np.exp(spec.dropout_log_hr * (c - c.mean()) / (c.std() + 1e-12))
        dropout = rng.exponential(1.0, spec.n) / rate
    else:
        dropout = np.full(spec.n, np.inf)
    v = spec.endpoint_visit
    t = model.visits
    observed = t[None, :] <= dropout[:, None]
    if spec.endpoint == "continuous":
        y0, y1 = traj0[:, v] - traj0[:, 0], traj[:, v] - traj[:, 0]
        y = np.where(observed[:, v], y1, np.nan)
        extra: dict[str, Any] = {}
    elif spec.endpoint == "binary":
        thr = spec.binary_threshold
        y0 = (traj0[:, v] >= thr).astype(float)
        y1 = (traj[:, v] >= thr).astype(float)
        y = np.where(observed[:, v], y1, np.nan)
        extra = {}
    else:
        thr = spec.binary_threshold
        hit = (traj >= thr) & observed
        any_hit = hit.any(axis=1)
        first = np.where(any_hit, t[np.argmax(hit, axis=1)], np.minimum(dropout, t[v]))
        hit0 = traj0 >= thr
        y0 = np.where(hit0.any(axis=1), t[np.argmax(hit0, axis=1)], np.inf)
        y1 = np.where((traj >= thr).any(axis=1), t[np.argmax(traj >= thr, axis=1)], np.inf)
        y = first
        extra = {"event": any_hit.astype(int)}
    data = X.copy()
    data["arm"] = np.array([a.name for a in spec.arms])[arm]
    data["treated"] = (doses > 0).astype(int)
    data["dose"] = doses  # weekly exposure, mg/wk
    data["enrol_time"] = enrol
    data["dropout_time"] = dropout
    data["y_control"] = y0
    data["y"] = y
    for k, val in extra.items():
        data[k] = val
    with np.errstate(invalid="ignore"):
        ite = y1 - y0
    data["ite"] = ite
    treated = doses > 0
    finite = np.isfinite(ite)
    true_ate = float(np.mean(ite[treated & finite])) if np.any(treated & finite) else float("nan")
    unit = (
        model.unit
        if spec.endpoint == "continuous"
        else ("1" if spec.endpoint == "binary" else "wk")
    )
    return TrialResult(data, traj, spec, true_ate, unit)


def tte_analysis(
    time: NDArray[Any],
    event: NDArray[Any],
    treat: NDArray[Any],
    covariates: pd.DataFrame | None = None,
) -> dict[str, float]:
    """Cox proportional-hazards analysis of a time-to-event endpoint (lifelines, robust SE).

    ``time`` in "wk", ``event`` 1 = event, 0 = censored. Returns the hazard ratio (unit "1")
    of treatment with its 95% CI, the p-value and the number of events.
    """
    from lifelines import CoxPHFitter

    df = pd.DataFrame(
        {
            "time": np.asarray(time, float),
            "event": np.asarray(event, int),
            "treated": np.asarray(treat, float),
        }
    )
    if covariates is not None:
        df = pd.concat([df, covariates.reset_index(drop=True)], axis=1)
    if not np.all(np.isfinite(df["time"])) or (df["time"] < 0).any():
        raise ValueError("time must be finite and ≥ 0 (wk) for every patient")
    cph = CoxPHFitter().fit(df, "time", "event", robust=True)
    s = cph.summary.loc["treated"]
    return {
        "hazard_ratio": float(s["exp(coef)"]),
        "ci_low": float(s["exp(coef) lower 95%"]),
        "ci_high": float(s["exp(coef) upper 95%"]),
        "p_value": float(s["p"]),
        "events": float(df["event"].sum()),
        "n": float(len(df)),
    }
