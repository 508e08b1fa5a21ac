"""CGM sensor and insulin pump models (vectorised over patients).

CGM: the sensor reads subcutaneous glucose Gs (mg/dL; the ~10 min plasma-to-interstitium
delay is the 1/ksc compartment of the physiology model) plus the Breton & Kovatchev (2008)
noise: an AR(1) sequence e_n = PACF (e_{n-1} + v_n), v_n ~ N(0, 1), sampled every 15 min,
passed through the Johnson SU transform  eps = xi + lambda sinh((e - gamma) / delta)  (mg/dL),
interpolated to the sensor sample time, added, and clipped to the sensor range.
Pump: rates are quantised to the pump increment and clipped to its limits (U/min).
Parameter tables are simglucose 0.2.11's (MIT), shipped in ``data/``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.interpolate import CubicSpline

from healthtwin.models.physiology.uva_padova import _data_file

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class CGMSensor:
    """CGM noise model; ``sample_time`` in min, ``low``/``high`` range in mg/dL."""

    name: str = "Dexcom"
    pacf: float = 0.7
    gamma: float = -0.5444
    lam: float = 15.9574
    delta: float = 1.6898
    xi: float = -5.47
    sample_time: float = 3.0
    low: float = 39.0
    high: float = 600.0

    @classmethod
    def named(cls, name: str) -> CGMSensor:
        """Load ``Dexcom``, ``GuardianRT`` or ``Navigator`` from the shipped table."""
        t = _data_file("sensor_params.csv").set_index("Name")
        if name not in t.index:
            raise ValueError(f"sensor: unknown CGM {name!r}; valid: {list(t.index)}")
        r = t.loc[name]
        return cls(
            name,
            float(r.PACF),
            float(r.gamma),
            float(r["lambda"]),
            float(r.delta),
            float(r.xi),
            float(r.sample_time),
            float(r["min"]),
            float(r["max"]),
        )

    def noise(self, n: int, minutes: float, rng: np.random.Generator) -> tuple[F64, F64]:
        """Noise (mg/dL) of shape (n, samples) and its sample times (min) over ``minutes``."""
        n15 = int(np.ceil(minutes / 15.0)) + 2
        e = np.empty((n, n15))
        e[:, 0] = rng.standard_normal(n)
        v = rng.standard_normal((n, n15))
        for j in range(1, n15):
            e[:, j] = self.pacf * (e[:, j - 1] + v[:, j])
        eps = self.xi + self.lam * np.sinh((e - self.gamma) / self.delta)
        t15 = np.arange(n15) * 15.0
        ts = np.arange(0.0, minutes + 1e-9, self.sample_time)
        return CubicSpline(t15, eps, axis=1)(ts), ts

    def measure(
        self, t: F64, gsub: F64, rng: np.random.Generator | None, *, noise: bool = True
    ) -> tuple[F64, F64]:
        """CGM readings (mg/dL) at the sensor sample times; ``gsub`` (n, len(t)) in mg/dL.

        Returns ``(times_min, cgm)``; with ``noise=False`` the reading is Gs clipped to range.
        """
        gsub = np.atleast_2d(np.asarray(gsub, dtype=float))
        ts = np.arange(t[0], t[-1] + 1e-9, self.sample_time)
        idx = np.searchsorted(t, ts)
        g = gsub[:, idx]
        if noise:
            if rng is None:
                raise ValueError("rng: a numpy Generator is required when noise=True")
            eps, _ = self.noise(g.shape[0], float(ts[-1] - ts[0]), rng)
            g = g + eps[:, : g.shape[1]]
        return ts, np.clip(g, self.low, self.high)


@dataclass(frozen=True)
class InsulinPump:
    """Insulin pump: increments in U (bolus) and U/h (basal), limits in U and U/h."""

    name: str = "Insulet"
    inc_bolus: float = 0.05
    max_bolus: float = 30.0
    inc_basal_u_h: float = 0.05
    max_basal_u_h: float = 30.0

    @classmethod
    def named(cls, name: str) -> InsulinPump:
        """Load ``Cozmo`` or ``Insulet`` limits from the shipped table."""
        t = _data_file("pump_params.csv").set_index("Name")
        if name not in t.index:
            raise ValueError(f"pump: unknown pump {name!r}; valid: {list(t.index)}")
        r = t.loc[name]
        return cls(
            name, float(r.inc_bolus), float(r.max_bolus), float(r.inc_basal), float(r.max_basal)
        )

    def bolus(self, units: F64) -> F64:
        """Deliverable bolus (U): rounded to the increment, clipped to [0, max_bolus]."""
        u = np.round(np.asarray(units, dtype=float) / self.inc_bolus) * self.inc_bolus
        return np.clip(u, 0.0, self.max_bolus)

    def basal(self, u_per_min: F64) -> F64:
        """Deliverable basal rate (U/min) from a requested rate (U/min)."""
        uh = np.asarray(u_per_min, dtype=float) * 60.0
        uh = np.round(uh / self.inc_basal_u_h) * self.inc_basal_u_h
        return np.clip(uh, 0.0, self.max_basal_u_h) / 60.0
