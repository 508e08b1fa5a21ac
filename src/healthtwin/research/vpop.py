"""Virtual populations matched to a target cohort (data or published summary statistics).

1. Target: a DataFrame of observables (one row per patient) or :class:`SummaryStats`
   (means, sds, correlation, bounds).
2. Marginals Fₖ: kernel-smoothed empirical CDF (Gaussian kernel, Silverman bandwidth) or
   normal(mean, sd), truncated to physiological bounds [lₖ, uₖ]. Dependence: Gaussian copula
   with correlation Σ of the normal scores zₖ = Φ⁻¹(Fₖ(xₖ)).
3. Plausible patients (Allen et al. 2016): z ~ N(0, s²I) (s = ``spread`` > 1, independent,
   broader than the target), xₖ = Fₖ⁻¹(Φ(zₖ)); all lie inside the bounds by construction.
4. Selection (no weights): keep patient i with probability min(1, β·r(zᵢ)) where
   r(z) = φ_Σ(z)/φ_{s²I}(z) is the target/plausible density ratio (the marginal Jacobians
   cancel); β is chosen to minimise the mean Kolmogorov–Smirnov statistic against the target.
5. Importance weighting: wᵢ ∝ r(zᵢ), effective sample size ESS = (Σw)²/Σw².
Binary observables (e.g. sex) use a threshold on their normal score. Units are given per
observable in :data:`UNITS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
from numpy.typing import NDArray
from scipy import stats

from healthtwin.models.base import check_range

F = NDArray[np.float64]

#: Physiological bounds (plausibility) and UCUM units of the standard observables.
BOUNDS: dict[str, tuple[float, float]] = {
    "age": (18.0, 100.0),
    "bmi": (12.0, 70.0),
    "sbp": (70.0, 250.0),
    "chol": (80.0, 400.0),
    "hba1c": (3.5, 15.0),
    "female": (0.0, 1.0),
}
UNITS: dict[str, str] = {
    "age": "a",
    "bmi": "kg/m2",
    "sbp": "mm[Hg]",
    "chol": "mg/dL",
    "hba1c": "%",
    "female": "1",
}
LOINC = {"39156-5": "bmi", "8480-6": "sbp", "2093-3": "chol", "4548-4": "hba1c"}


@dataclass
class SummaryStats:
    """Published summary statistics: means, sds, correlation (of normal scores), bounds."""

    names: list[str]
    means: list[float]
    sds: list[float]
    corr: list[list[float]] | None = None
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)


class _Marginal:
    """Grid-tabulated CDF on [low, high] with its inverse (vectorised)."""

    def __init__(self, low: float, high: float, cdf_fn: Any, binary: bool = False, p: float = 0.5):
        self.low, self.high, self.binary, self.p = low, high, binary, p
        if not binary:
            self.grid = np.linspace(low, high, 4097)
            c = np.asarray(cdf_fn(self.grid), dtype=float)
            c = (c - c[0]) / (c[-1] - c[0])
            self.cdf_grid = np.maximum.accumulate(c)

    def ppf(self, u: F) -> F:
        if self.binary:
            return (u > 1 - self.p).astype(float)
        return np.asarray(np.interp(u, self.cdf_grid, self.grid), dtype=float)

    def cdf(self, x: F) -> F:
        if self.binary:
            return np.where(x > 0.5, 1 - self.p / 2, (1 - self.p) / 2)
        return np.asarray(np.interp(x, self.grid, self.cdf_grid), dtype=float)


def _nearest_corr(c: F) -> F:
    w, v = np.linalg.eigh((c + c.T) / 2)
    c2 = (v * np.clip(w, 1e-6, None)) @ v.T
    d = np.sqrt(np.diag(c2))
    return np.asarray(c2 / np.outer(d, d), dtype=float)


@dataclass
class FitReport:
    """Goodness of fit of a virtual population against a target (or held-out) cohort."""

    ks: dict[str, float]
    ks_pvalue: dict[str, float]
    mean_virtual: dict[str, float]
    mean_target: dict[str, float]
    corr_max_abs_diff: float
    n_virtual: int
    ess: float | None = None
    units: dict[str, str] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "unit": self.units,
                "mean_target": self.mean_target,
                "mean_virtual": self.mean_virtual,
                "ks": self.ks,
                "ks_pvalue": self.ks_pvalue,
            }
        )


class VirtualPopulation:
    """Gaussian-copula virtual population generator (see module docstring)."""

    def __init__(self, spread: float = 1.6, bounds: dict[str, tuple[float, float]] | None = None):
        self.spread = spread
        self.bounds = bounds

    def fit(self, target: pd.DataFrame | SummaryStats) -> VirtualPopulation:
        """Learn marginals and copula correlation from a cohort DataFrame or summary stats."""
        check_range("spread", self.spread, 1.0, 10.0, "1")
        b = dict(BOUNDS)
        b.update(self.bounds or {})
        self.marginals_: dict[str, _Marginal] = {}
        if isinstance(target, SummaryStats):
            names = list(target.names)
            b.update(target.bounds)
            for nm, mu, sd in zip(names, target.means, target.sds, strict=True):
                lo, hi = self._bounds(b, nm)
                if nm == "female":
                    self.marginals_[nm] = _Marginal(0, 1, None, True, mu)
                else:
                    self.marginals_[nm] = _Marginal(
                        lo, hi, lambda g, m=mu, s=sd: stats.norm.cdf(g, m, s)
                    )
            corr = np.eye(len(names)) if target.corr is None else np.asarray(target.corr, float)
            self.target_: pd.DataFrame | None = None
        else:
            if not isinstance(target, pd.DataFrame) or target.empty:
                raise ValueError(
                    "target must be a non-empty DataFrame of observables or SummaryStats"
                )
            names = list(target.columns)
            for nm in names:
                col = pd.to_numeric(target[nm], errors="coerce").dropna().to_numpy(float)
                if col.size < 5:
                    raise ValueError(f"target column {nm!r} has {col.size} values; need at least 5")
                lo, hi = self._bounds(b, nm)
                check_range(f"target column {nm!r}", col, lo, hi, UNITS.get(nm, "1"))
                if nm == "female":
                    self.marginals_[nm] = _Marginal(0, 1, None, True, float(col.mean()))
                    continue
                h = 1.06 * col.std(ddof=1) * col.size ** (-0.2)
                self.marginals_[nm] = _Marginal(
                    lo,
                    hi,
                    lambda g, c=col, hh=h: stats.norm.cdf((g[:, None] - c[None, :]) / hh).mean(
                        axis=1
                    ),
                )
            z = np.column_stack([self._to_z(nm, target[nm].to_numpy(float)) for nm in names])
            corr = pd.DataFrame(z).corr(min_periods=3).to_numpy()
            corr = np.where(np.isfinite(corr), corr, 0.0)
            self.target_ = target.reset_index(drop=True)
        self.names_ = names
        self.corr_ = _nearest_corr(corr)
        return self

    @staticmethod
    def _bounds(b: dict[str, tuple[float, float]], nm: str) -> tuple[float, float]:
        if nm not in b:
            raise KeyError(
                f"no physiological bounds for observable {nm!r}; pass bounds={{{nm!r}: (low, high)}}"
            )
        return b[nm]

    def _to_z(self, nm: str, x: F) -> F:
        m = self.marginals_[nm]
        u = np.clip(m.cdf(x), 1e-6, 1 - 1e-6)
        return np.asarray(stats.norm.ppf(u), dtype=float)

    def _from_z(self, z: F) -> pd.DataFrame:
        u = stats.norm.cdf(z)
        return pd.DataFrame(
            {nm: self.marginals_[nm].ppf(u[:, k]) for k, nm in enumerate(self.names_)}
        )

    def _ratio(self, z: F) -> F:
        inv = np.linalg.inv(self.corr_)
        _, logdet = np.linalg.slogdet(self.corr_)
        q_t = np.einsum("ni,ij,nj->n", z, inv, z)
        q_p = (z**2).sum(axis=1) / self.spread**2
        logr = -0.5 * (q_t - q_p) - 0.5 * logdet + z.shape[1] * np.log(self.spread)
        return np.asarray(np.exp(logr - logr.max()), dtype=float)

    def sample(self, n: int, rng: np.random.Generator) -> pd.DataFrame:
        """Direct copula sample of n virtual patients (exact target law, no selection)."""
        self._fitted()
        z = rng.multivariate_normal(np.zeros(len(self.names_)), self.corr_, size=n)
        return self._from_z(z)

    def plausible(self, n: int, rng: np.random.Generator) -> tuple[pd.DataFrame, F]:
        """n plausible patients (broad, independent normal scores) and their scores z."""
        self._fitted()
        z = rng.standard_normal((n, len(self.names_))) * self.spread
        return self._from_z(z), z

    def select(self, n_plausible: int, rng: np.random.Generator, betas: int = 12) -> pd.DataFrame:
        """Allen et al. (2016) selection: unweighted virtual population matching the target."""
        pp, z = self.plausible(n_plausible, rng)
        r = self._ratio(z)
        u = rng.random(n_plausible)
        ref = self._reference(rng)
        best: tuple[float, pd.DataFrame] | None = None
        for beta in np.geomspace(1.0, 1.0 / max(np.quantile(r, 0.5), 1e-12), betas):
            keep = u < np.minimum(1.0, beta * r)
            if keep.sum() < 20:
                continue
            vp = pp.loc[keep].reset_index(drop=True)
            ks = np.mean(
                [stats.ks_2samp(vp[c], ref[c]).statistic for c in self.names_ if c != "female"]
            )
            if best is None or ks < best[0]:
                best = (float(ks), vp)
        if best is None:
            raise RuntimeError(
                f"selection kept fewer than 20 of {n_plausible} plausible patients; raise n_plausible"
            )
        return best[1]

    def weights(self, n_plausible: int, rng: np.random.Generator) -> tuple[pd.DataFrame, F, float]:
        """Importance-weighted plausible population: (patients, normalised weights, ESS)."""
        pp, z = self.plausible(n_plausible, rng)
        w = self._ratio(z)
        w = w / w.sum()
        return pp, w, float(1.0 / np.sum(w**2))

    def _reference(self, rng: np.random.Generator) -> pd.DataFrame:
        if self.target_ is not None:
            return self.target_
        return self.sample(5000, rng)

    def _fitted(self) -> None:
        if not hasattr(self, "corr_"):
            raise RuntimeError("VirtualPopulation is not fitted; call fit(target) first")


def fit_report(virtual: pd.DataFrame, target: pd.DataFrame, weights: F | None = None) -> FitReport:
    """KS statistic and p-value per observable, means and correlation difference.

    With ``weights`` the weighted ECDF is used for the KS distance (p-value from ESS).
    """
    names = [c for c in target.columns if c in virtual.columns]
    ks, pv, mv, mt = {}, {}, {}, {}
    ess = None
    w = None if weights is None else np.asarray(weights, float) / np.sum(weights)
    if w is not None:
        ess = float(1 / np.sum(w**2))
    for c in names:
        t = target[c].dropna().to_numpy(float)
        v = virtual[c].to_numpy(float)
        mt[c] = float(t.mean())
        if w is None:
            res = stats.ks_2samp(v, t)
            ks[c], pv[c] = float(res.statistic), float(res.pvalue)
            mv[c] = float(v.mean())
        else:
            grid = np.union1d(v, t)
            order = np.argsort(v)
            cw = np.concatenate([[0.0], np.cumsum(w[order])])
            fv = cw[np.searchsorted(v[order], grid, side="right")]
            ft = np.searchsorted(np.sort(t), grid, side="right") / t.size
            d = float(np.max(np.abs(fv - ft)))
            assert ess is not None
            ne = ess * t.size / (ess + t.size)
            ks[c], pv[c] = d, float(stats.kstwo.sf(d, max(int(round(ne)), 1)))
            mv[c] = float(np.sum(w * v))
    tc = target[names].corr().to_numpy()
    if w is None:
        vc = virtual[names].corr().to_numpy()
    else:
        vc = np.cov(virtual[names].to_numpy(float).T, aweights=w)
        d = np.sqrt(np.diag(vc))
        vc = vc / np.outer(d, d)
    diff = np.abs(np.nan_to_num(tc - vc))
    return FitReport(
        ks, pv, mv, mt, float(diff.max()), len(virtual), ess, {c: UNITS.get(c, "1") for c in names}
    )


def load_synthea_cohort(bundle_dir: str | Path, adults_only: bool = True) -> pd.DataFrame:
    """One row per patient from Synthea FHIR bundles: latest BMI, SBP, cholesterol, HbA1c.

    Columns: age (a, at the latest observation), female (1), bmi (kg/m2), sbp (mm[Hg]),
    chol (mg/dL), hba1c (%). Missing observations are NaN.
    """
    rows = []
    files = sorted(Path(bundle_dir).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no *.json FHIR bundles in {bundle_dir}")
    for f in files:
        bundle = orjson.loads(f.read_bytes())
        row: dict[str, Any] = {}
        latest: dict[str, tuple[str, float]] = {}
        birth = None
        for e in bundle.get("entry", []):
            r = e.get("resource", {})
            rt = r.get("resourceType")
            if rt == "Patient":
                birth = r.get("birthDate")
                row["female"] = 1.0 if r.get("gender") == "female" else 0.0
            elif rt == "Observation":
                when = r.get("effectiveDateTime", "")
                comps = [r] + list(r.get("component", []))
                for c in comps:
                    for coding in c.get("code", {}).get("coding", []):
                        name = LOINC.get(coding.get("code", ""))
                        vq = c.get("valueQuantity")
                        if name and vq and "value" in vq and when >= latest.get(name, ("", 0.0))[0]:
                            latest[name] = (when, float(vq["value"]))
        if birth is None:
            continue
        last = max((v[0] for v in latest.values()), default="")
        if not last:
            continue
        age = (pd.Timestamp(last[:10]) - pd.Timestamp(birth)).days / 365.25
        row["age"] = age
        for nm in LOINC.values():
            row[nm] = latest[nm][1] if nm in latest else np.nan
        rows.append(row)
    df = pd.DataFrame(rows, columns=["age", "female", "bmi", "sbp", "chol", "hba1c"])
    if adults_only:
        df = df[df["age"] >= 18].reset_index(drop=True)
    return df
