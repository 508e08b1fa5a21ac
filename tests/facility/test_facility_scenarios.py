"""Scenarios, stress tests, staffing optimisation, roster (CP-SAT) and primary-care workload."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from healthtwin.operations import queueing
from healthtwin.operations.engine import run_replications
from healthtwin.operations.kpi import choose_warmup, kpi_frame, mser5, replications_needed
from healthtwin.operations.optimize import (
    erlang_screen,
    expected_visits,
    nelson_subset,
    optimise_staffing,
    rank_interventions,
)
from healthtwin.operations.primary import simulate_workload, workload_summary
from healthtwin.operations.roster import RosterError, build_roster
from healthtwin.operations.scenarios import (
    apply_patch,
    compare,
    discharge_before_noon,
    equipment_failure,
    extra_staff,
    overflow_beds,
    shift_pattern,
    staff_sickness,
    stress_test,
    surge,
)
from healthtwin.operations.spec import SpecError, load_spec, parse_spec


def _mm(servers: int = 2, horizon: float = 4000.0) -> dict:
    return {
        "name": "mm",
        "horizon": horizon,
        "warmup": 200,
        "stations": {"s": {"servers": servers, "role": "nurse"}},
        "classes": {
            "a": {
                "share": 1.0,
                "pathway": [
                    {"name": "x", "station": "s", "service": {"dist": "exponential", "mean": 10.0}}
                ],
            }
        },
        "arrivals": {"profile": [9.0]},
    }


def test_apply_patch_and_errors() -> None:
    spec = load_spec("ed")
    sp = apply_patch(
        spec, {"stations.cubicles.servers": 14, "classes.minor.pathway.0.service.mean": 3}
    )
    assert sp.stations["cubicles"].servers == 14
    assert sp.classes["minor"].pathway[0].service.mean == 3
    with pytest.raises(SpecError, match="has no 'stations.nowhere'"):
        apply_patch(spec, {"stations.nowhere.servers": 1})
    with pytest.raises(SpecError, match="stations.cubicles.servers"):
        apply_patch(spec, {"stations.cubicles.servers": -1})
    es = extra_staff(spec, "triage")
    assert [b["servers"] for b in es["stations.triage.schedule"]] == [2, 3, 2]
    assert discharge_before_noon(spec) == {"policies.discharge_hours": [8.0, 12.0]}
    assert apply_patch(spec, overflow_beds(spec, "ward", 4)).stations["ward"].servers == 34
    with pytest.raises(SpecError, match="not a ward"):
        overflow_beds(spec, "triage", 1)
    sp2 = apply_patch(spec, shift_pattern(spec, "triage", [(0, 1), (7, 3), (19, 2)]))
    assert [b.servers for b in sp2.stations["triage"].schedule or []] == [1, 3, 2]


def test_compare_paired_extra_server_matches_erlang() -> None:
    # M/M/2 -> M/M/3 at lambda = 0.15, mu = 0.1: exact drop in Wq from Erlang C. CRN pairing
    # gives a narrow interval; the paired 95 % CI widened to 4 SE must cover the exact drop.
    spec = parse_spec(_mm(2, 20000))
    res = compare(spec, {"+1": extra_staff(spec, "s")}, n_reps=10, seed=3)
    d = res["+1"].loc["wait_mean[min]"]
    exact = queueing.mmc(0.15, 0.1, 3)["wq"] - queueing.mmc(0.15, 0.1, 2)["wq"]
    half = (d["ci_high"] - d["ci_low"]) / 2
    assert d["significant"] and d["diff"] < 0
    assert abs(d["diff"] - exact) <= 2 * half + 0.05 * abs(exact)


def test_stress_surge_adds_expected_arrivals() -> None:
    # x1.5 for 6 h at 9 /h adds 0.5 * 9 * 6 = 27 arrivals in expectation. The surge stream is
    # the same thinning stream (CRN), so the paired difference has small variance.
    spec = parse_spec(_mm(3, 2000))
    res = compare(spec, {"surge": surge(spec, 1.5, hours=6.0)}, n_reps=30, seed=1)
    d = res["surge"].loc["arrivals[1]"]
    half = (d["ci_high"] - d["ci_low"]) / 2
    assert abs(d["diff"] - 27.0) <= 2 * half + 1e-9
    fail = compare(spec, {"f": equipment_failure(spec, "s", 1, hours=12)}, n_reps=5, seed=1)
    assert fail["f"].loc["wait_mean[min]", "diff"] > 0
    with pytest.raises(SpecError, match="no station has role 'surgeon'"):
        staff_sickness(spec, "surgeon")
    table = stress_test(spec, n_reps=4, seed=0)
    assert {"surge_x1.5_6h", "failure_s_12h", "sickness_nurse_24h"} <= set(table["test"])


def test_capacity_disruption_zero_servers_blocks_service() -> None:
    spec = parse_spec(_mm(1, 600))
    sp = apply_patch(spec, equipment_failure(spec, "s", 1, start=0.0, hours=10.0))
    r = run_replications(sp, 1, seed=0)[0]
    assert r.kpis["throughput[1]"] == 0


def test_expected_visits_and_screen() -> None:
    spec = load_spec("treatment_centre")
    v = expected_visits(spec)
    assert v["non_trauma"]["cubicle_1"][0] == pytest.approx(0.6)
    scr = erlang_screen(spec, "examination", target_wait=10, alpha=0.2)
    for _, row in scr.iterrows():
        if row["lambda[/h]"] > 0:
            lam, mu = row["lambda[/h]"] / 60, 1 / row["service_mean[min]"]
            c = int(row["servers[1]"])
            assert queueing.mmc_wait_tail(lam, mu, c, 10) <= 0.2
            assert c == 1 or c - 1 <= lam / mu or queueing.mmc_wait_tail(lam, mu, c - 1, 10) > 0.2


def test_nelson_subset_keeps_best() -> None:
    rng = np.random.default_rng(0)
    common = rng.normal(0, 5, (30, 1))
    j = common + np.array([10.0, 10.2, 14.0, 20.0]) + rng.normal(0, 0.5, (30, 4))
    keep = nelson_subset(j, 0.05)
    assert keep[0] and not keep[2] and not keep[3]


def test_optimise_staffing_and_rank() -> None:
    spec = load_spec("treatment_centre")
    r = optimise_staffing(spec, "examination", n_reps=5, seed=0)
    t = r["candidates"]
    assert t["in_subset"].any() and r["chosen"] in set(t["plan"])
    assert (r["roster"].coverage >= r["roster"].required).all()
    ranked = rank_interventions(
        spec,
        {
            "+1 cubicle_1": extra_staff(spec, "cubicle_1"),
            "+1 cubicle_2": extra_staff(spec, "cubicle_2"),
        },
        n_reps=8,
        seed=0,
    )
    assert ranked.iloc[0]["intervention"] == "+1 cubicle_1"  # the bottleneck (util ~0.9)


def test_roster_optimum_against_enumeration() -> None:
    # Three 8 h shifts partition the day, so the optimum is 8 * sum over blocks of the block
    # maximum requirement, on each of 7 days (independent closed form).
    rng = np.random.default_rng(5)
    req = rng.integers(0, 5, (7, 24))
    r = build_roster(req, shifts=((0, 8), (8, 8), (16, 8)), max_shifts=5, min_rest_h=8)
    exact = 8 * sum(req[d, b * 8 : (b + 1) * 8].max() for d in range(7) for b in range(3))
    assert r.paid_hours == exact
    assert (r.coverage >= req).all()
    for shifts in r.assignment.values():
        assert len(shifts) <= 5
        days = [d for d, _, _ in shifts]
        assert len(set(days)) == len(days)
        for (d1, s1, l1), (d2, s2, l2) in itertools.combinations(shifts, 2):
            a1, a2 = d1 * 24 + s1, d2 * 24 + s2
            gap = min((a2 - a1 - l1) % 168, (a1 - a2 - l2) % 168)
            assert gap >= 8
    with pytest.raises(RosterError, match="shape"):
        build_roster(np.ones(5))


def test_replications_needed_reaches_precision() -> None:
    spec = parse_spec(_mm(3, 3000))
    n, res = replications_needed(
        lambda first, k: run_replications(spec, k, 7, first_rep=first), "utilisation/s[1]", 0.02
    )
    v = kpi_frame(res)["utilisation/s[1]"].to_numpy()
    from scipy import stats

    hw = stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / np.sqrt(n)
    assert n == len(res) and hw / v.mean() <= 0.02 / 1.02 + 1e-12


def test_choose_warmup_for_filling_ward() -> None:
    # A ward that starts empty fills over ~ a few mean stays (2 days): the warm-up chosen must
    # be positive and within the first half of the run.
    spec = load_spec("ward")
    w = choose_warmup(spec, n_pilot=4, seed=0)
    assert 1440.0 <= w <= spec.horizon / 2


def test_mser5_finds_transient() -> None:
    rng = np.random.default_rng(1)
    y = np.concatenate([np.linspace(50, 10, 100), 10 + rng.normal(0, 1, 900)])
    d = mser5(y)
    assert 60 <= d <= 200


def test_primary_care_workload_against_analytic_means() -> None:
    pc = load_spec("primary_care").primary_care
    assert pc is not None
    w = simulate_workload(pc, n_reps=200, days=20, seed=1)
    days = 52 * pc.days_per_week
    lam_v = pc.panel_size * pc.visits_per_patient_year / days
    face = lam_v * sum(v.share * v.minutes.expected() for v in pc.visit_types.values()) / 60
    inbox = (
        sum(
            pc.panel_size * t.per_patient_year / days * t.minutes.expected()
            for t in pc.inbox.values()
        )
        / 60
    )
    # compound Poisson: Var(day) = lam E[S^2]; mean over 4000 days -> SE; 4-SE band
    var_face = (
        lam_v * sum(v.share * v.minutes.second_moment() for v in pc.visit_types.values()) / 3600
    )
    assert abs(w["face_h"].mean() - face) <= 4 * np.sqrt(var_face / w["face_h"].size)
    assert w["inbox_h"].mean() == pytest.approx(inbox, rel=0.02)
    assert w["visits"].mean() == pytest.approx(lam_v, rel=0.02)
    s = workload_summary(pc, n_reps=50, days=10)
    assert 0 <= s.loc["after_hours_share[1]", "mean"] <= 1
