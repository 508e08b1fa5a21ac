"""Compiled (numba) kernels against the NumPy reference path and physical invariants.

Oracles: the NumPy implementation (same scheme: agreement to 1e-9 relative), and properties
that hold for any meal and insulin input (gut mass balance, non-negative masses, every
announced gram eaten at 5 g/min). The agreement with simglucose and solve_ivp of both paths
is in ``test_glucose_physiology.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthtwin.models.physiology import kernels
from healthtwin.models.physiology.bergman import (
    BergmanParams,
    basal_state,
    bergman_step,
    simulate_bergman,
)
from healthtwin.models.physiology.uva_padova import (
    UVAPadovaParams,
    UVAPadovaStepper,
    all_patient_names,
    simulate_uva_padova,
)

pytest.importorskip("numba")


def _close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-9) -> None:
    """|a - b| <= rtol * |b| elementwise, with a floor of rtol * max|b| per trajectory."""
    scale = np.max(np.abs(b), axis=-1, keepdims=True)
    assert np.all(np.abs(a - b) <= rtol * np.maximum(np.abs(b), scale) + 1e-300)


def _scenario(n: int, minutes: int, seed: int, p: UVAPadovaParams) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    meals = np.zeros((n, minutes))
    ins = p.basal_u_per_min[:, None] * rng.uniform(0.5, 1.5, (n, 1)) * np.ones((1, minutes))
    for i in range(n):
        for _ in range(3):
            k = int(rng.integers(0, minutes - 30))
            g = float(rng.uniform(5.0, 120.0))
            meals[i, k] += g
            ins[i, k] += g / p.quest["CR"][i] * rng.uniform(0.3, 2.0)
    return meals, ins


def test_kernel_choice_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTHTWIN_KERNEL", "numpy")
    assert not kernels.use_compiled()
    assert not UVAPadovaStepper(UVAPadovaParams.from_names(["adult#001"])).compiled
    monkeypatch.setenv("HEALTHTWIN_KERNEL", "numba")
    assert kernels.use_compiled()
    monkeypatch.setenv("HEALTHTWIN_KERNEL", "fortran")
    with pytest.raises(ValueError, match="HEALTHTWIN_KERNEL"):
        kernels.use_compiled()


@pytest.mark.parametrize(
    ("hypo_risk", "meal_dose", "substeps", "minutes"),
    [(False, "eaten", 1, 1440), (True, "announced", 2, 480), (True, "eaten", 1, 600)],
)
def test_compiled_uva_padova_matches_numpy_reference(
    hypo_risk: bool, meal_dose: str, substeps: int, minutes: int
) -> None:
    # all 30 patients plus 3 repeats: 33 is not a multiple of the kernel's chunk of lanes
    names = all_patient_names() + ["child#002", "adult#007", "adolescent#001"]
    p = UVAPadovaParams.from_names(names)
    meals, ins = _scenario(p.n, minutes, 5, p)
    kw = dict(hypo_risk=hypo_risk, meal_dose=meal_dose, substeps=substeps, return_states=True)
    fast = simulate_uva_padova(p, meals, ins, kernel="numba", **kw)  # type: ignore[arg-type]
    ref = simulate_uva_padova(p, meals, ins, kernel="numpy", **kw)  # type: ignore[arg-type]
    assert fast.states is not None and ref.states is not None
    _close(fast.bg, ref.bg)
    _close(fast.gsub, ref.gsub)
    _close(fast.states, ref.states)
    np.testing.assert_array_equal(fast.cho, ref.cho)
    assert np.ptp(ref.bg) > 50.0  # the scenario really moved glucose


def test_compiled_stepper_matches_one_call_and_reference() -> None:
    p = UVAPadovaParams.from_names(["adult#004", "child#009", "adolescent#003"])
    meals, ins = _scenario(p.n, 240, 11, p)
    ref = simulate_uva_padova(p, meals, ins, kernel="numpy")
    sim = UVAPadovaStepper(p, kernel="numba")
    gs = [sim.gsub]
    eaten = []
    for k in range(240):
        eaten.append(sim.step(meals[:, k], ins[:, k]))
        gs.append(sim.gsub)
    _close(np.array(gs).T, ref.gsub)
    np.testing.assert_array_equal(np.array(eaten).T, ref.cho)


def _uva_case(draw: st.DrawFn) -> tuple[str, np.ndarray, np.ndarray]:
    name = draw(st.sampled_from(all_patient_names()))
    minutes = 360
    meals = np.zeros(minutes)
    for _ in range(draw(st.integers(0, 3))):
        meals[draw(st.integers(0, 200))] += draw(st.floats(1.0, 150.0))
    p = UVAPadovaParams.from_names([name])
    ins = np.full(minutes, p.basal_u_per_min[0] * draw(st.floats(0.0, 3.0)))
    for _ in range(draw(st.integers(0, 3))):
        ins[draw(st.integers(0, minutes - 1))] += draw(st.floats(0.0, 15.0))
    return name, meals, ins


uva_cases = st.composite(_uva_case)


@settings(max_examples=20, deadline=None)
@given(case=uva_cases(), hypo_risk=st.booleans())
def test_compiled_kernel_conserves_gut_mass_and_stays_non_negative(
    case: tuple[str, np.ndarray, np.ndarray], hypo_risk: bool
) -> None:
    name, meals, ins = case
    p = UVAPadovaParams.from_names([name])
    r = simulate_uva_padova(
        p, meals[None], ins[None], hypo_risk=hypo_risk, return_states=True, kernel="numba"
    )
    assert r.states is not None
    x = r.states[0]
    # every announced gram is eaten at <= 5 g/min, never before it is announced
    assert np.all(r.cho <= 5.0 + 1e-12)
    assert np.all(np.cumsum(r.cho[0]) <= np.cumsum(meals) + 1e-9)
    assert r.cho.sum() == pytest.approx(meals.sum(), abs=1e-9)
    # gut masses and delayed insulin stay non-negative; the guarded states (Gp, Gt, Ip, Il,
    # Isc1, Isc2, Gs) may overshoot zero within one step (large insulin doses drive glucose
    # to zero) but a guarded state below zero never decreases further
    assert np.all(x[[0, 1, 2, 7, 8]] >= -1e-9)
    guarded = x[[3, 4, 5, 9, 10, 11, 12]]
    below = guarded[:, :-1] < 0.0
    assert np.all(np.diff(guarded, axis=1)[below] >= 0.0)
    # gut mass balance: d(Qsto1 + Qsto2 + Qgut)/dt = ingestion - kabs Qgut (mg)
    gut = x[0] + x[1] + x[2]
    absorbed = p["kabs"][0] * np.trapezoid(x[2])
    ingested = 1000.0 * r.cho[0].sum()
    # the trapezoid rule on the 1-min grid errs by ~0.1 % of the meal: kgut steps at every
    # minute of eating (D grows), so Qgut has kinks; 0.5 % still catches any wrong term
    assert abs((gut[-1] - gut[0]) - (ingested - absorbed)) <= 5e-3 * ingested + 1e-6
    ref = simulate_uva_padova(p, meals[None], ins[None], hypo_risk=hypo_risk, kernel="numpy")
    _close(r.gsub, ref.gsub)


@pytest.mark.parametrize("dt", [1.0, 5.0])
def test_compiled_bergman_matches_numpy_reference(dt: float) -> None:
    rng = np.random.default_rng(2)
    n = 37
    p = BergmanParams.population(n, bw=rng.uniform(20.0, 120.0, n), ub=rng.uniform(0.005, 0.03, n))
    p.SI = rng.uniform(1e-4, 1e-3, n)
    p.p1 = rng.uniform(0.003, 0.03, n)
    p.tau_m = rng.uniform(20.0, 80.0, n)
    ins = np.tile(p.ub[:, None], (1, 300))
    cho = np.zeros((n, 300))
    cho[:, 20:30] = rng.uniform(0.0, 8.0, (n, 1))
    ins[:, 20] += rng.uniform(0.0, 8.0, n)
    if dt == 1.0:
        fast = simulate_bergman(p, ins, cho, compiled=True)
        ref = simulate_bergman(p, ins, cho, compiled=False)
        _close(fast, ref)
        assert np.ptp(ref[:, 0]) > 20.0
    else:
        x_fast = x_ref = basal_state(p)
        for k in range(0, 300, 5):
            u = np.stack([ins[:, k], cho[:, k]])
            x_fast = bergman_step(x_fast, u, p, dt, compiled=True)
            x_ref = bergman_step(x_ref, u, p, dt, compiled=False)
            _close(x_fast, x_ref)


def test_compiled_kernel_is_safe_from_several_python_threads() -> None:
    # a threaded caller (e.g. a server) may launch simulations concurrently
    from concurrent.futures import ThreadPoolExecutor

    p = UVAPadovaParams.from_names(all_patient_names()[:12])
    meals, ins = _scenario(p.n, 180, 3, p)
    ref = simulate_uva_padova(p, meals, ins, kernel="numpy").gsub
    with ThreadPoolExecutor(4) as ex:
        outs = list(
            ex.map(lambda _: simulate_uva_padova(p, meals, ins, kernel="numba").gsub, range(8))
        )
    for out in outs:
        _close(out, ref)


def _exp_rel_err(x: float) -> float:
    from healthtwin.models.physiology import _numba_kernels as nk

    ref = math.exp(min(max(x, nk.EXP_MIN), nk.EXP_MAX))
    return abs(nk._exp(x) - ref) / ref


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-80.0, max_value=80.0, allow_nan=False))
def test_hand_written_exp_matches_libm(x: float) -> None:
    """The kernel's vectorisable exp against math.exp: relative error <= 2e-15."""
    assert _exp_rel_err(x) <= 2e-15


@pytest.mark.parametrize(
    "x",
    [
        -80.0,
        80.0,
        0.0,
        -0.0,
        5e-324,
        math.log(2.0) / 2,
        -math.log(2.0) / 2,
        math.nextafter(80.0, 0.0),
        math.nextafter(-80.0, 0.0),
        -700.0,
        -699.9,
        79.99999,
    ],
)
def test_hand_written_exp_at_the_boundaries(x: float) -> None:
    assert _exp_rel_err(x) <= 2e-15


@pytest.mark.parametrize("x", [80.0 + 1e-9, 81.0, 1e300, math.inf, -700.5, -1e300, -math.inf])
def test_hand_written_exp_clips_its_argument(x: float) -> None:
    """Beyond the clip range the value is that at the bound (finite, no overflow)."""
    from healthtwin.models.physiology import _numba_kernels as nk

    bound = nk.EXP_MAX if x > 0 else nk.EXP_MIN
    assert nk._exp(x) == pytest.approx(math.exp(bound), rel=2e-15)
