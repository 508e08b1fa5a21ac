"""Trial outcomes from the glucose physiology: UVA/Padova virtual patients as trial subjects.

An :class:`~healthtwin.research.trial.OutcomeModel` whose endpoint is each visit's simulated
24-hour mean plasma glucose (mg/dL) of a UVA/Padova S2008 virtual patient on its usual
basal-bolus therapy (basal u2ss·BW/6000 U/min, meal bolus = carbohydrate / CR U), eating a
three-meal day whose sizes vary by visit.

The investigational drug is modelled as an alpha-glucosidase inhibitor (acarbose-like): it
lowers the fraction ``f`` of intestinal absorption that appears in plasma by ``Emax(dose)``
(Emax model, ``e_max`` < 1; dose = weekly exposure in mg/wk as in the trial spec), so less
meal glucose reaches the circulation while the patient keeps the same insulin. With no meals
the drug has nothing to act on and every arm sits at the analytic basal steady state, which the
tests use as an oracle. The mapping of drug to parameters is an assumption of this example
model, stated here and in the docs, not a pharmacological claim.

Every (patient, visit) pair is simulated in one vectorised run (the population axis carries
patients × visits), so a trial arm costs one 1,440-step RK4 solve.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from healthtwin.models.physiology.uva_padova import UVAPadovaParams, simulate_uva_padova
from healthtwin.research.trial import emax

F = NDArray[np.float64]
MEAL_MINUTES = (7 * 60, 12 * 60, 18 * 60)


@dataclass
class GlucoseOutcome:
    """Mean daily plasma glucose (mg/dL) per visit of UVA/Padova virtual patients.

    ``patients``: virtual-patient names the trial subjects are drawn from (uniformly, with
    replacement); ``meal_g``: mean carbohydrate of breakfast, lunch, dinner (g), each varying
    by ``meal_cv`` (coefficient of variation) per visit; ``e_max`` and ``ed50`` (mg/wk): the
    sensitiser's Emax dose–response on Vmx and kp3.
    """

    n_visits: int = 5
    patients: tuple[str, ...] = tuple(f"adult#{i:03d}" for i in range(1, 11))
    meal_g: tuple[float, float, float] = (45.0, 70.0, 80.0)
    meal_cv: float = 0.2
    e_max: float = 0.3
    ed50: float = 50.0
    unit: str = "mg/dL"
    visits: F = field(init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.e_max < 1.0:
            raise ValueError(f"e_max is a fraction of absorption in [0, 1), got {self.e_max}")
        if self.n_visits < 1:
            raise ValueError(f"n_visits must be >= 1, got {self.n_visits}")
        self.visits = np.arange(self.n_visits, dtype=float)
        self._params = UVAPadovaParams.from_names(list(self.patients))

    def draw_noise(self, n: int, rng: np.random.Generator) -> dict[str, F]:
        v = self.n_visits
        meals = np.array(self.meal_g)[None, None, :] * np.exp(
            self.meal_cv * rng.standard_normal((n, v, 3)) - 0.5 * self.meal_cv**2
        )
        return {
            "vp": rng.integers(0, len(self.patients), n).astype(float),
            "meals": np.clip(meals, 0.0, 250.0),
        }

    def outcome(self, X: pd.DataFrame, dose: F, noise: dict[str, F]) -> F:
        """(n, n_visits) simulated mean plasma glucose (mg/dL); X is not used by this model."""
        dose = np.asarray(dose, dtype=float)
        idx = noise["vp"].astype(int)
        n, v = idx.size, self.n_visits
        if dose.shape != (n,):
            raise ValueError(f"dose: expected shape ({n},), got {dose.shape}")
        base = self._params
        cols = np.repeat(idx, v)  # patient-major: (patient, visit) pairs
        values = {k: a[cols].copy() for k, a in base.values.items()}
        # visit 0 is the untreated baseline (trial endpoints are changes from baseline)
        on_drug = np.tile(self.visits > 0, n)
        values["f"] = values["f"] * (
            1.0 - np.repeat(emax(dose, self.e_max, self.ed50), v) * on_drug
        )
        quest = {k: a[cols] for k, a in base.quest.items()}
        params = UVAPadovaParams([base.names[i] for i in cols], values, base.x0[:, cols], quest)
        minutes = 24 * 60
        meals = np.zeros((n * v, minutes))
        carbs = noise["meals"].reshape(n * v, 3)
        insulin = np.repeat(params.basal_u_per_min[:, None], minutes, axis=1)
        for j, m in enumerate(MEAL_MINUTES):
            meals[:, m] = carbs[:, j]
            insulin[:, m] += carbs[:, j] / params.quest["CR"]  # bolus in one minute (U/min)
        res = simulate_uva_padova(params, meals, insulin)
        return np.asarray(res.bg[:, 1:].mean(axis=1).reshape(n, v), dtype=float)
