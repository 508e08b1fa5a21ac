"""Trials whose subjects are UVA/Padova virtual patients (the glucose physiology)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from healthtwin.models.physiology.uva_padova import UVAPadovaParams, steady_state_glucose
from healthtwin.research.glucose_outcome import GlucoseOutcome
from healthtwin.research.trial import OutcomeModel, TrialSpec, simulate_trial


def test_without_meals_every_arm_sits_at_the_analytic_steady_state() -> None:
    model = GlucoseOutcome(n_visits=2, patients=("adult#001", "adult#002"))
    rng = np.random.default_rng(0)
    noise = model.draw_noise(4, rng)
    noise["meals"][:] = 0.0
    X = pd.DataFrame(index=range(4))
    for dose in (0.0, 200.0):
        y = model.outcome(X, np.full(4, dose), noise)
        ss = steady_state_glucose(UVAPadovaParams.from_names(["adult#001", "adult#002"]))
        want = ss[noise["vp"].astype(int)]
        np.testing.assert_allclose(y, np.repeat(want[:, None], 2, axis=1), rtol=2e-4)


def test_trial_effect_is_known_and_glucose_lowering() -> None:
    model = GlucoseOutcome(n_visits=3)
    assert isinstance(model, OutcomeModel)
    spec = TrialSpec(n=40, endpoint_visit=2, seed=3)
    res = simulate_trial(spec, pd.DataFrame({"age": np.full(40, 50.0)}), model=model)
    d = res.data
    treated = d["dose"] > 0
    # less absorbed carbohydrate with the same insulin: lower glucose for every treated patient
    ite = d.loc[treated, "ite"]
    assert (ite < 0).all() and ite.mean() < -2.0
    assert (d.loc[~treated, "ite"] == 0).all()
    # the control arm's change from baseline is meal-to-meal variation only (mg/dL)
    assert d["y_control"].abs().max() < 40
    # y = y_control + ite for every patient observed
    np.testing.assert_allclose(d["y"], d["y_control"] + d["ite"], rtol=1e-12)


def test_spec_selects_the_physiology_model() -> None:
    spec = TrialSpec(
        n=8,
        endpoint_visit=1,
        model="glucose",
        model_params={"patients": ["adolescent#001"], "e_max": 0.2},
    )
    model = spec.outcome_model()
    assert isinstance(model, GlucoseOutcome) and model.visits.size == 2
