"""Analytic queueing formulas against independent oracles (textbook values, scipy, identities)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from healthtwin.models.base import OutOfRangeError
from healthtwin.operations import queueing


def test_mm3_textbook_values() -> None:
    # M/M/3, lambda = 0.2 /min, mu = 0.1 /min: Wq = 4.444 min, P(wait) = 0.4444 (issue 5).
    m = queueing.mmc(0.2, 0.1, 3)
    assert m["wq"] == pytest.approx(40 / 9, abs=5e-4)
    assert m["p_wait"] == pytest.approx(4 / 9, abs=5e-5)


@given(c=st.integers(1, 60), a=st.floats(0.01, 80))
@settings(max_examples=200, deadline=None)
def test_erlang_b_equals_truncated_poisson(c: int, a: float) -> None:
    # Erlang B is the truncated Poisson probability P(N = c | N <= c), N ~ Poisson(a).
    oracle = stats.poisson.pmf(c, a) / stats.poisson.cdf(c, a)
    assert queueing.erlang_b(c, a) == pytest.approx(oracle, rel=1e-9, abs=1e-300)


@given(c=st.integers(1, 60), frac=st.floats(0.01, 0.99))
@settings(max_examples=200, deadline=None)
def test_erlang_c_against_direct_sum(c: int, frac: float) -> None:
    # Direct definition: C = (a^c/c! * c/(c-a)) / (sum_{k<c} a^k/k! + a^c/c! * c/(c-a)).
    a = frac * c
    k = np.arange(c)
    logs = k * math.log(a) - np.array([math.lgamma(x + 1) for x in k])
    top = math.exp(c * math.log(a) - math.lgamma(c + 1)) * c / (c - a)
    oracle = top / (np.exp(logs).sum() + top)
    pc = queueing.erlang_c(c, a)
    assert pc == pytest.approx(oracle, rel=1e-8)
    assert queueing.erlang_b(c, a) <= pc + 1e-15  # delay prob >= loss prob


def test_erlang_c_unstable_raises() -> None:
    with pytest.raises(OutOfRangeError, match="unstable"):
        queueing.erlang_c(2, 2.5)


def test_priority_conservation_law() -> None:
    # Kleinrock's conservation law for work-conserving non-pre-emptive M/G/1:
    # sum rho_k Wq_k = rho * W0 / (1 - rho), independent of the priority order.
    lam, es, es2 = [0.03, 0.05], [5.0, 8.0], [50.0, 128.0]
    t = queueing.priority_mg1(lam, es, es2, preemptive=False)
    wq = t - np.array(es)
    rho = np.array(lam) * np.array(es)
    w0 = float(np.sum(np.array(lam) * np.array(es2)) / 2)
    assert float(np.sum(rho * wq)) == pytest.approx(rho.sum() * w0 / (1 - rho.sum()), rel=1e-12)
    # the top class under pre-emption sees an M/M/1 alone: T = 1/(mu - lambda)
    tp = queueing.priority_mg1(lam, es, es2, preemptive=True)
    assert tp[0] == pytest.approx(1 / (1 / 5.0 - 0.03), rel=1e-12)


def test_min_servers_meets_target() -> None:
    c = queueing.min_servers(0.5, 0.1, 10.0, 0.2)
    assert queueing.mmc_wait_tail(0.5, 0.1, c, 10.0) <= 0.2
    assert queueing.mmc_wait_tail(0.5, 0.1, c - 1, 10.0) > 0.2 if c - 1 > 5 else True
