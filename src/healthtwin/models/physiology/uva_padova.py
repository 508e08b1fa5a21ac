"""UVA/Padova S2008 meal–glucose–insulin model (Dalla Man et al. 2007; Kovatchev et al. 2009).

Vectorised over patients: states are held as an array of shape ``(13, N)`` (state first so
that each state is a contiguous row), every parameter is an array of shape ``(N,)``. Time is in
minutes (UCUM ``min``); inputs are piecewise constant over each 1-min interval.

States (units): ``x0, x1`` solid / liquid glucose in the stomach (mg), ``x2`` gut (mg),
``x3`` plasma glucose Gp (mg/kg), ``x4`` tissue glucose Gt (mg/kg), ``x5`` plasma insulin Ip
(pmol/kg), ``x6`` remote insulin action X (pmol/L), ``x7, x8`` delayed insulin I1, Id (pmol/L),
``x9`` liver insulin Il (pmol/kg), ``x10, x11`` subcutaneous insulin Isc1, Isc2 (pmol/kg),
``x12`` subcutaneous glucose Gs expressed as mass (mg/kg; Gs in mg/dL is x12 / Vg).

The 30 public virtual patients are simglucose 0.2.11's parameter set (MIT, Jinyu Xie), shipped
in ``healthtwin/models/physiology/data``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from healthtwin.models.base import check_range
from healthtwin.models.physiology import kernels

Kernel = Literal["numba", "numpy"]

F64 = NDArray[np.float64]

MODEL_NAME = "uva-padova-s2008"
MODEL_VERSION = "0.1.0"
EAT_RATE = 5.0  # g/min, simglucose's chewing rate
N_STATES = 13
#: S2013 hypoglycaemia risk term (Dalla Man et al. 2014): population values.
HYPO_R1 = 1.44
HYPO_R2 = 0.8124
HYPO_GTH = 60.0  # mg/dL

PARAM_NAMES = [
    "BW",
    "Gb",
    "Vg",
    "Ib",
    "Vi",
    "kabs",
    "kmax",
    "kmin",
    "b",
    "d",
    "Vmx",
    "Km0",
    "k2",
    "k1",
    "p2u",
    "m1",
    "m2",
    "m4",
    "m30",
    "ki",
    "kp1",
    "kp2",
    "kp3",
    "f",
    "ke1",
    "ke2",
    "Fsnc",
    "Vm0",
    "kd",
    "ksc",
    "ka1",
    "ka2",
    "u2ss",
]


def _data_file(name: str) -> pd.DataFrame:
    ref = resources.files("healthtwin.models.physiology") / "data" / name
    with resources.as_file(ref) as path:
        return pd.read_csv(path)


def patient_table() -> pd.DataFrame:
    """The 30 virtual patients' parameters (simglucose 0.2.11 ``vpatient_params.csv``)."""
    return _data_file("vpatient_params.csv")


def quest_table() -> pd.DataFrame:
    """Carbohydrate ratio CR (g/U), correction factor CF (mg/dL/U), age (a), TDI (U)."""
    return _data_file("Quest.csv")


def all_patient_names() -> list[str]:
    """Names of the 30 virtual patients, e.g. ``adult#001``."""
    return [str(n) for n in patient_table()["Name"]]


@dataclass
class UVAPadovaParams:
    """Parameters of N virtual patients: ``values[name]`` has shape ``(N,)``."""

    names: list[str]
    values: dict[str, F64]
    x0: F64  # (13, N) initial (basal steady) state
    quest: dict[str, F64] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.names)

    def __getitem__(self, key: str) -> F64:
        return self.values[key]

    @property
    def basal_u_per_min(self) -> F64:
        """Basal insulin keeping the patient at steady state, u2ss·BW/6000 (U/min)."""
        return self.values["u2ss"] * self.values["BW"] / 6000.0

    @classmethod
    def from_names(cls, names: list[str] | tuple[str, ...]) -> UVAPadovaParams:
        """Load named virtual patients (``adult#001`` ... ``child#010``)."""
        if len(names) == 0:
            raise ValueError("patients: give at least one virtual-patient name")
        table = patient_table().set_index("Name")
        quest = quest_table().set_index("Name")
        unknown = [n for n in names if n not in table.index]
        if unknown:
            raise ValueError(
                f"patients: unknown virtual patient(s) {unknown}; valid names are "
                "adolescent#001..010, adult#001..010, child#001..010"
            )
        rows = table.loc[list(names)]
        values = {p: rows[p].to_numpy(dtype=float) for p in PARAM_NAMES}
        x0 = rows[[c for c in table.columns if c.startswith("x0_")]].to_numpy(dtype=float).T
        q = quest.loc[list(names)]
        qv = {c: q[c].to_numpy(dtype=float) for c in ("CR", "CF", "TDI", "Age")}
        return cls(list(names), values, np.ascontiguousarray(x0), qv)

    def tile(self, reps: int) -> UVAPadovaParams:
        """Repeat every patient ``reps`` times (for Monte Carlo / benchmarks)."""
        vals = {k: np.tile(v, reps) for k, v in self.values.items()}
        q = {k: np.tile(v, reps) for k, v in self.quest.items()}
        return UVAPadovaParams(self.names * reps, vals, np.tile(self.x0, (1, reps)), q)


def uva_padova_rhs(
    x: F64,
    p: UVAPadovaParams,
    cho_mg_min: F64,
    insulin_pmol_kg_min: F64,
    dbar_mg: F64,
    *,
    hypo_risk: bool = False,
) -> F64:
    """Right-hand side dx/dt of the S2008 model (units per state, per min).

    ``x`` has shape ``(13, N)``; ``cho_mg_min`` the ingestion rate (mg/min),
    ``insulin_pmol_kg_min`` the subcutaneous insulin infusion (pmol/kg/min) and ``dbar_mg`` the
    amount of the current meal that sets the gastric-emptying nonlinearity (mg), each ``(N,)``.
    The non-negativity guards (a state at or below zero does not decrease further) and the
    clipping of endogenous production at zero follow simglucose 0.2.11.
    """
    v = p.values
    kmax, kmin = v["kmax"], v["kmin"]
    dx = np.empty_like(x)
    qsto = x[0] + x[1]
    pos = dbar_mg > 0
    safe = np.where(pos, dbar_mg, 1.0)
    aa = 5.0 / (2.0 * safe * (1.0 - v["b"]))
    cc = 5.0 / (2.0 * safe * v["d"])
    kgut = kmin + (kmax - kmin) / 2.0 * (
        np.tanh(aa * (qsto - v["b"] * safe)) - np.tanh(cc * (qsto - v["d"] * safe)) + 2.0
    )
    kgut = np.where(pos, kgut, kmax)
    dx[0] = -kmax * x[0] + cho_mg_min
    dx[1] = kmax * x[0] - kgut * x[1]
    dx[2] = kgut * x[1] - v["kabs"] * x[2]
    ra = v["f"] * v["kabs"] * x[2] / v["BW"]
    egp = np.maximum(v["kp1"] - v["kp2"] * x[3] - v["kp3"] * x[8], 0.0)
    et = v["ke1"] * np.maximum(x[3] - v["ke2"], 0.0)
    dx[3] = egp + ra - v["Fsnc"] - et - v["k1"] * x[3] + v["k2"] * x[4]
    vmt = v["Vm0"] + v["Vmx"] * x[6]
    if hypo_risk:
        g = np.maximum(x[3] / v["Vg"], 1e-6)
        gb = v["Gb"]
        gl = np.maximum(g, HYPO_GTH)
        fg = np.log(gl) ** HYPO_R2 - np.log(gb) ** HYPO_R2
        risk = np.where(g >= gb, 0.0, 10.0 * fg**2)
        vmt = v["Vm0"] + v["Vmx"] * x[6] * (1.0 + HYPO_R1 * risk)
    uid = vmt * x[4] / (v["Km0"] + x[4])
    dx[4] = -uid + v["k1"] * x[3] - v["k2"] * x[4]
    dx[5] = -(v["m2"] + v["m4"]) * x[5] + v["m1"] * x[9] + v["ka1"] * x[10] + v["ka2"] * x[11]
    it = x[5] / v["Vi"]
    dx[6] = -v["p2u"] * x[6] + v["p2u"] * (it - v["Ib"])
    dx[7] = -v["ki"] * (x[7] - it)
    dx[8] = -v["ki"] * (x[8] - x[7])
    dx[9] = -(v["m1"] + v["m30"]) * x[9] + v["m2"] * x[5]
    dx[10] = insulin_pmol_kg_min - (v["ka1"] + v["kd"]) * x[10]
    dx[11] = v["kd"] * x[10] - v["ka2"] * x[11]
    dx[12] = -v["ksc"] * x[12] + v["ksc"] * x[3]
    for i in (3, 4, 5, 9, 10, 11, 12):
        dx[i] = np.where(x[i] >= 0.0, dx[i], 0.0)
    return dx


@dataclass
class UVAPadovaResult:
    """Simulated (not observed) trajectories, first axis patients, one column per minute.

    ``bg`` plasma glucose (mg/dL), ``gsub`` subcutaneous glucose (mg/dL), ``cho`` carbohydrate
    actually eaten in each minute (g/min), ``insulin`` infused (U/min), ``t`` time (min).
    ``states`` (N, 13, T+1) only when requested.
    """

    names: list[str]
    t: F64
    bg: F64
    gsub: F64
    cho: F64
    insulin: F64
    states: F64 | None = None
    simulated: bool = True
    model: str = MODEL_NAME
    version: str = MODEL_VERSION


def _as_input(name: str, arr: NDArray[np.float64] | float, n: int, t: int | None) -> F64:
    a = np.asarray(arr, dtype=float)
    if a.ndim == 0:
        if t is None:
            raise ValueError(f"{name}: scalar given but the horizon is unknown")
        a = np.full((n, t), float(a))
    elif a.ndim == 1:
        a = np.broadcast_to(a, (n, a.shape[0])).copy()
    if a.ndim != 2 or a.shape[0] != n:
        raise ValueError(f"{name}: expected shape (patients={n}, minutes), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return a


_GUARDED = np.array([3, 4, 5, 9, 10, 11, 12])


class _Consts:
    """Per-patient constants of the RK4 kernel, precomputed once (same maths as the rhs)."""

    def __init__(self, p: UVAPadovaParams, hypo_risk: bool) -> None:
        v = p.values
        self.p = p
        self.hypo_risk = hypo_risk
        self.kmax, self.kmin, self.kabs = v["kmax"], v["kmin"], v["kabs"]
        self.half_dk = (v["kmax"] - v["kmin"]) / 2.0
        self.b, self.d = v["b"], v["d"]
        self.ra = v["f"] * v["kabs"] / v["BW"]
        self.kp1_fsnc = v["kp1"]
        self.kp2, self.kp3, self.fsnc = v["kp2"], v["kp3"], v["Fsnc"]
        self.ke1, self.ke2, self.k1, self.k2 = v["ke1"], v["ke2"], v["k1"], v["k2"]
        self.vm0, self.vmx, self.km0 = v["Vm0"], v["Vmx"], v["Km0"]
        self.m24, self.m1, self.m2, self.m130 = (
            v["m2"] + v["m4"],
            v["m1"],
            v["m2"],
            v["m1"] + v["m30"],
        )
        self.ka1, self.ka2, self.kd, self.ka1d = v["ka1"], v["ka2"], v["kd"], v["ka1"] + v["kd"]
        self.inv_vi, self.ib, self.p2u, self.ki, self.ksc = (
            1.0 / v["Vi"],
            v["Ib"],
            v["p2u"],
            v["ki"],
            v["ksc"],
        )

    def gut_terms(self, dbar: F64) -> tuple[F64, F64, F64, F64, NDArray[np.bool_]]:
        pos = dbar > 0
        safe = np.where(pos, dbar, 1.0)
        aa = 5.0 / (2.0 * safe * (1.0 - self.b))
        cc = 5.0 / (2.0 * safe * self.d)
        return aa, cc, self.b * safe, self.d * safe, pos

    def rhs(self, x: F64, d: F64, u: F64, gut: tuple[F64, F64, F64, F64, NDArray[np.bool_]]) -> F64:
        if self.hypo_risk:
            aa, cc, bd, dd, pos = gut
            return uva_padova_rhs(x, self.p, d, u, np.where(pos, bd / self.b, 0.0), hypo_risk=True)
        aa, cc, bd, dd, pos = gut
        dx = np.empty_like(x)
        qsto = x[0] + x[1]
        kgut = self.kmin + self.half_dk * (
            np.tanh(aa * (qsto - bd)) - np.tanh(cc * (qsto - dd)) + 2.0
        )
        if not pos.all():
            kgut = np.where(pos, kgut, self.kmax)
        kx0 = self.kmax * x[0]
        dx[0] = d - kx0
        g1 = kgut * x[1]
        dx[1] = kx0 - g1
        ax2 = self.kabs * x[2]
        dx[2] = g1 - ax2
        x3, x4 = x[3], x[4]
        egp = self.kp1_fsnc - self.kp2 * x3 - self.kp3 * x[8]
        np.maximum(egp, 0.0, out=egp)
        et = x3 - self.ke2
        np.maximum(et, 0.0, out=et)
        tr = self.k1 * x3 - self.k2 * x4
        dx[3] = egp + self.ra * x[2] - self.fsnc - self.ke1 * et - tr
        dx[4] = tr - (self.vm0 + self.vmx * x[6]) * x4 / (self.km0 + x4)
        it = x[5] * self.inv_vi
        dx[5] = self.m1 * x[9] + self.ka1 * x[10] + self.ka2 * x[11] - self.m24 * x[5]
        dx[6] = self.p2u * (it - self.ib - x[6])
        dx[7] = self.ki * (it - x[7])
        dx[8] = self.ki * (x[7] - x[8])
        dx[9] = self.m2 * x[5] - self.m130 * x[9]
        dx[10] = u - self.ka1d * x[10]
        dx[11] = self.kd * x[10] - self.ka2 * x[11]
        dx[12] = self.ksc * (x3 - x[12])
        if x[3:6].min() < 0.0 or x[9:13].min() < 0.0:  # views: no copy unless a guard fires
            sub = x[_GUARDED]
            dx[_GUARDED] = np.where(sub >= 0.0, dx[_GUARDED], 0.0)
        return dx


class UVAPadovaStepper:
    """Minute-by-minute simulator of N patients (for closed loop); state ``x`` is (13, N).

    ``step(meal_g, insulin_u_min)`` advances one minute and returns the carbohydrate eaten
    in that minute (g/min). Plasma glucose is ``x[3] / Vg`` and subcutaneous ``x[12] / Vg``
    (mg/dL). Same maths and options as :func:`simulate_uva_padova`; ``kernel`` as there.
    """

    def __init__(
        self,
        params: UVAPadovaParams,
        x0: F64 | None = None,
        *,
        substeps: int = 1,
        hypo_risk: bool = False,
        meal_dose: Literal["eaten", "announced"] = "eaten",
        kernel: Kernel | None = None,
    ) -> None:
        if substeps < 1:
            raise ValueError(f"substeps must be >= 1, got {substeps}")
        if meal_dose not in ("eaten", "announced"):
            raise ValueError(f"meal_dose must be 'eaten' or 'announced', got {meal_dose!r}")
        n = params.n
        self.params = params
        self.x = np.array(params.x0 if x0 is None else x0, dtype=float, copy=True, order="C")
        if self.x.shape != (N_STATES, n):
            raise ValueError(f"x0: expected shape (13, {n}), got {self.x.shape}")
        self.h = 1.0 / substeps
        self.substeps = substeps
        self.hypo_risk = hypo_risk
        self.meal_dose = meal_dose
        self.compiled = _compiled(kernel)
        self.c = _Consts(params, hypo_risk)
        self.to_pmol = 6000.0 / params.values["BW"]
        #: meal bookkeeping (5, N): announced but not yet eaten (g), eaten in the last minute
        #: (g/min), stomach content at the first bite of the current meal (mg), eaten so far
        #: in the current meal (g), the current meal's announced total (g)
        self.meal_state = np.zeros((5, n))
        self.meal_state[2] = self.x[0] + self.x[1]
        self.consts = (
            kernels.uva_consts(params.values, params.values["BW"]) if self.compiled else None
        )

    @property
    def bg(self) -> F64:
        """Plasma glucose (mg/dL), shape (N,)."""
        return np.asarray(self.x[3] / self.params.values["Vg"], dtype=float)

    @property
    def gsub(self) -> F64:
        """Subcutaneous glucose (mg/dL), shape (N,)."""
        return np.asarray(self.x[12] / self.params.values["Vg"], dtype=float)

    def run(
        self, meals_g: F64, insulin_u_min: F64, *, save_states: bool = False
    ) -> tuple[F64, F64, F64, F64 | None]:
        """Advance T minutes with inputs (N, T) in one compiled call.

        Returns bg, gsub (N, T+1) mg/dL, eaten (N, T) g/min and states (N, 13, T+1) or None.
        """
        if self.consts is None:
            raise RuntimeError("run() needs the compiled kernel; use step() otherwise")
        return kernels.uva_run(
            self.x,
            self.meal_state,
            self.consts,
            meals_g,
            insulin_u_min,
            substeps=self.substeps,
            hypo_risk=self.hypo_risk,
            announced=self.meal_dose == "announced",
            save_states=save_states,
        )

    def step(self, meal_g: F64, insulin_u_min: F64) -> F64:
        """Advance one minute; meal announced now (g), insulin (U/min). Returns g/min eaten."""
        n = self.params.n
        meal = np.broadcast_to(np.asarray(meal_g, dtype=float), (n,))
        ins = np.broadcast_to(np.asarray(insulin_u_min, dtype=float), (n,))
        if self.consts is not None:
            _, _, eaten, _ = self.run(meal[:, None], ins[:, None])
            return np.asarray(eaten[:, 0], dtype=float)
        x, c, h, ms = self.x, self.c, self.h, self.meal_state
        planned = ms[0] + meal
        to_eat = np.minimum(EAT_RATE, planned)
        planned -= to_eat
        start = (to_eat > 0) & (ms[1] <= 0)
        if start.any():
            ms[2] = np.where(start, x[0] + x[1], ms[2])
            ms[3] = np.where(start, 0.0, ms[3])
            ms[4] = np.where(start, to_eat + planned, ms[4])
        ms[3] += to_eat
        ms[1] = to_eat
        ms[0] = planned
        dose = ms[3] if self.meal_dose == "eaten" else ms[4]
        gut = c.gut_terms(ms[2] + 1000.0 * dose)
        d = to_eat * 1000.0
        u = ins * self.to_pmol
        for _ in range(self.substeps):
            k1 = c.rhs(x, d, u, gut)
            k2 = c.rhs(x + (0.5 * h) * k1, d, u, gut)
            k3 = c.rhs(x + (0.5 * h) * k2, d, u, gut)
            k4 = c.rhs(x + h * k3, d, u, gut)
            k2 += k3
            k2 *= 2.0
            k1 += k2
            k1 += k4
            k1 *= h / 6.0
            x += k1
        return np.asarray(to_eat, dtype=float)


def _compiled(kernel: Kernel | None) -> bool:
    """Whether to run the compiled kernel: ``kernel`` if given, else ``HEALTHTWIN_KERNEL``."""
    if kernel is None:
        return kernels.use_compiled()
    if kernel == "numpy":
        return False
    if kernel == "numba":
        if not kernels.numba_available():
            raise RuntimeError("kernel='numba' but numba is not installed")
        return True
    raise ValueError(f"kernel must be 'numba', 'numpy' or None, got {kernel!r}")


def simulate_uva_padova(
    params: UVAPadovaParams,
    meals_g: NDArray[np.float64] | float,
    insulin_u_min: NDArray[np.float64] | float,
    *,
    minutes: int | None = None,
    substeps: int = 1,
    hypo_risk: bool = False,
    meal_dose: Literal["eaten", "announced"] = "eaten",
    x0: F64 | None = None,
    return_states: bool = False,
    kernel: Kernel | None = None,
) -> UVAPadovaResult:
    """Simulate N patients for T minutes with a fixed-step classical Runge–Kutta (RK4) solver.

    ``meals_g[i, k]`` is the carbohydrate announced at minute k (g); it is eaten at 5 g/min as
    in simglucose. ``insulin_u_min[i, k]`` is the subcutaneous infusion during minute k (U/min;
    a bolus of B U in one minute is B U/min). ``substeps`` RK4 steps per minute.
    ``meal_dose="eaten"`` reproduces simglucose 0.2.11 (the gastric-emptying dose D grows while
    the meal is eaten); ``"announced"`` uses the whole meal from its first bite (the paper's D).
    ``hypo_risk`` adds the S2013 hypoglycaemia-risk increase of insulin-dependent utilisation.
    ``kernel``: ``"numba"`` (compiled, patients over threads), ``"numpy"`` (the vectorised
    reference) or None (``HEALTHTWIN_KERNEL``, default numba when installed); the two agree
    to rounding (tested to 1e-9 relative).
    """
    n = params.n
    t_in = None if minutes is None else int(minutes)
    if t_in is None:
        for arr in (meals_g, insulin_u_min):
            a = np.asarray(arr)
            if a.ndim >= 1:
                t_in = int(a.shape[-1])
                break
    meals = _as_input("meals_g", meals_g, n, t_in)
    ins = _as_input("insulin_u_min", insulin_u_min, n, meals.shape[1])
    if ins.shape != meals.shape:
        raise ValueError(
            f"insulin_u_min shape {ins.shape} does not match meals_g shape {meals.shape}"
        )
    check_range("meals_g", meals, 0.0, 500.0, "g")
    check_range("insulin_u_min", ins, 0.0, 75.0, "U/min")
    if substeps < 1:
        raise ValueError(f"substeps must be >= 1, got {substeps}")
    T = meals.shape[1]
    v = params.values
    x = np.array(params.x0 if x0 is None else x0, dtype=float, copy=True)
    if x.shape != (N_STATES, n):
        raise ValueError(f"x0: expected shape (13, {n}), got {x.shape}")
    sim = UVAPadovaStepper(
        params, x, substeps=substeps, hypo_risk=hypo_risk, meal_dose=meal_dose, kernel=kernel
    )
    if sim.consts is not None:
        bg, gsub, eaten, states = sim.run(meals, ins, save_states=return_states)
    else:
        vg = v["Vg"]
        bg = np.empty((n, T + 1))
        gsub = np.empty((n, T + 1))
        eaten = np.empty((n, T))
        states = np.empty((n, N_STATES, T + 1)) if return_states else None
        bg[:, 0] = x[3] / vg
        gsub[:, 0] = x[12] / vg
        if states is not None:
            states[:, :, 0] = x.T
        for k in range(T):
            eaten[:, k] = sim.step(meals[:, k], ins[:, k])
            bg[:, k + 1] = sim.x[3] / vg
            gsub[:, k + 1] = sim.x[12] / vg
            if states is not None:
                states[:, :, k + 1] = sim.x.T
    return UVAPadovaResult(
        names=list(params.names),
        t=np.arange(T + 1, dtype=float),
        bg=bg,
        gsub=gsub,
        cho=eaten,
        insulin=ins,
        states=states,
    )


def steady_state_glucose(params: UVAPadovaParams) -> F64:
    """Analytic basal steady state plasma glucose Gp/Vg (mg/dL) of each patient.

    Solves dGp/dt = dGt/dt = 0 at basal insulin (X = 0, Id = Ib) for Gp, Gt:
    Gt = (k1 Gp − Uid(Gt)) / k2 with Uid = Vm0 Gt / (Km0 + Gt); the basal EGP balance
    gives the scalar equation in Gp solved by bisection (vectorised).
    """
    v = params.values
    ib = v["Ib"]

    def resid(gp: F64) -> F64:
        egp = np.maximum(v["kp1"] - v["kp2"] * gp - v["kp3"] * ib, 0.0)
        et = v["ke1"] * np.maximum(gp - v["ke2"], 0.0)
        # k1 Gp - k2 Gt = Vm0 Gt/(Km0+Gt)  -> solve for Gt (quadratic, positive root)
        a = v["k2"]
        bq = v["k2"] * v["Km0"] + v["Vm0"] - v["k1"] * gp
        c = -v["k1"] * gp * v["Km0"]
        gt = (-bq + np.sqrt(bq * bq - 4 * a * c)) / (2 * a)
        return egp - v["Fsnc"] - et - v["k1"] * gp + v["k2"] * gt

    lo = np.full(params.n, 1.0)
    hi = np.full(params.n, 2000.0)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        r = resid(mid)
        lo = np.where(r > 0, mid, lo)
        hi = np.where(r > 0, hi, mid)
    return np.asarray(0.5 * (lo + hi) / v["Vg"], dtype=float)
