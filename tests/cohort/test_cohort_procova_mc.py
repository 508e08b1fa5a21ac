"""Monte Carlo operating characteristics of PROCOVA over 10,000 vectorised replications.

Tolerances come from the issue and from Monte Carlo standard errors (MCSE):
* type-I error 0.05 ± 0.0043 = ±1.96·√(0.05·0.95/10,000), the issue's [0.0457, 0.0543];
* power within ±0.02 of nominal (MCSE at 0.9 is 0.003, so ±0.02 leaves room for the
  formula's normal approximation);
* bias within 3 MCSE of the true effect (MCSE = sd(τ̂)/√R);
* 95% CI coverage within 0.95 ± 0.01 (MCSE 0.0022, so ±4.5 MCSE);
* variance ratio var(τ̂_adj)/var(τ̂_unadj) within ±0.03 of 1 − ρ²; its MCSE at R = 10,000
  is ≈ 0.01 (ratio of correlated variance estimates), and finite-n inflation ≈ 1/n.
Fixed seeds make the tests deterministic; other seeds land outside a ±1.96 MCSE band about
5% of the time even for an exact test (that is the band the issue asks for). The level tests
use HC2 robust SEs (unbiased under homoskedasticity, level ≈ 0.050); HC3 (the default) is
slightly conservative by construction (≈ 0.0486 at n = 200) and is checked to never exceed
the upper limit.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from healthtwin.research.power import binary_sample_size, procova_sample_size
from healthtwin.research.procova import Scenario, monte_carlo

REPS = 10_000
LOW, HIGH = 0.0457, 0.0543


def _check_common(oc, effect: float) -> None:  # type: ignore[no-untyped-def]
    assert abs(oc.bias_adjusted) <= 3 * oc.bias_mcse, oc
    assert 0.94 <= oc.coverage_adjusted <= 0.96, oc
    assert oc.effect == pytest.approx(effect, abs=0.02)


@pytest.mark.parametrize(
    ("name", "scenario", "prognostic"),
    [
        ("correct model", Scenario(n=200), None),
        # misspecified: truth has a quadratic term, prognostic model is linear
        ("misspecified", Scenario(n=200, nonlin=0.5), None),
        # misspecified score supplied directly: wrong weights and a spurious term
        ("wrong score", Scenario(n=200), lambda x: 0.2 * x[:, 2] - x[:, 1] + np.sin(3 * x[:, 0])),
        # historical and trial populations differ, truth non-linear
        ("population shift", Scenario(n=200, nonlin=0.5, shift_trial=0.7, shift_hist=-0.3), None),
        ("dropout 15%", Scenario(n=200, dropout=0.15, shift_trial=0.4, nonlin=0.3), None),
    ],
)
def test_type_one_error_and_variance_ratio(name: str, scenario: Scenario, prognostic) -> None:  # type: ignore[no-untyped-def]
    oc = monte_carlo(
        scenario, LinearRegression(), REPS, seed=11, prognostic=prognostic, cov_type="HC2"
    )
    assert LOW <= oc.rejection_adjusted <= HIGH, (name, oc)
    assert abs(oc.variance_ratio - (1 - oc.rho2)) <= 0.03, (name, oc)
    assert oc.label == "simulated"
    _check_common(oc, 0.0)


def test_hc3_is_never_anticonservative() -> None:
    oc = monte_carlo(
        Scenario(n=200, nonlin=0.5, shift_trial=0.5), LinearRegression(), REPS, seed=21
    )
    assert 0.040 <= oc.rejection_adjusted <= HIGH, oc
    assert oc.cov_type == "HC3"


def test_power_at_nominal() -> None:
    # outcome sd σ = √(0.6² + 0.4² + 0.2² + 0.8²); ρ² from the harness's independent sample
    sigma = float(np.sqrt(0.36 + 0.16 + 0.04 + 0.64))
    probe = monte_carlo(Scenario(n=100), LinearRegression(), 200, seed=1)
    n = procova_sample_size(sigma, 0.3, probe.rho2, power=0.9, alpha=0.025)
    oc = monte_carlo(
        Scenario(n=n, effect=0.3), LinearRegression(), REPS, seed=12, alpha=0.025, sided="one"
    )
    assert abs(oc.rejection_adjusted - 0.9) <= 0.02, oc
    assert oc.rejection_unadjusted < oc.rejection_adjusted - 0.15  # adjustment buys power
    _check_common(oc, 0.3)


def test_power_with_unequal_allocation() -> None:
    sigma = float(np.sqrt(1.2))
    probe = monte_carlo(Scenario(n=100), LinearRegression(), 200, seed=1)
    n = procova_sample_size(sigma, 0.35, probe.rho2, power=0.8, alpha=0.025, ratio=2.0)
    oc = monte_carlo(
        Scenario(n=n, effect=0.35, ratio=2.0),
        LinearRegression(),
        REPS,
        seed=13,
        alpha=0.025,
        sided="one",
    )
    assert abs(oc.rejection_adjusted - 0.8) <= 0.02, oc


def test_binary_variant() -> None:
    coef = (1.2, 0.8, 0.4)
    h0 = monte_carlo(
        Scenario(n=300, binary=True, coef=coef), LogisticRegression(), REPS, seed=14, cov_type="HC2"
    )
    assert LOW <= h0.rejection_adjusted <= HIGH, h0
    assert abs(h0.variance_ratio - (1 - h0.rho2)) <= 0.03, h0
    # power: the true risk difference (clipped at p ≤ 1) is reported by the harness
    h1 = monte_carlo(
        Scenario(n=300, binary=True, coef=coef, effect=0.15), LogisticRegression(), 2_000, seed=15
    )
    n = binary_sample_size(0.5, 0.5 + h1.effect, h0.rho2, power=0.9, alpha=0.025)
    oc = monte_carlo(
        Scenario(n=n, binary=True, coef=coef, effect=0.15),
        LogisticRegression(),
        REPS,
        seed=16,
        alpha=0.025,
        sided="one",
    )
    assert abs(oc.rejection_adjusted - 0.9) <= 0.02, oc
    _check_common(oc, h1.effect)
