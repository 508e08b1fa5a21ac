"""Analytic queueing formulas used for staffing screens and as test oracles.

Rates in /min, times in min. Erlang B (loss), Erlang C (delay), M/M/c metrics, Cobham's
priority formulas for M/G/1 (non-pre-emptive) and pre-emptive-resume, M/G/inf occupancy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from healthtwin.models.base import OutOfRangeError


def erlang_b(c: int, a: float) -> float:
    """Blocking probability of M/M/c/c with offered load ``a = lambda/mu`` (Erlang, 1).

    Stable recursion B(0)=1, B(k) = a B(k-1) / (k + a B(k-1)).
    """
    if c < 0 or a < 0:
        raise ValueError(f"erlang_b: need c >= 0 and a >= 0, got c={c}, a={a}")
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b


def erlang_c(c: int, a: float) -> float:
    """Probability of waiting in M/M/c, offered load ``a`` (1); needs a < c (stability)."""
    if c <= 0 or a < 0:
        raise ValueError(f"erlang_c: need c >= 1 and a >= 0, got c={c}, a={a}")
    if a >= c:
        raise OutOfRangeError(f"erlang_c: offered load a={a:g} >= c={c}: queue is unstable")
    b = erlang_b(c, a)
    return c * b / (c - a * (1 - b))


def mmc(lam: float, mu: float, c: int) -> dict[str, float]:
    """Steady-state M/M/c: P(wait) (1), Wq (min), W (min), Lq (1), utilisation rho (1)."""
    a = lam / mu
    pw = erlang_c(c, a)
    wq = pw / (c * mu - lam)
    return {"p_wait": pw, "wq": wq, "w": wq + 1 / mu, "lq": lam * wq, "rho": a / c}


def mmc_wait_tail(lam: float, mu: float, c: int, t: float) -> float:
    """P(Wq > t) for M/M/c FCFS (1); t in min."""
    return mmc(lam, mu, c)["p_wait"] * math.exp(-(c * mu - lam) * t)


def min_servers(lam: float, mu: float, target_wait: float, max_p_exceed: float) -> int:
    """Smallest c with P(Wq > target_wait) <= max_p_exceed (Erlang C screen)."""
    if lam <= 0:
        return 0
    c = max(1, math.floor(lam / mu) + 1)
    while mmc_wait_tail(lam, mu, c, target_wait) > max_p_exceed:
        c += 1
    return c


def priority_mg1(
    lams: Sequence[float], es: Sequence[float], es2: Sequence[float], preemptive: bool
) -> np.ndarray:
    """Mean time in system per class (min) for M/G/1 with classes in priority order.

    Non-pre-emptive (Cobham 1954): ``Wq_k = W0 / ((1 - s_{k-1})(1 - s_k))`` with
    ``W0 = sum_i lam_i E[S_i^2] / 2`` and ``s_k = sum_{i<=k} rho_i``; T_k = Wq_k + E[S_k].
    Pre-emptive resume: ``T_k = E[S_k]/(1 - s_{k-1}) + R_k/((1 - s_{k-1})(1 - s_k))`` with
    ``R_k = sum_{i<=k} lam_i E[S_i^2] / 2``.
    """
    lam = np.asarray(lams, float)
    s1 = np.asarray(es, float)
    s2 = np.asarray(es2, float)
    rho = lam * s1
    sig = np.cumsum(rho)
    if sig[-1] >= 1:
        raise OutOfRangeError(f"priority_mg1: total load {sig[-1]:g} >= 1: unstable")
    prev = np.concatenate([[0.0], sig[:-1]])
    if not preemptive:
        w0 = float(np.sum(lam * s2) / 2)
        return w0 / ((1 - prev) * (1 - sig)) + s1
    r = np.cumsum(lam * s2) / 2
    return s1 / (1 - prev) + r / ((1 - prev) * (1 - sig))


def mginf_occupancy(lam: float, mean_service: float) -> stats.rv_discrete:
    """Stationary number busy in M/G/inf: Poisson(lam * E[S]) (frozen scipy distribution)."""
    return stats.poisson(lam * mean_service)
