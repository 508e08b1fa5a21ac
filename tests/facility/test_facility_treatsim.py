"""Our treatment-centre spec reproduces treat-sim 3.0.0's default KPIs (treat-sim run here).

Tolerance: for each KPI the two replication means must agree within 4 combined standard
errors, sqrt(se_ours^2 + se_treatsim^2) (Welch); with 11 KPIs a 4-SE band keeps the
family-wise false-alarm rate below 1e-3. treat-sim's utilisation counts whole service times
started in the run (even those ending after it), so utilisation is compared only at the
short-service stations (triage, registration, examination) where that difference is tiny.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from healthtwin.operations.engine import run_replications
from healthtwin.operations.kpi import kpi_frame
from healthtwin.operations.spec import load_spec

treat_sim = pytest.importorskip("treat_sim.model")

PAIRS = {
    "00_arrivals": "arrivals[1]",
    "01a_triage_wait": "wait_mean/triage[min]",
    "01b_triage_util": "utilisation/triage[1]",
    "02a_registration_wait": "wait_mean/registration[min]",
    "02b_registration_util": "utilisation/registration[1]",
    "03a_examination_wait": "wait_mean/examination[min]",
    "03b_examination_util": "utilisation/examination[1]",
    "04a_treatment_wait(non_trauma)": "wait_mean/cubicle_1[min]",
    "05_total_time(non-trauma)": "time_in_system_mean/non_trauma[min]",
    "06a_trauma_wait": "wait_mean/trauma[min]",
    "09_throughput": "throughput[1]",
}


def test_treat_sim_default_kpis_reproduced() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = treat_sim.multiple_replications(treat_sim.Scenario(), n_reps=40)
    ours = kpi_frame(run_replications(load_spec("treatment_centre"), 80, seed=123))
    for theirs, mine in PAIRS.items():
        a = ts[theirs].to_numpy(float)
        b = ours[mine].to_numpy(float)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
        assert abs(a.mean() - b.mean()) <= 4 * se, (theirs, a.mean(), b.mean(), se)


@pytest.mark.shared
def test_bundled_profile_matches_treat_sim_data(shared_data) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    prof = pd.read_csv(shared_data / "ops" / "ed_arrivals.csv")["arrival_rate"].to_numpy()
    assert np.allclose(load_spec("treatment_centre").arrivals.profile, prof)
