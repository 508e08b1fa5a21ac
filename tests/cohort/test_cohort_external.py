"""External and twin synthetic controls inflate type-I error under shift; PROCOVA holds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import LinearRegression

from healthtwin.research.external import shift_experiment, twin_control_estimate


def test_shift_inflates_external_controls_not_procova() -> None:
    # 4,000 replications: MCSE of a 0.05 rejection rate is 0.0034; 4 MCSE = 0.014
    res = shift_experiment([0.0, 0.5], reps=4000, seed=3)
    null, shifted = res
    tol = 4 * null.mcse
    assert abs(null.type1_external - 0.05) < tol
    assert abs(null.type1_twin - 0.05) < tol
    assert abs(null.type1_procova - 0.05) < tol
    assert abs(shifted.type1_procova - 0.05) < tol
    # shift of 0.5 sd in a factor with weight 0.5 -> bias 0.25: power-like rejection rates
    assert shifted.type1_external > 0.5
    assert shifted.type1_twin > 0.5
    assert shifted.label == "simulated"


def test_twin_control_estimate_equals_one_sample_t() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 2))
    y = x @ [1.0, 0.5] + rng.standard_normal(300)
    model = LinearRegression().fit(x, y)
    xt = rng.standard_normal((80, 2))
    yt = xt @ [1.0, 0.5] + rng.standard_normal(80) + 0.4
    est = twin_control_estimate(model, xt, yt)
    d = yt - model.predict(xt)
    t = stats.ttest_1samp(d, 0.0)
    assert est["estimate"] == pytest.approx(d.mean())
    assert est["p_value_two_sided"] == pytest.approx(t.pvalue)
    ci = t.confidence_interval()
    assert (est["ci_low"], est["ci_high"]) == pytest.approx((ci.low, ci.high))
    with pytest.raises(ValueError, match="at least 3"):
        twin_control_estimate(model, xt[:2], yt[:2])
