"""Engine against queueing oracles (M/M/c, Erlang B, priority M/M/1, M/G/inf), deterministic
and extreme cases, reproducibility and common random numbers.

Monte Carlo tolerances: each check compares a replication mean with the exact value using
the across-replication standard error (SE); a 4-SE band gives a false-alarm rate < 1e-4 per
check while a real bias of a few per cent would still exceed it at these sizes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats

from healthtwin.operations import queueing
from healthtwin.operations.engine import (
    InitialPatient,
    RunOptions,
    run_replication,
    run_replications,
)
from healthtwin.operations.kpi import kpi_frame
from healthtwin.operations.spec import parse_spec


def one_station(
    lam_per_min: float,
    service: dict[str, Any],
    servers: int,
    horizon: float,
    warmup: float,
    **station: Any,
) -> dict[str, Any]:
    return {
        "name": "single",
        "horizon": horizon,
        "warmup": warmup,
        "stations": {"s": {"servers": servers, **station}},
        "classes": {
            "a": {"share": 1.0, "pathway": [{"name": "x", "station": "s", "service": service}]}
        },
        "arrivals": {"profile": [lam_per_min * 60.0]},
    }


def _mc_check(values: np.ndarray, exact: float, k: float = 4.0) -> None:
    se = values.std(ddof=1) / np.sqrt(values.size)
    assert abs(values.mean() - exact) <= k * se, (values.mean(), exact, se)


@pytest.mark.parametrize(
    ("lam", "mu", "c"),
    [(0.2, 0.1, 3), (0.15, 0.1, 2), (0.9, 0.25, 5)],  # the M/M/3 and two others
)
def test_mmc_wait_and_p_wait(lam: float, mu: float, c: int) -> None:
    spec = parse_spec(one_station(lam, {"dist": "exponential", "mean": 1 / mu}, c, 40000, 2000))
    res = run_replications(spec, 12, seed=11)
    ex = queueing.mmc(lam, mu, c)
    _mc_check(np.array([r.kpis["wait_mean[min]"] for r in res]), ex["wq"])
    _mc_check(np.array([r.kpis["p_wait/s[1]"] for r in res]), ex["p_wait"])
    _mc_check(np.array([r.kpis["utilisation/s[1]"] for r in res]), lam / (mu * c))


def test_erlang_b_loss_system() -> None:
    # M/M/4/4 (no waiting room): blocked share = Erlang B (PASTA).
    d = one_station(0.3, {"dist": "exponential", "mean": 10.0}, 4, 20000, 500, max_queue=0)
    res = run_replications(parse_spec(d), 10, seed=3)
    _mc_check(np.array([r.kpis["blocked_fraction[1]"] for r in res]), queueing.erlang_b(4, 3.0))


def _priority_spec(preemptive: bool) -> dict[str, Any]:
    return {
        "name": "prio",
        "horizon": 60000,
        "warmup": 3000,
        "stations": {"s": {"servers": 1, "preemptive": preemptive}},
        "classes": {
            "hi": {
                "share": 0.4,
                "priority": 1,
                "pathway": [
                    {"name": "x", "station": "s", "service": {"dist": "exponential", "mean": 4.0}}
                ],
            },
            "lo": {
                "share": 0.6,
                "priority": 2,
                "pathway": [
                    {"name": "x", "station": "s", "service": {"dist": "exponential", "mean": 6.0}}
                ],
            },
        },
        "arrivals": {"profile": [0.12 * 60.0]},
    }


@pytest.mark.parametrize("preemptive", [False, True])
def test_two_class_priority_mm1(preemptive: bool) -> None:
    # lambda = 0.12 /min split 0.4/0.6; rho = 0.048*4 + 0.072*6 = 0.624
    res = run_replications(parse_spec(_priority_spec(preemptive)), 10, seed=5)
    exact = queueing.priority_mg1([0.048, 0.072], [4.0, 6.0], [32.0, 72.0], preemptive)
    for i, c in enumerate(("hi", "lo")):
        _mc_check(np.array([r.kpis[f"time_in_system_mean/{c}[min]"] for r in res]), exact[i])


def test_mginf_occupancy_is_poisson() -> None:
    # M/G/inf with lognormal service (mean 30, sd 20): busy ~ Poisson(lambda * 30) = Poisson(15).
    d = one_station(
        0.5, {"dist": "lognormal", "mean": 30.0, "sd": 20.0}, 0, 30000, 600, infinite=True
    )
    d["sample_every"] = 300.0  # > 10x the service sd: samples nearly independent
    res = run_replications(parse_spec(d), 4, seed=9)
    x = np.concatenate([r.occupancy[r.sample_times >= 600, 0] for r in res])
    assert abs(x.mean() - 15.0) <= 4 * np.sqrt(15.0 / x.size)
    # Poisson dispersion: (n-1) s^2 / mean ~ chi2(n-1)
    disp = (x.size - 1) * x.var(ddof=1) / 15.0
    assert stats.chi2.sf(disp, x.size - 1) > 1e-4 and stats.chi2.cdf(disp, x.size - 1) > 1e-4


def test_deterministic_pathway_exact() -> None:
    # Three patients present at t=0 in a deterministic 2-step pathway with 1 server each:
    # departures at 10+5, 20+5, 30+5 -> times in system 15, 25, 35 min exactly.
    d = {
        "name": "det",
        "horizon": 100,
        "stations": {"a": {"servers": 1}, "b": {"servers": 1}},
        "classes": {
            "p": {
                "share": 1.0,
                "pathway": [
                    {
                        "name": "one",
                        "station": "a",
                        "service": {"dist": "deterministic", "mean": 10},
                    },
                    {
                        "name": "two",
                        "station": "b",
                        "service": {"dist": "deterministic", "mean": 5},
                    },
                ],
            }
        },
        "arrivals": {"profile": [0.0]},
    }
    opt = RunOptions(initial=[InitialPatient("p", "one") for _ in range(3)])
    r = run_replication(parse_spec(d), 0, 0, opt)
    assert sorted(r.class_time_in_system["p"].tolist()) == pytest.approx([15.0, 25.0, 35.0])
    assert r.kpis["wait_mean/a[min]"] == pytest.approx((0 + 10 + 20) / 3)
    assert r.kpis["utilisation/a[1]"] == pytest.approx(30 / 100)


def test_extremes() -> None:
    # no servers: nobody is served; no arrivals: empty run; huge capacity: no waiting
    zero = run_replication(
        parse_spec(one_station(0.1, {"dist": "exponential", "mean": 5}, 0, 500, 0)), 1
    )
    assert zero.kpis["throughput[1]"] == 0 and zero.kpis["arrivals[1]"] > 0
    none = run_replication(
        parse_spec(one_station(0.0, {"dist": "exponential", "mean": 5}, 1, 500, 0)), 1
    )
    assert none.kpis["arrivals[1]"] == 0
    big = run_replication(
        parse_spec(one_station(0.5, {"dist": "exponential", "mean": 5}, 500, 2000, 0)), 1
    )
    assert big.kpis["wait_mean[min]"] == 0.0


def test_preemption_resume_deterministic() -> None:
    # lo is in service at s from t=0 (10 min). hi spends 3 min at station a, then joins s and
    # pre-empts lo: hi is served 3-7, lo resumes its remaining 7 min at 7 -> leaves at 14.
    d = {
        "name": "pre",
        "horizon": 100,
        "stations": {"a": {"servers": 1}, "s": {"servers": 1, "preemptive": True}},
        "classes": {
            "hi": {
                "share": 0.5,
                "priority": 1,
                "pathway": [
                    {
                        "name": "pre",
                        "station": "a",
                        "service": {"dist": "deterministic", "mean": 3},
                    },
                    {"name": "x", "station": "s", "service": {"dist": "deterministic", "mean": 4}},
                ],
            },
            "lo": {
                "share": 0.5,
                "priority": 2,
                "pathway": [
                    {"name": "x", "station": "s", "service": {"dist": "deterministic", "mean": 10}}
                ],
            },
        },
        "arrivals": {"profile": [0.0]},
    }
    opt = RunOptions(
        initial=[InitialPatient("lo", "x", in_service=True), InitialPatient("hi", "pre")], log=True
    )
    r = run_replication(parse_spec(d), 0, 0, opt)
    assert r.class_time_in_system["hi"].tolist() == pytest.approx([7.0])
    assert r.class_time_in_system["lo"].tolist() == pytest.approx([14.0])
    assert [e[3] for e in r.log].count("preempt") == 1
    # without pre-emption hi waits for lo: hi leaves at 14, lo at 10
    d["stations"]["s"]["preemptive"] = False
    r = run_replication(parse_spec(d), 0, 0, opt)
    assert r.class_time_in_system["hi"].tolist() == pytest.approx([14.0])
    assert r.class_time_in_system["lo"].tolist() == pytest.approx([10.0])


def test_reproducible_and_parallel_identical() -> None:
    spec = parse_spec(one_station(0.2, {"dist": "exponential", "mean": 10}, 3, 3000, 100))
    a = kpi_frame(run_replications(spec, 4, seed=1))
    b = kpi_frame(run_replications(spec, 4, seed=1, workers=2))
    c = kpi_frame(run_replications(spec, 4, seed=2))
    assert a.equals(b)
    assert not a.equals(c)


def test_common_random_numbers_keep_arrivals() -> None:
    base = one_station(0.2, {"dist": "exponential", "mean": 10}, 3, 3000, 0)
    more = one_station(0.2, {"dist": "exponential", "mean": 10}, 4, 3000, 0)
    a = kpi_frame(run_replications(parse_spec(base), 5, seed=4))
    b = kpi_frame(run_replications(parse_spec(more), 5, seed=4))
    assert (a["arrivals[1]"] == b["arrivals[1]"]).all()
    assert (b["wait_mean[min]"] <= a["wait_mean[min]"] + 1e-12).all()


def _joint(
    cubicles: int,
    nurses: int,
    service: dict[str, Any],
    rate_h: float,
    horizon: float,
    warmup: float,
) -> dict[str, Any]:
    return {
        "name": "joint",
        "horizon": horizon,
        "warmup": warmup,
        "stations": {
            "cubicle": {"servers": cubicles, "role": "cubicle"},
            "nurse": {"servers": nurses, "role": "nurse"},
        },
        "classes": {
            "p": {
                "share": 1.0,
                "pathway": [
                    {"name": "treat", "station": "cubicle", "also": ["nurse"], "service": service}
                ],
            }
        },
        "arrivals": {"profile": [rate_h]},
    }


def test_joint_holding_deterministic() -> None:
    # 2 cubicles but 1 nurse needed with each: three patients at t=0 leave at 10, 20, 30 min.
    d = _joint(2, 1, {"dist": "deterministic", "mean": 10}, 0.0, 100, 0)
    opt = RunOptions(initial=[InitialPatient("p", "treat") for _ in range(3)])
    r = run_replication(parse_spec(d), 0, 0, opt)
    assert sorted(r.class_time_in_system["p"].tolist()) == pytest.approx([10.0, 20.0, 30.0])
    assert r.kpis["utilisation/nurse[1]"] == pytest.approx(0.3)
    assert r.kpis["utilisation/cubicle[1]"] == pytest.approx(30 / 200)


def test_joint_holding_binding_resource_is_mmc() -> None:
    # 5 cubicles each needing one of 2 nurses: at most 2 in service, so the system is M/M/2
    # (lambda = 0.15, mu = 0.1): Wq from Erlang C, 4-SE Monte Carlo band.
    d = _joint(5, 2, {"dist": "exponential", "mean": 10.0}, 9.0, 30000, 1500)
    res = run_replications(parse_spec(d), 10, seed=8)
    _mc_check(np.array([r.kpis["wait_mean[min]"] for r in res]), queueing.mmc(0.15, 0.1, 2)["wq"])
    assert max(float(r.occupancy[:, 0].max()) for r in res) <= 2


def test_joint_holding_validation() -> None:
    from healthtwin.operations.spec import SpecError

    d = _joint(2, 1, {"dist": "deterministic", "mean": 10}, 1.0, 100, 0)
    d["classes"]["p"]["pathway"][0]["also"] = ["scanner"]
    with pytest.raises(
        SpecError, match=r"pathway\[0\].also\[0\]: unknown or repeated station 'scanner'"
    ):
        parse_spec(d)


def test_engine_rejects_a_horizon_within_the_warmup() -> None:
    # model_copy(update=...) skips the spec's validator (warmup < horizon); the engine checks
    # again instead of dividing by horizon - warmup = 0 (a 500 of the server before)
    from healthtwin.operations.engine import run_replication
    from healthtwin.operations.spec import SpecError, load_spec

    sp = load_spec("ed")
    bad = sp.model_copy(update={"horizon": float(sp.warmup)})
    with pytest.raises(SpecError, match=r"warmup \(1440 min\) must be < horizon \(1440 min\)"):
        run_replication(bad, 0)
