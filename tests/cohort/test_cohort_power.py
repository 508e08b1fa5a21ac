"""PROCOVA sample size and power against the published figures and statsmodels' power solver."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.power import NormalIndPower

from healthtwin.models.base import OutOfRangeError
from healthtwin.research.power import binary_sample_size, procova_power, procova_sample_size


@pytest.mark.parametrize(("r2", "expected"), [(0.0, 171), (0.16, 144), (0.36, 110), (0.5, 86)])
def test_issue_figures(r2: float, expected: int) -> None:
    assert procova_sample_size(1.0, 0.5, r2, 0.9, 0.025, 1.0) == expected


@settings(max_examples=60, deadline=None)
@given(
    sigma=st.floats(0.2, 5),
    delta=st.floats(0.05, 3),
    r2=st.floats(0, 0.9),
    power=st.floats(0.5, 0.99),
    alpha=st.floats(0.001, 0.1),
    ratio=st.sampled_from([0.5, 1.0, 2.0, 3.0]),
)
def test_matches_statsmodels_normal_power(
    sigma: float, delta: float, r2: float, power: float, alpha: float, ratio: float
) -> None:
    # oracle: statsmodels' two-sample z-test power (forward computation) for the effect
    # size Δ/(σ√(1−R²)), n_treated = n_eff·r/(1+r) with n_eff = n − z²/2 and its ratio
    # n_control/n_treated = 1/r. Our n must be the smallest total reaching the power.
    es = delta / (sigma * math.sqrt(1 - r2))
    za2 = stats.norm.ppf(1 - alpha) ** 2 / 2

    def sm_power(total: float) -> float:
        n_t = (total - za2) * ratio / (1 + ratio)
        return float(NormalIndPower().power(es, n_t, alpha, ratio=1 / ratio, alternative="larger"))

    n = procova_sample_size(sigma, delta, r2, power, alpha, ratio)
    assert sm_power(n) >= power - 1e-9
    assert procova_power(n, sigma, delta, r2, alpha, ratio) == pytest.approx(sm_power(n), abs=1e-9)
    if n - 1 - za2 > 1:
        assert sm_power(n - 1) < power + 1e-9


@settings(max_examples=60, deadline=None)
@given(
    sigma=st.floats(0.2, 5),
    delta=st.floats(0.05, 3),
    r2=st.floats(0, 0.9),
    power=st.floats(0.5, 0.99),
)
def test_power_inverts_sample_size(sigma: float, delta: float, r2: float, power: float) -> None:
    n = procova_sample_size(sigma, delta, r2, power)
    assert procova_power(n, sigma, delta, r2) >= power - 1e-9
    if n - 1 > stats.norm.ppf(0.975) ** 2 / 2:
        assert procova_power(n - 1, sigma, delta, r2) < power + 1e-9


def test_binary_uses_bernoulli_variance() -> None:
    p0, p1 = 0.3, 0.45
    pbar = (p0 + p1) / 2
    assert binary_sample_size(p0, p1, 0.2) == procova_sample_size(
        math.sqrt(pbar * (1 - pbar)), 0.15, 0.2
    )


def test_power_is_vectorised_and_monotone() -> None:
    pw = procova_power(np.arange(10, 400), 1.0, 0.5, 0.3)
    assert pw.shape == (390,)
    assert np.all(np.diff(pw) > 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sigma": -1.0, "delta": 0.5}, "sigma"),
        ({"sigma": 1.0, "delta": 0.0}, "delta"),
        ({"sigma": 1.0, "delta": 0.5, "r2": 1.2}, "r2"),
        ({"sigma": 1.0, "delta": 0.5, "alpha": 0.7}, "alpha"),
        ({"sigma": 1.0, "delta": 0.5, "power": 1.0}, "power"),
    ],
)
def test_bad_input_names_the_parameter(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(OutOfRangeError if match != "delta" else ValueError, match=match):
        procova_sample_size(**kwargs)
