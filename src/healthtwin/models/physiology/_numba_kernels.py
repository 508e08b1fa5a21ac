"""numba kernels (imported only when numba is used); see ``kernels`` for the design.

Layout: a thread takes a chunk of ``LANES`` patients (``prange`` over chunks) and advances
them together minute by minute; within each right-hand-side evaluation the loop over the
chunk's lanes is innermost and branch-free (selects), so that LLVM's loop vectoriser turns
it into SIMD code (AVX-512 ``<8 x double>`` on the development machine). That needs every
operation in the lane loop to vectorise: libm's scalar ``exp`` does not (numba has no
vector math library such as SVML here), so the gastric-emptying term uses the hand-written
``_exp`` below, and the S2013 hypo term (libm ``log`` and ``pow``) is computed in its own
loop before the SIMD one. The tanh pair is evaluated as two exp and one division (same
value to ~1e-16 absolute). Measured (benchmarks/glucose.py, docs/PERFORMANCE.md): libm
exp with 8 scalar lanes ~5,500-6,100 patient-days per CPU-second; this layout ~13,000.
``error_model="numpy"``: float division follows IEEE (inf/nan) as in the NumPy path, with
no Python ZeroDivisionError check in the loop.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic
from numpy.typing import NDArray

F64 = NDArray[np.float64]

#: Patients advanced together by one thread (a multiple of the SIMD width). 32 rather than
#: 8: with a trip count of 8 LLVM fully unrolls the lane loop into scalar code instead of
#: vectorising it; 32 measured ~12 % faster than 16 (padding lanes cost little).
LANES = 32
N_CONSTS = 36

_LOG2E = 1.4426950408889634
#: ln 2 split for Cody-Waite range reduction (fdlibm's constants): _LN2_HI has its low 21
#: mantissa bits zero, so n * _LN2_HI is exact for |n| < 2**21.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
#: Clipping range of ``_exp``'s argument (80: exp(80) is finite and tanh(40) is 1 in double
#: precision; -700: 2**n stays a normal number).
EXP_MIN = -700.0
EXP_MAX = 80.0


@intrinsic
def _bits_to_f64(typingctx, bits):  # type: ignore[no-untyped-def]
    """Reinterpret an int64 bit pattern as a float64 (LLVM bitcast; vectorises)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@njit(cache=True, inline="always", error_model="numpy")
def _exp(x: float) -> float:
    """exp(clip(x, EXP_MIN, EXP_MAX)), relative error < 2e-15 (hypothesis-tested).

    Hand-written because libm's ``exp`` is a scalar call that stops LLVM from vectorising
    the lane loop (no SVML with numba here); this one is plain arithmetic and inlines into
    SIMD code. x = n ln2 + r with |r| <= ln2/2 (Cody-Waite), exp(r) by its Taylor
    polynomial of degree 13 in Horner form (truncation < 5e-18 relative), 2**n built from
    its bits.
    """
    x = min(max(x, EXP_MIN), EXP_MAX)
    n = np.floor(x * _LOG2E + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _bits_to_f64((np.int64(n) + 1023) << 52)  # type: ignore[call-arg]


@njit(cache=True, inline="always", error_model="numpy")
def _uva_rhs(x: F64, dx: F64, c: F64, d: F64, u: F64, gut: F64, hypo: bool, hf: F64) -> None:
    """dx/dt of ``LANES`` patients; x, dx (13, LANES), c (N_CONSTS, LANES), gut (5, LANES).

    Same terms and order as ``uva_padova._Consts.rhs``; gut = (2 alpha, 2 beta, b D, d D,
    D > 0); hf (LANES,) the hypo factor of Vmx (written here if ``hypo``, else all 1).
    """
    if hypo:
        # S2013 hypo-risk factor: log and pow are libm calls, kept out of the SIMD loop
        for lane in range(LANES):
            g = max(x[3, lane] / c[33, lane], 1e-6)
            hf[lane] = 1.0
            if g < c[34, lane]:
                fg = np.log(max(g, 60.0)) ** 0.8124 - c[35, lane]
                hf[lane] = 1.0 + 1.44 * (10.0 * fg * fg)
    for lane in range(LANES):
        kmax = c[0, lane]
        q = x[0, lane] + x[1, lane]
        # tanh(za) - tanh(zb) + 2 = 2 + 2 (ea - eb) / ((ea + 1)(eb + 1)), e = exp(2 z):
        # two exp and one division instead of two tanh (absolute error ~1e-16); 2 z is
        # clipped at 80, where tanh is 1 to double precision, so that nothing overflows.
        # Evaluated for every lane (no branch, so that the loop vectorises) and selected.
        ea = _exp(gut[0, lane] * (q - gut[2, lane]))
        eb = _exp(gut[1, lane] * (q - gut[3, lane]))
        kg = c[1, lane] + c[3, lane] * (2.0 + 2.0 * (ea - eb) / ((ea + 1.0) * (eb + 1.0)))
        kgut = kg if gut[4, lane] > 0.0 else kmax
        x0 = x[0, lane]
        x1 = x[1, lane]
        x2 = x[2, lane]
        x3 = x[3, lane]
        x4 = x[4, lane]
        x5 = x[5, lane]
        x6 = x[6, lane]
        x7 = x[7, lane]
        x8 = x[8, lane]
        x9 = x[9, lane]
        x10 = x[10, lane]
        x11 = x[11, lane]
        x12 = x[12, lane]
        kx0 = kmax * x0
        g1 = kgut * x1
        egp = max(c[8, lane] - c[9, lane] * x3 - c[10, lane] * x8, 0.0)
        et = max(x3 - c[13, lane], 0.0)
        tr = c[14, lane] * x3 - c[15, lane] * x4
        vmx_x = c[17, lane] * x6
        vmx_x = vmx_x * hf[lane]  # hf = 1 (exact) unless hypo
        it = x5 * c[27, lane]
        d3 = egp + c[7, lane] * x2 - c[11, lane] - c[12, lane] * et - tr
        d4 = tr - (c[16, lane] + vmx_x) * x4 / (c[18, lane] + x4)
        d5 = c[20, lane] * x9 + c[23, lane] * x10 + c[24, lane] * x11 - c[19, lane] * x5
        d9 = c[21, lane] * x5 - c[22, lane] * x9
        d10 = u[lane] - c[26, lane] * x10
        d11 = c[25, lane] * x10 - c[24, lane] * x11
        d12 = c[31, lane] * (x3 - x12)
        dx[0, lane] = d[lane] - kx0
        dx[1, lane] = kx0 - g1
        dx[2, lane] = g1 - c[2, lane] * x2
        # a state at or below zero does not decrease further (simglucose's guards)
        dx[3, lane] = d3 if x3 >= 0.0 else 0.0
        dx[4, lane] = d4 if x4 >= 0.0 else 0.0
        dx[5, lane] = d5 if x5 >= 0.0 else 0.0
        dx[6, lane] = c[29, lane] * (it - c[28, lane] - x6)
        dx[7, lane] = c[30, lane] * (it - x7)
        dx[8, lane] = c[30, lane] * (x7 - x8)
        dx[9, lane] = d9 if x9 >= 0.0 else 0.0
        dx[10, lane] = d10 if x10 >= 0.0 else 0.0
        dx[11, lane] = d11 if x11 >= 0.0 else 0.0
        dx[12, lane] = d12 if x12 >= 0.0 else 0.0


@njit(cache=True, parallel=True, error_model="numpy")
def uva_run(
    x: F64,
    meal_state: F64,
    consts: F64,
    meals: F64,
    ins: F64,
    substeps: int,
    hypo: bool,
    announced: bool,
    bg: F64,
    gsub: F64,
    eaten: F64,
    states: F64,
    save_states: bool,
) -> None:
    """Advance N patients over T minutes in place (classical RK4, ``substeps`` per minute).

    x (13, N) states; meal_state (5, N) = planned g, last eaten g/min, Qsto at the first
    bite (mg), eaten so far in this meal (g), announced total (g); consts (N_CONSTS, N) in
    ``kernels.UVA_CONSTS`` order; meals (N, T) g, ins (N, T) U/min. Writes bg, gsub
    (N, T+1) mg/dL, eaten (N, T) g/min and, if ``save_states``, states (N, 13, T+1).
    """
    n = x.shape[1]
    n_t = meals.shape[1]
    h = 1.0 / substeps
    h2 = 0.5 * h
    h6 = h / 6.0
    n_chunks = (n + LANES - 1) // LANES
    for ch in prange(n_chunks):
        i0 = ch * LANES
        nl = min(LANES, n - i0)
        xs = np.empty((13, LANES))
        xt = np.empty((13, LANES))
        k1 = np.empty((13, LANES))
        k2 = np.empty((13, LANES))
        k3 = np.empty((13, LANES))
        k4 = np.empty((13, LANES))
        c = np.empty((N_CONSTS, LANES))
        gut = np.zeros((5, LANES))
        dmg = np.zeros(LANES)
        u = np.zeros(LANES)
        hf = np.ones(LANES)
        ms = np.empty((5, LANES))
        for lane in range(LANES):
            i = i0 + min(lane, nl - 1)  # padding lanes repeat the last patient
            for j in range(13):
                xs[j, lane] = x[j, i]
            for j in range(N_CONSTS):
                c[j, lane] = consts[j, i]
            for j in range(5):
                ms[j, lane] = meal_state[j, i]
        for lane in range(nl):
            bg[i0 + lane, 0] = xs[3, lane] / c[33, lane]
            gsub[i0 + lane, 0] = xs[12, lane] / c[33, lane]
            if save_states:
                for j in range(13):
                    states[i0 + lane, j, 0] = xs[j, lane]
        for k in range(n_t):
            for lane in range(LANES):
                i = i0 + min(lane, nl - 1)
                planned = ms[0, lane] + meals[i, k]
                to_eat = min(5.0, planned)
                planned -= to_eat
                if to_eat > 0.0 and ms[1, lane] <= 0.0:
                    ms[2, lane] = xs[0, lane] + xs[1, lane]
                    ms[3, lane] = 0.0
                    ms[4, lane] = to_eat + planned
                ms[3, lane] += to_eat
                ms[1, lane] = to_eat
                ms[0, lane] = planned
                dose = ms[4, lane] if announced else ms[3, lane]
                dbar = ms[2, lane] + 1000.0 * dose
                if dbar > 0.0:
                    gut[0, lane] = 5.0 / (dbar * c[6, lane])
                    gut[1, lane] = 5.0 / (dbar * c[5, lane])
                    gut[2, lane] = c[4, lane] * dbar
                    gut[3, lane] = c[5, lane] * dbar
                    gut[4, lane] = 1.0
                else:
                    gut[4, lane] = 0.0
                dmg[lane] = to_eat * 1000.0
                u[lane] = ins[i, k] * c[32, lane]
            for _s in range(substeps):
                _uva_rhs(xs, k1, c, dmg, u, gut, hypo, hf)
                for j in range(13):
                    for lane in range(LANES):
                        xt[j, lane] = xs[j, lane] + h2 * k1[j, lane]
                _uva_rhs(xt, k2, c, dmg, u, gut, hypo, hf)
                for j in range(13):
                    for lane in range(LANES):
                        xt[j, lane] = xs[j, lane] + h2 * k2[j, lane]
                _uva_rhs(xt, k3, c, dmg, u, gut, hypo, hf)
                for j in range(13):
                    for lane in range(LANES):
                        xt[j, lane] = xs[j, lane] + h * k3[j, lane]
                _uva_rhs(xt, k4, c, dmg, u, gut, hypo, hf)
                for j in range(13):
                    for lane in range(LANES):
                        xs[j, lane] += (
                            k1[j, lane] + (k2[j, lane] + k3[j, lane]) * 2.0 + k4[j, lane]
                        ) * h6
            for lane in range(nl):
                i = i0 + lane
                eaten[i, k] = ms[1, lane]
                bg[i, k + 1] = xs[3, lane] / c[33, lane]
                gsub[i, k + 1] = xs[12, lane] / c[33, lane]
                if save_states:
                    for j in range(13):
                        states[i, j, k + 1] = xs[j, lane]
        for lane in range(nl):
            i = i0 + lane
            for j in range(13):
                x[j, i] = xs[j, lane]
            for j in range(5):
                meal_state[j, i] = ms[j, lane]


@njit(cache=True, inline="always", error_model="numpy")
def _bergman_rhs(
    y: tuple[float, float, float, float, float, float, float, float],
    u: float,
    c: float,
    p: tuple[float, ...],
) -> tuple[float, float, float, float, float, float, float, float]:
    """dx/dt of one Bergman twin; p = (p1, p2, SI, Gb, VG, VI, BW, n, tau_i, tau_m, tau_sc, f,
    Ib). Same terms as ``bergman.bergman_rhs``."""
    g, xa, i, s1, s2, d1, d2, gs = y
    ra = d2 / p[9]
    return (
        -(p[0] + xa) * g + p[0] * p[3] + p[11] * ra / (p[4] * p[6]),
        p[1] * (p[2] * (i - p[12]) - xa),
        1000.0 * s2 / (p[8] * p[5] * p[6]) - p[7] * i,
        u - s1 / p[8],
        (s1 - s2) / p[8],
        1000.0 * c - d1 / p[9],
        (d1 - d2) / p[9],
        (g - gs) / p[10],
    )


@njit(cache=True, inline="always", error_model="numpy")
def _axpy8(
    y: tuple[float, float, float, float, float, float, float, float],
    h: float,
    k: tuple[float, float, float, float, float, float, float, float],
) -> tuple[float, float, float, float, float, float, float, float]:
    return (
        y[0] + h * k[0],
        y[1] + h * k[1],
        y[2] + h * k[2],
        y[3] + h * k[3],
        y[4] + h * k[4],
        y[5] + h * k[5],
        y[6] + h * k[6],
        y[7] + h * k[7],
    )


@njit(cache=True, parallel=True, error_model="numpy")
def bergman_run(
    x: F64,
    ins: F64,
    cho: F64,
    params: tuple[F64, ...],
    dt: float,
    out: F64,
    states: F64,
    save_states: bool,
) -> None:
    """Advance K Bergman twins over T steps of ``dt`` min (classical RK4, G clipped at 0).

    x (8, K) initial states; ins, cho (K, T) in U/min and g/min; params the 13 arrays (K,)
    p1, p2, SI, Gb, VG, VI, BW, n, tau_i, tau_m, tau_sc, f and ub. Writes the final states to
    out (8, K) and, if ``save_states``, all states to states (K, 8, T+1). Scalars only in
    the loop body (no per-twin allocation).
    """
    n_k = x.shape[1]
    n_t = ins.shape[1]
    h2 = 0.5 * dt
    h6 = dt / 6.0
    for k in prange(n_k):
        p = (
            params[0][k],
            params[1][k],
            params[2][k],
            params[3][k],
            params[4][k],
            params[5][k],
            params[6][k],
            params[7][k],
            params[8][k],
            params[9][k],
            params[10][k],
            params[11][k],
            1000.0 * params[12][k] / (params[7][k] * params[5][k] * params[6][k]),  # Ib, mU/L
        )
        y = (x[0, k], x[1, k], x[2, k], x[3, k], x[4, k], x[5, k], x[6, k], x[7, k])
        if save_states:
            for j in range(8):
                states[k, j, 0] = y[j]
        for t in range(n_t):
            u = ins[k, t]
            c = cho[k, t]
            a = _bergman_rhs(y, u, c, p)
            b = _bergman_rhs(_axpy8(y, h2, a), u, c, p)
            e = _bergman_rhs(_axpy8(y, h2, b), u, c, p)
            f = _bergman_rhs(_axpy8(y, dt, e), u, c, p)
            g0 = y[0] + h6 * (a[0] + 2.0 * b[0] + 2.0 * e[0] + f[0])
            y = (
                g0 if g0 >= 0.0 or g0 != g0 else 0.0,
                y[1] + h6 * (a[1] + 2.0 * b[1] + 2.0 * e[1] + f[1]),
                y[2] + h6 * (a[2] + 2.0 * b[2] + 2.0 * e[2] + f[2]),
                y[3] + h6 * (a[3] + 2.0 * b[3] + 2.0 * e[3] + f[3]),
                y[4] + h6 * (a[4] + 2.0 * b[4] + 2.0 * e[4] + f[4]),
                y[5] + h6 * (a[5] + 2.0 * b[5] + 2.0 * e[5] + f[5]),
                y[6] + h6 * (a[6] + 2.0 * b[6] + 2.0 * e[6] + f[6]),
                y[7] + h6 * (a[7] + 2.0 * b[7] + 2.0 * e[7] + f[7]),
            )
            if save_states:
                for j in range(8):
                    states[k, j, t + 1] = y[j]
        for j in range(8):
            out[j, k] = y[j]
