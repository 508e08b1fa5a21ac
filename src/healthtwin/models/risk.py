"""Risk models: learned logistic risk P(y=1|X) and published 10-year cardiovascular equations.

* :class:`LogisticRiskModel` fits P(y=1|X) = 1 / (1 + exp(-(b0 + X b))) by maximum likelihood
  (Newton-Raphson / IRLS) and reports coefficient standard errors, Wald confidence intervals
  and delta-method intervals for predicted probabilities. Results equal statsmodels ``Logit``;
  we keep our own solver (about 30 lines of NumPy) because the product needs the training
  range guard, vectorised prediction intervals and no pandas/summary overhead on the hot path.
* :func:`pooled_cohort_risk` - ACC/AHA Pooled Cohort Equations (Goff 2013), four sex/race groups.
* :func:`framingham_cvd_risk` - Framingham general CVD risk (D'Agostino 2008), sex-specific.

Both published equations are Cox models evaluated at 10 a:
``risk = 1 - S0(10) ** exp(sum(beta * x) - mean(sum(beta * x)))``. Their coefficients ship as
package data (``models/data/risk_equations.json``) with their source citations. Risks are
fractions (UCUM unit ``1``); multiply by 100 for percent (``%``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats

from healthtwin.models.base import OutOfRangeError, TwinModel, check_range

__all__ = [
    "CHOLESTEROL_MOLAR_MASS_G_PER_MOL",
    "EquationInfo",
    "FraminghamCVDRisk",
    "LogisticRiskModel",
    "PooledCohortRisk",
    "cholesterol_to_mg_dl",
    "equation_info",
    "framingham_cvd_risk",
    "pooled_cohort_linear_predictor",
    "pooled_cohort_risk",
    "risk_input_uncertainty",
]

FloatArray = NDArray[np.float64]

#: Molar mass of cholesterol C27H46O, g/mol, used for mmol/L <-> mg/dL conversion.
CHOLESTEROL_MOLAR_MASS_G_PER_MOL = 386.65

# mg/dL per unit of each accepted UCUM cholesterol unit.
_CHOL_UNITS_TO_MG_DL: dict[str, float] = {
    "mg/dL": 1.0,
    "mg/dl": 1.0,
    "mg/L": 0.1,
    "g/L": 100.0,
    "g/dL": 1000.0,
    # 1 mmol/L = 386.65 mg/L = 38.665 mg/dL
    "mmol/L": CHOLESTEROL_MOLAR_MASS_G_PER_MOL / 10.0,
    "mmol/l": CHOLESTEROL_MOLAR_MASS_G_PER_MOL / 10.0,
    "umol/L": CHOLESTEROL_MOLAR_MASS_G_PER_MOL / 10000.0,
}


def cholesterol_to_mg_dl(value: ArrayLike, unit: str = "mg/dL") -> FloatArray:
    """Convert a cholesterol concentration from a UCUM ``unit`` to mg/dL.

    Mass units scale directly; molar units use the molar mass of cholesterol,
    386.65 g/mol (:data:`CHOLESTEROL_MOLAR_MASS_G_PER_MOL`).
    """
    factor = _CHOL_UNITS_TO_MG_DL.get(unit.strip())
    if factor is None:
        raise ValueError(
            f"cholesterol unit {unit!r} is not supported; use one of "
            f"{', '.join(sorted(set(_CHOL_UNITS_TO_MG_DL) - {'mg/dl', 'mmol/l'}))}"
        )
    return np.asarray(value, dtype=float) * factor


# --------------------------------------------------------------------------------------------
# Learned logistic risk model
# --------------------------------------------------------------------------------------------


def _as_2d(X: ArrayLike, name: str = "X") -> FloatArray:
    arr = np.asarray(X, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (patients x features), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name} has a non-finite value at row {bad[0]}, column {bad[1]}")
    return arr


def _expit(z: FloatArray) -> FloatArray:
    out: FloatArray = special.expit(z)
    return out


class LogisticRiskModel(TwinModel):
    """Logistic regression risk model with standard errors and interval predictions.

    Parameters
    ----------
    fit_intercept:
        Add an intercept column (reported first in ``params_``).
    alpha:
        1 - confidence level for coefficient and prediction intervals (0.05 -> 95 %).
    max_iter, tol:
        Newton-Raphson limits; convergence when the largest parameter step is below ``tol``.
    allow_extrapolation:
        If False (default), predicting for a feature value outside the training range
        ``feature_range_`` raises :class:`OutOfRangeError`.
    feature_names:
        Optional names used in error messages and summaries.

    Learned attributes: ``params_`` (intercept first), ``intercept_``, ``coef_``, ``cov_params_``,
    ``bse_`` (standard errors), ``conf_int_`` (k x 2 Wald intervals), ``zvalues_``,
    ``pvalues_``, ``loglik_``, ``n_iter_``, ``feature_range_`` (features x 2), ``classes_``.
    Coefficients are log odds ratios per unit of each feature (unit ``1`` per feature unit).
    """

    def __init__(
        self,
        fit_intercept: bool = True,
        alpha: float = 0.05,
        max_iter: int = 100,
        tol: float = 1e-10,
        allow_extrapolation: bool = False,
        feature_names: list[str] | None = None,
    ) -> None:
        self.fit_intercept = fit_intercept
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.allow_extrapolation = allow_extrapolation
        self.feature_names = feature_names

    def _names(self, k: int) -> list[str]:
        if self.feature_names is not None:
            return list(self.feature_names)
        return [f"x{j}" for j in range(k)]

    def _design(self, X: FloatArray) -> FloatArray:
        if self.fit_intercept:
            return np.column_stack([np.ones(X.shape[0]), X])
        return X

    def fit(self, X: ArrayLike, y: ArrayLike) -> LogisticRiskModel:
        """Fit by maximum likelihood. ``y`` holds 0/1 outcomes (first axis = patients)."""
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")
        Xa = _as_2d(X)
        ya = np.asarray(y, dtype=float).ravel()
        if ya.shape[0] != Xa.shape[0]:
            raise ValueError(f"X has {Xa.shape[0]} rows but y has {ya.shape[0]} values")
        if not np.all((ya == 0.0) | (ya == 1.0)):
            raise ValueError("y must contain only 0 and 1")
        if ya.min() == ya.max():
            raise ValueError("y has a single class; a logistic model needs both 0 and 1")
        if self.feature_names is not None and len(self.feature_names) != Xa.shape[1]:
            raise ValueError(
                f"feature_names has {len(self.feature_names)} names but X has {Xa.shape[1]} columns"
            )
        D = self._design(Xa)
        n, k = D.shape
        if n <= k:
            raise ValueError(f"need more patients ({n}) than parameters ({k})")
        if np.linalg.matrix_rank(D) < k:
            raise ValueError("X is rank deficient (collinear or constant features)")
        beta = np.zeros(k)
        converged = False
        it = 0
        for it in range(1, self.max_iter + 1):  # noqa: B007 - iteration count is reported
            p = _expit(D @ beta)
            w = p * (1.0 - p)
            grad = D.T @ (ya - p)
            hess = (D * w[:, None]).T @ D
            try:
                step = np.linalg.solve(hess, grad)
            except np.linalg.LinAlgError as exc:
                raise ValueError(
                    "information matrix became singular: maximum likelihood does not exist "
                    "(possible perfect separation of y by X)"
                ) from exc
            beta = beta + step
            if np.max(np.abs(step)) < self.tol:
                converged = True
                break
        p = _expit(D @ beta)
        if not converged or np.any(np.abs(beta) > 1e3) or np.min(np.minimum(p, 1 - p)) < 1e-12:
            raise ValueError(
                f"maximum likelihood did not converge in {self.max_iter} iterations "
                "(possible perfect separation of y by X)"
            )
        w = p * (1.0 - p)
        cov = np.linalg.inv((D * w[:, None]).T @ D)
        bse = np.sqrt(np.diag(cov))
        z = stats.norm.ppf(1.0 - self.alpha / 2.0)
        self.params_ = beta
        self.intercept_ = float(beta[0]) if self.fit_intercept else 0.0
        self.coef_ = beta[1:] if self.fit_intercept else beta.copy()
        self.cov_params_ = cov
        self.bse_ = bse
        self.conf_int_ = np.column_stack([beta - z * bse, beta + z * bse])
        self.zvalues_ = beta / bse
        self.pvalues_ = 2.0 * stats.norm.sf(np.abs(self.zvalues_))
        eps = 1e-300
        self.loglik_ = float(np.sum(ya * np.log(p + eps) + (1 - ya) * np.log(1 - p + eps)))
        self.n_iter_ = it
        self.n_features_in_ = Xa.shape[1]
        self.feature_range_ = np.column_stack([Xa.min(axis=0), Xa.max(axis=0)])
        self.classes_ = np.array([0, 1])
        return self

    def _check_X(self, X: ArrayLike) -> FloatArray:
        self._require_fitted("params_")
        Xa = _as_2d(X)
        if Xa.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {Xa.shape[1]} features, model was fitted with {self.n_features_in_}"
            )
        if not self.allow_extrapolation:
            names = self._names(Xa.shape[1])
            lo, hi = self.feature_range_[:, 0], self.feature_range_[:, 1]
            outside = (Xa < lo) | (Xa > hi)
            if np.any(outside):
                j = int(np.flatnonzero(outside.any(axis=0))[0])
                check_range(f"feature {names[j]!r} (training range)", Xa[:, j], lo[j], hi[j], "1")
        return Xa

    def decision_function(self, X: ArrayLike) -> FloatArray:
        """Linear predictor (log odds, unit ``1``) per patient."""
        out: FloatArray = self._design(self._check_X(X)) @ self.params_
        return out

    def predict_proba(self, X: ArrayLike) -> FloatArray:
        """Array (patients x 2) of P(y=0|X), P(y=1|X) (unit ``1``)."""
        p1 = _expit(self.decision_function(X))
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X: ArrayLike, threshold: float = 0.5) -> NDArray[np.int64]:
        """0/1 class per patient: 1 where P(y=1|X) >= ``threshold``."""
        return (self.predict_proba(X)[:, 1] >= threshold).astype(np.int64)

    def predict_interval(self, X: ArrayLike, alpha: float | None = None) -> FloatArray:
        """P(y=1|X) with a delta-method confidence interval, array (patients x 3).

        Columns: estimate, lower, upper (unit ``1``). The interval is
        ``expit(eta +/- z * se(eta))`` with ``se(eta)^2 = x' Cov(beta) x``, computed on the logit
        scale so it stays inside (0, 1).
        """
        a = self.alpha if alpha is None else alpha
        D = self._design(self._check_X(X))
        eta = D @ self.params_
        se = np.sqrt(np.einsum("ij,jk,ik->i", D, self.cov_params_, D))
        z = stats.norm.ppf(1.0 - a / 2.0)
        return np.column_stack([_expit(eta), _expit(eta - z * se), _expit(eta + z * se)])

    def summary(self) -> list[dict[str, float | str]]:
        """One row per parameter: name, estimate, std_err, z, p, lower, upper (log odds)."""
        self._require_fitted("params_")
        names = (["intercept"] if self.fit_intercept else []) + self._names(self.n_features_in_)
        return [
            {
                "name": nm,
                "estimate": float(self.params_[j]),
                "std_err": float(self.bse_[j]),
                "z": float(self.zvalues_[j]),
                "p": float(self.pvalues_[j]),
                "lower": float(self.conf_int_[j, 0]),
                "upper": float(self.conf_int_[j, 1]),
            }
            for j, nm in enumerate(names)
        ]


# --------------------------------------------------------------------------------------------
# Published equations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EquationInfo:
    """A published Cox-model risk equation evaluated at its horizon.

    ``coef`` is (groups x terms); ``baseline_survival`` S0 at the horizon and
    ``mean_linear_predictor`` per group; ``valid_range`` maps input -> (low, high, UCUM unit).
    """

    name: str
    source: str
    outcome: str
    horizon: str
    groups: tuple[str, ...]
    terms: tuple[str, ...]
    coef: FloatArray
    baseline_survival: FloatArray
    mean_linear_predictor: FloatArray
    valid_range: dict[str, tuple[float, float, str]]


@cache
def _load_equations() -> dict[str, Any]:
    text = resources.files("healthtwin.models").joinpath("data/risk_equations.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


@cache
def equation_info(name: str) -> EquationInfo:
    """Coefficients of ``"pooled_cohort_equations"`` or ``"framingham_general_cvd_2008"``."""
    data = _load_equations()
    if name not in data:
        raise KeyError(f"unknown risk equation {name!r}; known: {', '.join(sorted(data))}")
    d = data[name]
    groups = tuple(d["groups"])
    terms = tuple(d["terms"])
    coef = np.array([[d["groups"][g]["coef"][t] for t in terms] for g in groups], dtype=float)
    coef.setflags(write=False)
    return EquationInfo(
        name=name,
        source=d["source"],
        outcome=d["outcome"],
        horizon=d["horizon"],
        groups=groups,
        terms=terms,
        coef=coef,
        baseline_survival=np.array([d["groups"][g]["baseline_survival"] for g in groups]),
        mean_linear_predictor=np.array([d["groups"][g]["mean_linear_predictor"] for g in groups]),
        valid_range={k: (float(v[0]), float(v[1]), str(v[2])) for k, v in d["valid_range"].items()},
    )


def _classify(
    values: ArrayLike, name: str, yes: list[str], no: list[str], expected: str
) -> NDArray[np.bool_]:
    """Case-insensitive string codes -> bool (True for ``yes`` tokens), vectorised.

    Exact comparisons with the canonical (first-listed) spellings cover the usual case in a
    few O(n) passes; only unmatched patients are checked against all spellings and cases.
    """
    arr = np.atleast_1d(np.asarray(values))
    if arr.dtype.kind != "U":
        arr = arr.astype(str)
    is_yes = arr == yes[0]
    known = is_yes | (arr == no[0])
    if not np.all(known):
        rest = arr[~known]

        def variants(tokens: list[str]) -> list[str]:
            return sorted({v for t in tokens for v in (t, t.upper(), t.title(), t.capitalize())})

        rest_yes = np.isin(rest, variants(yes))
        rest_ok = rest_yes | np.isin(rest, variants(no))
        if not np.all(rest_ok):
            bad = np.ravel(rest)[np.flatnonzero(~np.ravel(rest_ok))[0]]
            raise ValueError(f"{name} must be {expected}, got {bad!r}")
        is_yes[~known] = rest_yes
    return is_yes


def _flag(values: ArrayLike, name: str, n: int) -> NDArray[np.bool_]:
    """0/1, bool or yes/no strings -> bool array broadcast to n patients."""
    arr = np.asarray(values)
    if arr.dtype.kind in "US":
        out = _classify(
            arr, name, ["yes", "y", "true", "1"], ["no", "n", "false", "0"], "yes/no (or 0/1)"
        )
    else:
        f = arr.astype(float)
        if not np.all((f == 0) | (f == 1)):
            raise ValueError(f"{name} must be 0/1 (or a boolean), got a value other than 0 and 1")
        out = f == 1
    return np.broadcast_to(out, (n,))


def _sex_female(sex: ArrayLike, n: int) -> NDArray[np.bool_]:
    arr = np.asarray(sex)
    if arr.dtype == bool:
        raise ValueError("sex must be 'female'/'male' (or 'F'/'M'), not a boolean")
    female = _classify(
        arr, "sex", ["female", "f", "woman"], ["male", "m", "man"], "'female' or 'male'"
    )
    return np.broadcast_to(female, (n,))


_AFRICAN_AMERICAN = ["african_american", "african-american", "african american", "black", "aa"]
_WHITE_OR_OTHER = ["white", "other"]


def _race_aa(race: ArrayLike, n: int) -> NDArray[np.bool_]:
    aa = _classify(
        race,
        "race",
        _AFRICAN_AMERICAN,
        _WHITE_OR_OTHER,
        "'white', 'african_american' or 'other' (other uses the white equations, as the 2013 "
        "guideline advises)",
    )
    return np.broadcast_to(aa, (n,))


def _n_patients(*arrays: ArrayLike) -> int:
    sizes = {np.size(a) for a in arrays if np.ndim(a) > 0}
    if len(sizes) > 1:
        raise ValueError(f"inputs have different numbers of patients: {sorted(sizes)}")
    return sizes.pop() if sizes else 1


def _check_inputs(
    info: EquationInfo, values: dict[str, FloatArray], allow_extrapolation: bool
) -> None:
    label = {
        "pooled_cohort_equations": "Pooled Cohort Equations",
        "framingham_general_cvd_2008": "Framingham general CVD (2008)",
    }[info.name]
    for key, arr in values.items():
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{key} has a missing or non-finite value ({label})")
        low, high, unit = info.valid_range[key]
        try:
            check_range(key, arr, low, high, unit, allow_extrapolation=allow_extrapolation)
        except OutOfRangeError as exc:
            raise OutOfRangeError(f"{label}: {exc}") from None


def pooled_cohort_linear_predictor(
    age: ArrayLike,
    sex: ArrayLike,
    race: ArrayLike,
    total_chol: ArrayLike,
    hdl: ArrayLike,
    sbp: ArrayLike,
    bp_treated: ArrayLike,
    smoker: ArrayLike,
    diabetes: ArrayLike,
    *,
    allow_extrapolation: bool = False,
) -> tuple[FloatArray, NDArray[np.intp]]:
    """Individual sum sum(beta * x) of the PCE and the group index per patient.

    Groups are indexed as in :func:`equation_info` (``white_female``,
    ``african_american_female``, ``white_male``, ``african_american_male``).
    Inputs as in :func:`pooled_cohort_risk`.
    """
    info = equation_info("pooled_cohort_equations")
    n = _n_patients(age, sex, race, total_chol, hdl, sbp, bp_treated, smoker, diabetes)
    vals = {
        "age": np.broadcast_to(np.asarray(age, dtype=float), (n,)),
        "total_chol": np.broadcast_to(np.asarray(total_chol, dtype=float), (n,)),
        "hdl": np.broadcast_to(np.asarray(hdl, dtype=float), (n,)),
        "sbp": np.broadcast_to(np.asarray(sbp, dtype=float), (n,)),
    }
    _check_inputs(info, vals, allow_extrapolation)
    female = _sex_female(sex, n)
    aa = _race_aa(race, n)
    treated = _flag(bp_treated, "bp_treated", n)
    smk = _flag(smoker, "smoker", n).astype(float)
    dm = _flag(diabetes, "diabetes", n).astype(float)
    # group index: 0 white female, 1 AA female, 2 white male, 3 AA male
    g = np.where(female, 0, 2) + aa.astype(np.intp)
    la = np.log(vals["age"])
    ltc = np.log(vals["total_chol"])
    lhdl = np.log(vals["hdl"])
    lsbp = np.log(vals["sbp"])
    lsbp_t = np.where(treated, lsbp, 0.0)
    lsbp_u = lsbp - lsbp_t
    features = (
        la,
        la * la,
        ltc,
        la * ltc,
        lhdl,
        la * lhdl,
        lsbp_t,
        la * lsbp_t,
        lsbp_u,
        la * lsbp_u,
        smk,
        la * smk,
        dm,
    )
    C = info.coef
    lp = np.zeros(n)
    for j, feat in enumerate(features):  # 13 terms, each vectorised over patients
        lp += np.take(C[:, j], g) * feat
    return lp, g


def pooled_cohort_risk(
    age: ArrayLike,
    sex: ArrayLike,
    race: ArrayLike,
    total_chol: ArrayLike,
    hdl: ArrayLike,
    sbp: ArrayLike,
    bp_treated: ArrayLike,
    smoker: ArrayLike,
    diabetes: ArrayLike,
    *,
    allow_extrapolation: bool = False,
) -> FloatArray:
    """10-year risk of a first hard ASCVD event, ACC/AHA Pooled Cohort Equations (Goff 2013).

    Inputs are scalars or arrays over patients (first axis): ``age`` in a (40-79), ``sex``
    'female'/'male', ``race`` 'white'/'african_american'/'other' (other -> white equations),
    ``total_chol`` and ``hdl`` in mg/dL (130-320, 20-100; see :func:`cholesterol_to_mg_dl`),
    ``sbp`` systolic blood pressure in mm[Hg] (90-200), and yes/no (bool or 0/1) flags
    ``bp_treated``, ``smoker``, ``diabetes``. Returns the risk as a fraction (unit ``1``).

    ``risk = 1 - S0 ** exp(sum(beta x) - mean)``. Out-of-range inputs raise
    :class:`OutOfRangeError` naming the range; ``allow_extrapolation=True`` computes anyway
    (outside the derivation cohort; the number is then an extrapolation, not a validated risk).
    The published equations come without a covariance matrix, so no parameter interval exists.
    """
    info = equation_info("pooled_cohort_equations")
    lp, g = pooled_cohort_linear_predictor(
        age,
        sex,
        race,
        total_chol,
        hdl,
        sbp,
        bp_treated,
        smoker,
        diabetes,
        allow_extrapolation=allow_extrapolation,
    )
    return _cox_risk(lp, info.baseline_survival[g], info.mean_linear_predictor[g])


def _cox_risk(lp: FloatArray, s0: FloatArray, mean: FloatArray) -> FloatArray:
    # 1 - s0**exp(lp - mean) computed as -expm1(exp(lp - mean) * log(s0)) for accuracy.
    out: FloatArray = -np.expm1(np.exp(lp - mean) * np.log(s0))
    return out


def framingham_cvd_risk(
    age: ArrayLike,
    sex: ArrayLike,
    total_chol: ArrayLike,
    hdl: ArrayLike,
    sbp: ArrayLike,
    bp_treated: ArrayLike,
    smoker: ArrayLike,
    diabetes: ArrayLike,
    *,
    allow_extrapolation: bool = False,
) -> FloatArray:
    """10-year general CVD risk, Framingham (D'Agostino 2008), as a fraction (unit ``1``).

    ``age`` in a (30-74), ``sex`` 'female'/'male', ``total_chol`` and ``hdl`` in mg/dL
    (130-320, 20-100), ``sbp`` in mm[Hg] (90-200); yes/no flags ``bp_treated``, ``smoker``,
    ``diabetes``. Treated and untreated SBP have separate coefficients. Out-of-range inputs
    raise :class:`OutOfRangeError` unless ``allow_extrapolation=True``.
    """
    info = equation_info("framingham_general_cvd_2008")
    n = _n_patients(age, sex, total_chol, hdl, sbp, bp_treated, smoker, diabetes)
    vals = {
        "age": np.broadcast_to(np.asarray(age, dtype=float), (n,)),
        "total_chol": np.broadcast_to(np.asarray(total_chol, dtype=float), (n,)),
        "hdl": np.broadcast_to(np.asarray(hdl, dtype=float), (n,)),
        "sbp": np.broadcast_to(np.asarray(sbp, dtype=float), (n,)),
    }
    _check_inputs(info, vals, allow_extrapolation)
    g = np.where(_sex_female(sex, n), 0, 1)  # groups: female, male
    treated = _flag(bp_treated, "bp_treated", n)
    lsbp = np.log(vals["sbp"])
    lsbp_t = np.where(treated, lsbp, 0.0)
    features = (
        np.log(vals["age"]),
        np.log(vals["total_chol"]),
        np.log(vals["hdl"]),
        lsbp - lsbp_t,
        lsbp_t,
        _flag(smoker, "smoker", n).astype(float),
        _flag(diabetes, "diabetes", n).astype(float),
    )
    lp = np.zeros(n)
    for j, feat in enumerate(features):
        lp += info.coef[g, j] * feat
    return _cox_risk(lp, info.baseline_survival[g], info.mean_linear_predictor[g])


_PCE_COLUMNS = (
    "age",
    "sex",
    "race",
    "total_chol",
    "hdl",
    "sbp",
    "bp_treated",
    "smoker",
    "diabetes",
)
_FRS_COLUMNS = ("age", "sex", "total_chol", "hdl", "sbp", "bp_treated", "smoker", "diabetes")


class _PublishedEquation(TwinModel):
    """TwinModel wrapper for a published equation: ``fit`` learns nothing and returns self.

    Subclasses name the equation (``_equation``) and its input columns (``_columns``).
    """

    _columns: tuple[str, ...] = ()
    _equation: str = ""

    def __init__(self, allow_extrapolation: bool = False) -> None:
        self.allow_extrapolation = allow_extrapolation

    def fit(self, X: Any = None, y: Any = None) -> _PublishedEquation:
        """No-op (coefficients are published); returns ``self``."""
        self.columns_ = self._columns
        self.equation_ = equation_info(self._equation)
        return self

    def predict_proba(self, X: Any) -> FloatArray:
        """(patients x 2) array of 1 - risk, 10-year risk (unit ``1``).

        ``X`` is a mapping or DataFrame with the columns of ``columns_``.
        """
        missing = [c for c in self._columns if c not in X]
        if missing:
            raise ValueError(f"X lacks column(s) {', '.join(missing)} for {type(self).__name__}")
        r = _EQUATIONS[self._equation](
            *(np.asarray(X[c]) for c in self._columns),
            allow_extrapolation=self.allow_extrapolation,
        )
        return np.column_stack([1.0 - r, r])


class PooledCohortRisk(_PublishedEquation):
    """Pooled Cohort Equations as a :class:`TwinModel` (see :func:`pooled_cohort_risk`)."""

    _columns = _PCE_COLUMNS
    _equation = "pooled_cohort_equations"


class FraminghamCVDRisk(_PublishedEquation):
    """Framingham general CVD 2008 as a :class:`TwinModel` (see :func:`framingham_cvd_risk`)."""

    _columns = _FRS_COLUMNS
    _equation = "framingham_general_cvd_2008"


_EQUATIONS: dict[str, Callable[..., FloatArray]] = {
    "pooled_cohort_equations": pooled_cohort_risk,
    "framingham_general_cvd_2008": framingham_cvd_risk,
}


def risk_input_uncertainty(
    equation: str,
    *,
    sd_sbp: float,
    cv_total_chol: float,
    cv_hdl: float,
    n_draws: int = 2000,
    alpha: float = 0.05,
    seed: int | np.random.Generator | None = 0,
    allow_extrapolation: bool = False,
    **inputs: ArrayLike,
) -> FloatArray:
    """10-year risk with a Monte Carlo interval from measurement error of the inputs.

    The published equations carry no coefficient covariance, so the uncertainty we can state is
    that of the measured inputs: SBP ~ Normal(measured, ``sd_sbp`` mm[Hg]); total and HDL
    cholesterol ~ lognormal with median the measured value and coefficient of variation
    ``cv_total_chol`` / ``cv_hdl`` (unit ``1``). The user chooses these (e.g. from the lab's
    analytical + biological variation); zero gives a degenerate interval. ``inputs`` are those of
    :func:`pooled_cohort_risk` or :func:`framingham_cvd_risk` (``equation`` names which).

    The measured inputs must lie in the valid range (else :class:`OutOfRangeError`); draws may
    stray outside it and are evaluated there (a draw, not a reported input). Returns
    (patients x 3): point risk, lower, upper quantile (unit ``1``); memory is n_draws x patients.
    """
    if equation not in _EQUATIONS:
        raise KeyError(f"unknown risk equation {equation!r}; known: {', '.join(_EQUATIONS)}")
    for name, v in (("sd_sbp", sd_sbp), ("cv_total_chol", cv_total_chol), ("cv_hdl", cv_hdl)):
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite value >= 0, got {v}")
    fn = _EQUATIONS[equation]
    point = fn(**inputs, allow_extrapolation=allow_extrapolation)
    n = point.shape[0]
    if n_draws * n > 50_000_000:
        raise ValueError(
            f"n_draws x patients = {n_draws * n:,} exceeds 5e7; evaluate in chunks of patients"
        )
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    shape = (n_draws, n)

    def _tile(key: str) -> NDArray[Any]:
        return (
            np.broadcast_to(np.asarray(inputs[key]), (n,))[None, :].repeat(n_draws, axis=0).ravel()
        )

    def _lognormal(key: str, cv: float) -> FloatArray:
        s = np.sqrt(np.log1p(cv * cv))
        out: FloatArray = _tile(key).astype(float) * np.exp(s * rng.standard_normal(shape).ravel())
        return out

    drawn: dict[str, Any] = {k: _tile(k) for k in inputs}
    drawn["sbp"] = _tile("sbp").astype(float) + sd_sbp * rng.standard_normal(shape).ravel()
    drawn["total_chol"] = _lognormal("total_chol", cv_total_chol)
    drawn["hdl"] = _lognormal("hdl", cv_hdl)
    # keep draws physiological (positive); range checks were applied to the measured inputs
    for k in ("sbp", "total_chol", "hdl"):
        drawn[k] = np.maximum(drawn[k], 1.0)
    sims = fn(**drawn, allow_extrapolation=True).reshape(shape)
    lo, hi = np.quantile(sims, [alpha / 2, 1 - alpha / 2], axis=0)
    return np.column_stack([point, lo, hi])
