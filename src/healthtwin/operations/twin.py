"""``FacilityTwin``: the facility twin behind the shared estimator interface (TwinModel).

``fit`` calibrates the spec's arrival process from encounter history (FHIR Encounter dicts or
a frame from :mod:`healthtwin.operations.calibrate`); ``simulate`` returns an array of KPIs
with replications on the first axis (names in ``kpi_names_``, units in the names; simulated);
``forecast`` runs a live start from a census.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from healthtwin.models.base import TwinModel, check_range
from healthtwin.operations.calibrate import calibrate, encounters_from_fhir
from healthtwin.operations.engine import RunOptions, run_replications
from healthtwin.operations.kpi import kpi_frame
from healthtwin.operations.live import Census, forecast
from healthtwin.operations.scenarios import apply_patch
from healthtwin.operations.spec import FacilitySpec, load_spec


class FacilityTwin(TwinModel):
    """Facility twin. ``spec``: a :class:`FacilitySpec`, a YAML path or a bundled name."""

    def __init__(
        self, spec: FacilitySpec | str = "ed", n_reps: int = 20, seed: int = 0, workers: int = 1
    ) -> None:
        self.spec = spec
        self.n_reps = n_reps
        self.seed = seed
        self.workers = workers

    def _base(self) -> FacilitySpec:
        return self.spec if isinstance(self.spec, FacilitySpec) else load_spec(self.spec)

    def fit(
        self, encounters: pd.DataFrame | Iterable[Mapping[str, Any]] | None = None
    ) -> FacilityTwin:
        """Calibrate arrivals (NHPP by hour and weekday, /h) from encounters; without data,
        the spec is used as written. Sets ``spec_`` and ``calibration_``."""
        base = self._base()
        if encounters is None:
            self.spec_ = base
            self.calibration_: dict[str, Any] = {}
            return self
        df = (
            encounters if isinstance(encounters, pd.DataFrame) else encounters_from_fhir(encounters)
        )
        self.calibration_ = calibrate(df)
        self.spec_ = apply_patch(base, {"arrivals": self.calibration_["spec_arrivals"]}, "fit")
        return self

    def simulate(self, options: RunOptions | None = None) -> np.ndarray:
        """KPIs, shape (n_reps, n_kpis); column names in ``kpi_names_`` (simulated)."""
        self._require_fitted("spec_")
        df = kpi_frame(run_replications(self.spec_, self.n_reps, self.seed, self.workers, options))
        self.kpi_names_ = list(df.columns)
        return df.to_numpy(float)

    def forecast(self, census: Census, hours: Sequence[float] = (4, 8, 24)) -> pd.DataFrame:
        """Live-start forecast (mean and 90 % interval); ``hours`` in h within (0, 168]."""
        self._require_fitted("spec_")
        check_range("hours", list(hours), 1e-9, 168.0, "h")
        return forecast(self.spec_, census, hours, self.n_reps, self.seed, self.workers)
