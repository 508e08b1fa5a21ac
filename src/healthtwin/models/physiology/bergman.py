"""Bergman minimal model with subcutaneous insulin and gut absorption (identifiable twin).

States, shape ``(8, N)``, time in min:

    dG/dt  = -(p1 + X) G + p1 Gb + f Ra / (VG BW)          G   plasma glucose (mg/dL)
    dX/dt  = -p2 X + p2 SI (I - Ib)                         X   insulin action (/min)
    dI/dt  = 1000 S2 / (tau_i VI BW) - n I                  I   plasma insulin (mU/L)
    dS1/dt = u - S1 / tau_i                                 S1  s.c. insulin depot 1 (U)
    dS2/dt = (S1 - S2) / tau_i                              S2  s.c. insulin depot 2 (U)
    dD1/dt = 1000 c - D1 / tau_m                            D1  gut 1 (mg)
    dD2/dt = (D1 - D2) / tau_m ,  Ra = D2 / tau_m           D2  gut 2 (mg), Ra in mg/min
    dGs/dt = (G - Gs) / tau_sc                              Gs  interstitial glucose (mg/dL)

Inputs: ``u`` insulin (U/min), ``c`` carbohydrate (g/min). Ib = 1000 ub / (n VI BW) is the
insulin at the basal rate ub, so that (G, X) = (Gb, 0) is the basal steady state.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import NDArray

from healthtwin.models.base import check_range
from healthtwin.models.physiology import kernels
from healthtwin.models.physiology.solver import rk4_step

F64 = NDArray[np.float64]
N_STATES = 8
MODEL_NAME = "bergman-minimal-sc"
MODEL_VERSION = "0.1.0"


@dataclass
class BergmanParams:
    """Per-patient parameters, each an array of shape (N,).

    p1 glucose effectiveness (/min), p2 insulin-action decay (/min), SI insulin sensitivity
    (/min per mU/L), Gb basal glucose (mg/dL), VG glucose volume (dL/kg), VI insulin volume
    (L/kg), BW body weight (kg), n insulin clearance (/min), tau_i s.c. insulin time constant
    (min), tau_m meal time constant (min), tau_sc interstitial delay (min), f meal
    bioavailability (1), ub basal insulin (U/min).
    """

    p1: F64
    p2: F64
    SI: F64
    Gb: F64
    VG: F64
    VI: F64
    BW: F64
    n: F64
    tau_i: F64
    tau_m: F64
    tau_sc: F64
    f: F64
    ub: F64

    @classmethod
    def population(cls, n: int, bw: F64 | float = 70.0, ub: F64 | float = 0.0167) -> BergmanParams:
        """Population-typical type 1 values (Bergman 1981; Hovorka 2004 for s.c. kinetics)."""
        one = np.ones(n)
        return cls(
            p1=0.01 * one,
            p2=0.025 * one,
            SI=5e-4 * one,
            Gb=130.0 * one,
            VG=1.6 * one,
            VI=0.12 * one,
            BW=np.broadcast_to(np.asarray(bw, dtype=float), (n,)).copy(),
            n=0.14 * one,
            tau_i=55.0 * one,
            tau_m=40.0 * one,
            tau_sc=10.0 * one,
            f=0.9 * one,
            ub=np.broadcast_to(np.asarray(ub, dtype=float), (n,)).copy(),
        )

    def validate(self) -> None:
        """Raise OutOfRangeError for a physiologically implausible parameter."""
        check_range("p1", self.p1, 0.0, 0.1, "/min")
        check_range("p2", self.p2, 1e-4, 0.5, "/min")
        check_range("SI", self.SI, 0.0, 0.01, "/min/(mU/L)")
        check_range("Gb", self.Gb, 40.0, 400.0, "mg/dL")
        check_range("tau_m", self.tau_m, 5.0, 200.0, "min")
        check_range("tau_i", self.tau_i, 10.0, 200.0, "min")

    def ib(self) -> F64:
        """Basal plasma insulin Ib (mU/L)."""
        return np.asarray(1000.0 * self.ub / (self.n * self.VI * self.BW), dtype=float)

    def take(self, idx: NDArray[np.intp]) -> BergmanParams:
        """Parameters of the patients ``idx`` (e.g. to expand to an ensemble)."""
        return BergmanParams(**{fl.name: getattr(self, fl.name)[idx] for fl in fields(self)})


def basal_state(p: BergmanParams) -> F64:
    """Basal steady state (8, N) at glucose Gb and basal insulin ub."""
    x = np.zeros((N_STATES, p.p1.shape[0]))
    x[0] = p.Gb
    x[2] = p.ib()
    x[3] = p.ub * p.tau_i
    x[4] = p.ub * p.tau_i
    x[7] = p.Gb
    return x


def bergman_rhs(x: F64, u: F64, p: BergmanParams) -> F64:
    """dx/dt for states (8, N); ``u`` = (insulin U/min, carbohydrate g/min), shape (2, N)."""
    g, xa, i, s1, s2, d1, d2, gs = x
    ra = d2 / p.tau_m
    dx = np.empty_like(x)
    dx[0] = -(p.p1 + xa) * g + p.p1 * p.Gb + p.f * ra / (p.VG * p.BW)
    dx[1] = p.p2 * (p.SI * (i - p.ib()) - xa)
    dx[2] = 1000.0 * s2 / (p.tau_i * p.VI * p.BW) - p.n * i
    dx[3] = u[0] - s1 / p.tau_i
    dx[4] = (s1 - s2) / p.tau_i
    dx[5] = 1000.0 * u[1] - d1 / p.tau_m
    dx[6] = (d1 - d2) / p.tau_m
    dx[7] = (g - gs) / p.tau_sc
    return dx


def _params(p: BergmanParams) -> dict[str, F64]:
    return {fl.name: getattr(p, fl.name) for fl in fields(p)}


def bergman_step(
    x: F64, u: F64, p: BergmanParams, dt: float = 1.0, *, compiled: bool | None = None
) -> F64:
    """Advance the states (8, N) by ``dt`` min with inputs (2, N) held constant (RK4).

    ``compiled`` None follows ``HEALTHTWIN_KERNEL`` (the numba kernel when installed); False
    runs the NumPy reference.
    """
    if kernels.use_compiled() if compiled is None else compiled:
        k = x.shape[1]
        uu = np.broadcast_to(np.asarray(u, dtype=float), (2, k))
        out, _ = kernels.bergman_run(
            x, uu[0].reshape(k, 1), uu[1].reshape(k, 1), _params(p), dt, save_states=False
        )
        return out
    nxt = rk4_step(lambda _t, y, uu: bergman_rhs(y, uu, p), 0.0, x, u, dt)
    nxt[0] = np.maximum(nxt[0], 0.0)
    return nxt


def simulate_bergman(
    p: BergmanParams,
    insulin_u_min: F64,
    cho_g_min: F64,
    x0: F64 | None = None,
    *,
    compiled: bool | None = None,
) -> F64:
    """Simulate N patients for T minutes; returns states (N, 8, T+1). Inputs (N, T).

    ``compiled`` as in :func:`bergman_step`.
    """
    ins = np.atleast_2d(np.asarray(insulin_u_min, dtype=float))
    cho = np.atleast_2d(np.asarray(cho_g_min, dtype=float))
    if ins.shape != cho.shape:
        raise ValueError(f"insulin_u_min shape {ins.shape} != cho_g_min shape {cho.shape}")
    check_range("insulin_u_min", ins, 0.0, 75.0, "U/min")
    check_range("cho_g_min", cho, 0.0, 500.0, "g/min")
    x = basal_state(p) if x0 is None else np.array(x0, dtype=float)
    if kernels.use_compiled() if compiled is None else compiled:
        _, states = kernels.bergman_run(x, ins, cho, _params(p), 1.0, save_states=True)
        assert states is not None
        return states
    out = np.empty((ins.shape[0], N_STATES, ins.shape[1] + 1))
    out[:, :, 0] = x.T
    for k in range(ins.shape[1]):
        x = bergman_step(x, np.stack([ins[:, k], cho[:, k]]), p, compiled=False)
        out[:, :, k + 1] = x.T
    return out
