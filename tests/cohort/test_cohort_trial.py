"""Trial simulation: randomisation schemes, enrolment, endpoints, dropout and known ITEs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifelines import KaplanMeierFitter
from pydantic import ValidationError
from scipy import stats

from healthtwin.models.base import OutOfRangeError
from healthtwin.research.procova import ancova
from healthtwin.research.trial import (
    Arm,
    LinearProgression,
    MarkovProgression,
    OutcomeModel,
    TrialSpec,
    emax,
    randomise,
    simulate_trial,
    tte_analysis,
)


def _pop(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.normal(58, 10, n),
            "bmi": rng.normal(31, 5, n),
            "female": (rng.random(n) < 0.5).astype(int),
        }
    )


def test_block_randomisation_is_balanced_in_every_block() -> None:
    arm = randomise(402, [1, 2], np.random.default_rng(1), "block", block_size=6)
    blocks = arm.reshape(-1, 6)
    assert np.all((blocks == 1).sum(axis=1) == 4)  # 2:1 -> 4 of 6 on arm index 1


def test_stratified_randomisation_balances_within_strata() -> None:
    rng = np.random.default_rng(2)
    strata = rng.choice(["a", "b", "c"], 301)
    arm = randomise(301, [1, 1], rng, "stratified", block_size=4, strata=strata)
    for s in "abc":
        a = arm[strata == s]
        assert abs(a.sum() - (a.size - a.sum())) <= 2  # at most one incomplete block of 4


def test_simple_randomisation_proportions() -> None:
    arm = randomise(30_000, [1, 3], np.random.default_rng(3), "simple")
    # binomial oracle: P(arm 1) = 0.75, 4-sigma band
    assert abs(arm.mean() - 0.75) < 4 * np.sqrt(0.75 * 0.25 / 30_000)


def test_randomisation_errors() -> None:
    with pytest.raises(ValueError, match="multiple"):
        randomise(10, [1, 2], np.random.default_rng(0), "block", block_size=4)
    with pytest.raises(ValueError, match="strata"):
        randomise(10, [1, 1], np.random.default_rng(0), "stratified")


def test_linear_ite_matches_emax_and_estimate_covers_truth() -> None:
    spec = TrialSpec(
        n=2000,
        arms=[Arm(name="placebo", dose=0), Arm(name="low", dose=25), Arm(name="high", dose=100)],
        model_params={"coef": {"bmi": 0.05}, "centre": {"bmi": 31}, "effect_modifier": 0.5},
        block_size=6,
        seed=4,
    )
    res = simulate_trial(spec, _pop(2000))
    d = res.data
    z = 0.05 * (d["bmi"] - 31)
    expected = -emax(d["dose"].to_numpy(), 1.2, 50.0) * (1 + 0.5 * z)  # analytic ITE, "%"
    np.testing.assert_allclose(d["ite"], expected, atol=1e-12)
    # block 1:1:1 -> thirds
    assert d["arm"].value_counts().max() - d["arm"].value_counts().min() <= 2
    hi = d[d["arm"].isin(["placebo", "high"])]
    r = ancova(
        hi["y"], (hi["arm"] == "high").astype(float), hi[["bmi"]].to_numpy() - 31, unit=res.unit
    )
    true = float(hi.loc[hi["arm"] == "high", "ite"].mean())
    assert r.ci_low < true < r.ci_high
    assert res.unit == "%"


def test_enrolment_is_poisson_and_dropout_exponential() -> None:
    spec = TrialSpec(n=5000, enrolment_rate=20, dropout_rate=0.01, seed=5)
    d = simulate_trial(spec, _pop(5000)).data
    gaps = np.diff(np.concatenate([[0.0], d["enrol_time"]]))
    assert stats.kstest(gaps, "expon", args=(0, 1 / 20)).pvalue > 0.001
    missing = d["y"].isna().mean()
    p = 1 - np.exp(-0.01 * 52)
    assert abs(missing - p) < 4 * np.sqrt(p * (1 - p) / 5000)


def test_missing_at_random_dropout_follows_covariate() -> None:
    pop = _pop(20_000, 3)
    spec = TrialSpec(
        n=20_000, dropout_rate=0.01, dropout_covariate="bmi", dropout_log_hr=0.7, seed=11
    )
    d = simulate_trial(spec, pop).data
    zb = (pop["bmi"] - pop["bmi"].mean()) / pop["bmi"].std(ddof=0)
    p_miss = 1 - np.exp(-0.01 * np.exp(0.7 * zb) * 52)  # exponential dropout oracle per patient
    for sel in (zb < -1, zb > 1):
        got = d.loc[sel.to_numpy(), "y"].isna().mean()
        exp = p_miss[sel].mean()
        assert abs(got - exp) < 4 * np.sqrt(exp * (1 - exp) / sel.sum())
    with pytest.raises(ValueError, match="dropout_covariate"):
        simulate_trial(TrialSpec(n=10, dropout_rate=0.1, dropout_covariate="x"), _pop(10))


def test_markov_stays_stable_with_geometric_probability() -> None:
    # no covariates, control arm: P(still stable at week 52) = (1 − expit(a01))^52
    spec = TrialSpec(n=20_000, model="markov", endpoint="binary", binary_threshold=1, seed=6)
    d = simulate_trial(spec, _pop(20_000)).data
    p01 = 1 / (1 + np.exp(4.0))
    p_stay = (1 - p01) ** 52
    ctrl = d[d["treated"] == 0]
    assert abs((1 - ctrl["y_control"].mean()) - p_stay) < 4 * np.sqrt(
        p_stay * (1 - p_stay) / len(ctrl)
    )
    # common random numbers: treatment never makes a patient worse
    assert np.all(d["ite"] <= 0)
    trt = d[d["treated"] == 1]
    p_t = p01 * (1 - emax(np.array([100.0]), 0.5, 50.0)[0])
    assert abs((1 - trt["y"].mean()) - (1 - p_t) ** 52) < 4 * np.sqrt(0.25 / len(trt))


def test_time_to_event_with_censoring_matches_kaplan_meier() -> None:
    spec = TrialSpec(
        n=8000, model="markov", endpoint="tte", binary_threshold=1, dropout_rate=0.01, seed=7
    )
    d = simulate_trial(spec, _pop(8000)).data
    ctrl = d[d["treated"] == 0]
    km = KaplanMeierFitter().fit(ctrl["y"], ctrl["event"])
    p01 = 1 / (1 + np.exp(4.0))
    for t in (10, 30, 52):
        s = float(km.survival_function_at_times(t).iloc[0])
        assert abs(s - (1 - p01) ** t) < 0.02, t
    assert (d["event"] == 0).any() and (d["y"] <= 52).all()
    # geometric weekly hazards: HR ≈ log(1 − p_t)/log(1 − p_c) with p_t = p_c·(1 − E(100 mg))
    p_t = p01 * (1 - emax(np.array([100.0]), 0.5, 50.0)[0])
    hr_true = np.log1p(-p_t) / np.log1p(-p01)
    hr = tte_analysis(d["y"].to_numpy(), d["event"].to_numpy(), d["treated"].to_numpy())
    assert hr["ci_low"] < hr_true < hr["ci_high"], hr


@dataclass
class ToyGlucose:
    """A plug-in outcome model (stands in for the patient twin's physiology)."""

    unit: str = "mg/dL"

    def __post_init__(self) -> None:
        self.visits = np.arange(5, dtype=float)

    def draw_noise(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"e": rng.normal(0, 5, (n, 5))}

    def outcome(
        self, X: pd.DataFrame, dose: np.ndarray, noise: dict[str, np.ndarray]
    ) -> np.ndarray:
        return 150 - 0.3 * dose[:, None] * self.visits[None, :] + noise["e"]


def test_regimen_exposure_is_dose_times_frequency() -> None:
    arms = [Arm(name="placebo", dose=0), Arm(name="bid", dose=25, per_week=14)]
    d = simulate_trial(TrialSpec(n=40, arms=arms, seed=2), _pop(40)).data
    assert set(d["dose"]) == {0.0, 350.0}
    np.testing.assert_allclose(d.loc[d["dose"] > 0, "ite"], -emax(np.array([350.0]), 1.2, 50.0)[0])


def test_outcome_model_plug_in() -> None:
    model = ToyGlucose()
    assert isinstance(model, OutcomeModel)
    spec = TrialSpec(n=50, endpoint_visit=4, seed=8)
    res = simulate_trial(spec, _pop(50), model=model)
    np.testing.assert_allclose(res.data.loc[res.data["treated"] == 1, "ite"], -0.3 * 100 * 4)
    assert res.unit == "mg/dL" and res.label == "simulated"


def test_bad_specs_and_inputs() -> None:
    with pytest.raises(ValidationError, match="two arms"):
        TrialSpec(n=10, arms=[Arm(name="a", dose=0)])
    with pytest.raises(ValidationError):
        TrialSpec(n=10, typo_field=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="population has 5"):
        simulate_trial(TrialSpec(n=10), _pop(5))
    with pytest.raises(KeyError, match="hba1c"):
        simulate_trial(TrialSpec(n=10, model_params={"coef": {"hba1c": 1.0}}), _pop(10))
    with pytest.raises(OutOfRangeError, match="dose"):
        LinearProgression().outcome(
            _pop(2),
            np.array([-1.0, 1.0]),
            LinearProgression().draw_noise(2, np.random.default_rng(0)),
        )
    with pytest.raises(OutOfRangeError, match="e_max"):
        MarkovProgression(e_max=1.5)
    with pytest.raises(ValueError, match="strata"):
        simulate_trial(TrialSpec(n=10, randomisation="stratified", strata=["site"]), _pop(10))


def test_stratified_trial_and_spec_hash() -> None:
    spec = TrialSpec(n=400, randomisation="stratified", strata=["female"], seed=9)
    d = simulate_trial(spec, _pop(400)).data
    for _, g in d.groupby("female"):
        assert abs(g["treated"].sum() - (len(g) - g["treated"].sum())) <= 2
    assert spec.spec_hash() == TrialSpec(**spec.model_dump()).spec_hash()
    assert spec.spec_hash() != TrialSpec(**{**spec.model_dump(), "seed": 10}).spec_hash()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    weights=st.lists(st.integers(1, 3), min_size=2, max_size=4),
    mult=st.integers(1, 3),
    seed=st.integers(0, 10_000),
)
def test_block_randomisation_property(n: int, weights: list[int], mult: int, seed: int) -> None:
    block = sum(weights) * mult
    arm = randomise(
        n, [float(w) for w in weights], np.random.default_rng(seed), "block", block_size=block
    )
    assert arm.shape == (n,) and arm.min() >= 0 and arm.max() < len(weights)
    full = (n // block) * block
    counts = np.bincount(arm[:full], minlength=len(weights))
    np.testing.assert_array_equal(counts, np.array(weights) * mult * (n // block))
