"""Compiled (numba) kernels for the UVA/Padova and Bergman models.

Why hand-written: ``benchmarks/glucose.py`` showed the NumPy path (vectorised over patients,
one array operation per term per RK4 stage) at 536–881 patient-days/s on 2 cores, against the
issue's target of 10,000: every term of every stage is a pass over memory, and a day of one
patient is 5,760 right-hand-side evaluations. These kernels run the same classical RK4 scheme
with the same per-minute input and meal bookkeeping, compiled: UVA/Padova patients in chunks
of 32 advanced together (the chunk's lanes innermost, SIMD, see ``_numba_kernels``), Bergman twins
one per iteration with their states in registers, chunks / twins split over threads
(``numba.prange``; ``set_threads``). The NumPy code in ``uva_padova.py`` and
``bergman.py`` stays the reference and the fallback; the tests hold the two to 1e-9 relative.

Selection: the environment variable ``HEALTHTWIN_KERNEL`` = ``auto`` (default: numba when it
imports), ``numba`` (required: error if missing) or ``numpy`` (the reference path).
Compiled code is cached on disk (``cache=True``); the first call in a fresh checkout compiles
(10-50 s wall on the shared 2-core machine), later processes load the cache (< 1 s).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

#: Column order of the per-patient constant table given to the UVA/Padova kernel.
UVA_CONSTS = (
    "kmax",
    "kmin",
    "kabs",
    "half_dk",
    "b",
    "d",
    "one_minus_b",
    "ra",
    "kp1",
    "kp2",
    "kp3",
    "fsnc",
    "ke1",
    "ke2",
    "k1",
    "k2",
    "vm0",
    "vmx",
    "km0",
    "m24",
    "m1",
    "m2",
    "m130",
    "ka1",
    "ka2",
    "kd",
    "ka1d",
    "inv_vi",
    "ib",
    "p2u",
    "ki",
    "ksc",
    "to_pmol",
    "vg",
    "gb",
    "log_gb_r2",
)

_numba: Any = None
_kernels: dict[str, Callable[..., Any]] = {}
#: one compiled call at a time: numba's fallback threading layer (workqueue, used when
#: OpenMP/TBB are missing) aborts the process on concurrent parallel launches from two
#: Python threads (e.g. a threaded server); each call already uses every kernel thread
_launch = threading.Lock()


def kernel_choice() -> str:
    """The kernel requested by ``HEALTHTWIN_KERNEL`` (``auto``, ``numba`` or ``numpy``)."""
    choice = os.environ.get("HEALTHTWIN_KERNEL", "auto").strip().lower() or "auto"
    if choice not in ("auto", "numba", "numpy"):
        raise ValueError(f"HEALTHTWIN_KERNEL: expected 'auto', 'numba' or 'numpy', got {choice!r}")
    return choice


def numba_available() -> bool:
    """True when numba imports (it is a declared dependency, but the fallback is kept)."""
    global _numba
    if _numba is None:
        try:
            import numba

            _numba = numba
        except ImportError:  # pragma: no cover - numba is in requirements.lock
            _numba = False
    return _numba is not False


def use_compiled() -> bool:
    """Whether the compiled kernels are used now (reads ``HEALTHTWIN_KERNEL`` each call)."""
    choice = kernel_choice()
    if choice == "numpy":
        return False
    ok = numba_available()
    if choice == "numba" and not ok:
        raise RuntimeError("HEALTHTWIN_KERNEL=numba but numba is not installed")
    return ok


def set_threads(n: int) -> None:
    """Use ``n`` threads in the compiled kernels (no-op without numba)."""
    if numba_available():
        _numba.set_num_threads(int(n))


def _build() -> None:
    """Import (compile, or load from the on-disk cache) the kernels on first use."""
    if _kernels:
        return
    if not numba_available():
        raise RuntimeError("the compiled kernels need numba; set HEALTHTWIN_KERNEL=numpy")
    from healthtwin.models.physiology import _numba_kernels as nk

    _kernels["uva_run"] = nk.uva_run
    _kernels["bergman_run"] = nk.bergman_run


def uva_consts(values: dict[str, F64], bw: F64) -> F64:
    """Per-patient constant table (len(UVA_CONSTS), N) from UVA/Padova parameter arrays."""
    v = values
    cols = {
        "kmax": v["kmax"],
        "kmin": v["kmin"],
        "kabs": v["kabs"],
        "half_dk": (v["kmax"] - v["kmin"]) / 2.0,
        "b": v["b"],
        "d": v["d"],
        "one_minus_b": 1.0 - v["b"],
        "ra": v["f"] * v["kabs"] / v["BW"],
        "kp1": v["kp1"],
        "kp2": v["kp2"],
        "kp3": v["kp3"],
        "fsnc": v["Fsnc"],
        "ke1": v["ke1"],
        "ke2": v["ke2"],
        "k1": v["k1"],
        "k2": v["k2"],
        "vm0": v["Vm0"],
        "vmx": v["Vmx"],
        "km0": v["Km0"],
        "m24": v["m2"] + v["m4"],
        "m1": v["m1"],
        "m2": v["m2"],
        "m130": v["m1"] + v["m30"],
        "ka1": v["ka1"],
        "ka2": v["ka2"],
        "kd": v["kd"],
        "ka1d": v["ka1"] + v["kd"],
        "inv_vi": 1.0 / v["Vi"],
        "ib": v["Ib"],
        "p2u": v["p2u"],
        "ki": v["ki"],
        "ksc": v["ksc"],
        "to_pmol": 6000.0 / bw,
        "vg": v["Vg"],
        "gb": v["Gb"],
        "log_gb_r2": np.log(v["Gb"]) ** 0.8124,
    }
    return np.ascontiguousarray(np.vstack([cols[k] for k in UVA_CONSTS]), dtype=np.float64)


def uva_run(
    x: F64,
    meal_state: F64,
    consts: F64,
    meals: F64,
    ins: F64,
    *,
    substeps: int,
    hypo_risk: bool,
    announced: bool,
    save_states: bool,
) -> tuple[F64, F64, F64, F64 | None]:
    """Run the compiled UVA/Padova kernel; ``x`` and ``meal_state`` are updated in place.

    Returns ``(bg, gsub, eaten, states)`` as documented in the kernel.
    """
    _build()
    n, n_t = meals.shape
    bg = np.empty((n, n_t + 1))
    gsub = np.empty((n, n_t + 1))
    eaten = np.empty((n, n_t))
    states = np.empty((n, 13, n_t + 1)) if save_states else np.empty((1, 13, 1))
    with _launch:
        _kernels["uva_run"](
            x,
            meal_state,
            consts,
            np.ascontiguousarray(meals, dtype=np.float64),
            np.ascontiguousarray(ins, dtype=np.float64),
            int(substeps),
            bool(hypo_risk),
            bool(announced),
            bg,
            gsub,
            eaten,
            states,
            bool(save_states),
        )
    return bg, gsub, eaten, (states if save_states else None)


#: Parameter order of the Bergman kernel (``BergmanParams`` field names).
BERGMAN_PARAMS = (
    "p1", "p2", "SI", "Gb", "VG", "VI", "BW", "n", "tau_i", "tau_m", "tau_sc", "f", "ub",
)  # fmt: skip


def bergman_run(
    x: F64, ins: F64, cho: F64, params: dict[str, F64], dt: float, *, save_states: bool
) -> tuple[F64, F64 | None]:
    """Run the compiled Bergman kernel over inputs (K, T); ``x`` (8, K) is not modified.

    Returns the final states (8, K) and, with ``save_states``, all states (K, 8, T+1).
    """
    _build()
    k, n_t = ins.shape
    cols = tuple(
        np.ascontiguousarray(np.broadcast_to(params[name], (k,)), dtype=np.float64)
        for name in BERGMAN_PARAMS
    )
    out = np.empty((8, k))
    states = np.empty((k, 8, n_t + 1)) if save_states else np.empty((1, 8, 1))
    with _launch:
        _kernels["bergman_run"](
            np.ascontiguousarray(x, dtype=np.float64),
            np.ascontiguousarray(ins, dtype=np.float64),
            np.ascontiguousarray(cho, dtype=np.float64),
            cols,
            float(dt),
            out,
            states,
            bool(save_states),
        )
    return out, (states if save_states else None)
