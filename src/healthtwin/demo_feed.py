"""Synthetic inputs of the live demo: a CGM device stream and an emergency department census.

:func:`device_stream` is the one function the demo (``healthtwin.demo``) draws device
readings from. It is a small stand-in: glucose (mg/dL) = a baseline with a slow daily wave,
plus a gamma-shaped excursion after each meal (random times and sizes from ``seed``), plus
AR(1) sensor noise, clipped to a CGM's range (40-400 mg/dL). It is not physiology; the glucose
twin's UVA/Padova device stream (``care/glucose/stream.py``, branch ``glucose-thread``) is
meant to replace it behind the same signature. Every resource is tagged ``synthetic``.

Readings are sampled at the wall-clock times asked for (the demo samples more often than a
real CGM's 5 min so that a newcomer sees the twin move within seconds); values depend only on
the time and the seed, so the series is smooth whatever the sampling.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

CGM_LOINC = "99504-3"  # Glucose [Mass/volume] in Interstitial fluid
UCUM = "http://unitsofmeasure.org"
TAG = {
    "system": "https://healthtwin.dev/fhir/data-origin",
    "code": "synthetic",
    "display": "synthetic demo data (healthtwin.demo_feed)",
}
CGM_RANGE = (40.0, 400.0)  # mg/dL


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class GlucoseCurve:
    """Glucose (mg/dL) as a function of time for one synthetic patient (deterministic per seed)."""

    def __init__(self, seed: int, origin: datetime) -> None:
        rng = np.random.default_rng(seed)
        self.origin = origin
        self.base = 105.0 + 10.0 * rng.standard_normal()
        # meals every 3-6 h from 2 days before to 2 days after the origin (h, mg/dL peak)
        t = -48.0
        meals: list[tuple[float, float]] = []
        while t < 48.0:
            meals.append((t, float(rng.uniform(55.0, 120.0))))
            t += float(rng.uniform(3.0, 6.0))
        self.meals = meals
        self.tau_h = 0.75  # time to peak after a meal (h)
        self.noise_sd = 4.0  # sensor noise (mg/dL)
        self.rho_per_min = 0.9  # AR(1) correlation of the noise per minute
        self._rng = rng
        self._noise = 0.0
        self._last: float | None = None

    def mean(self, t: datetime) -> float:
        """Noise-free glucose at ``t`` (mg/dL)."""
        h = (t - self.origin).total_seconds() / 3600.0
        g = self.base + 12.0 * math.sin(2 * math.pi * h / 24.0)
        for t0, amp in self.meals:
            x = (h - t0) / self.tau_h
            if 0.0 < x < 12.0:
                g += amp * x * math.exp(1.0 - x)
        return g

    def read(self, t: datetime) -> float:
        """A sensor reading at ``t`` (mg/dL): mean + AR(1) noise, clipped to the CGM range."""
        s = (t - self.origin).total_seconds() / 60.0
        dt = 1.0 if self._last is None else max(s - self._last, 1e-3)
        rho = self.rho_per_min**dt
        self._noise = rho * self._noise + math.sqrt(1 - rho * rho) * self.noise_sd * float(
            self._rng.standard_normal()
        )
        self._last = s
        return float(np.clip(self.mean(t) + self._noise, *CGM_RANGE))


def cgm_observation(patient_id: str, obs_id: str, when: datetime, mg_dl: float) -> dict[str, Any]:
    """A FHIR R4 CGM Observation (LOINC 99504-3, mg/dL, UCUM), tagged synthetic."""
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "meta": {"tag": [TAG]},
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {
            "coding": [
                {
                    "system": "http://loinc.org",
                    "code": CGM_LOINC,
                    "display": "Glucose [Mass/volume] in Interstitial fluid",
                }
            ],
            "text": "CGM glucose",
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": _iso(when),
        "valueQuantity": {
            "value": round(mg_dl, 1),
            "unit": "mg/dL",
            "system": UCUM,
            "code": "mg/dL",
        },
        "device": {"display": "synthetic CGM (healthtwin demo)"},
    }


def demo_patient(patient_id: str, name: str = "Demo CGM") -> dict[str, Any]:
    """The synthetic patient the device stream belongs to."""
    family, _, given = name.partition(" ")
    return {
        "resourceType": "Patient",
        "id": patient_id,
        "meta": {"tag": [TAG]},
        "name": [{"family": given or family, "given": [family] if given else []}],
        "gender": "female",
        "birthDate": "1980-04-01",
    }


def device_stream(
    patient_id: str,
    times: Iterator[datetime],
    seed: int = 0,
    origin: datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """CGM Observations of ``patient_id`` at each time of ``times`` (lazy; UTC datetimes).

    The swappable source of the demo's device readings (see the module docstring). Ids are
    ``cgm-<patient>-<epoch ms>``: re-sending a reading is idempotent in the store.
    """
    curve: GlucoseCurve | None = None
    for t in times:
        if curve is None:
            curve = GlucoseCurve(seed, origin or t)
        ms = int(t.timestamp() * 1000)
        yield cgm_observation(patient_id, f"cgm-{patient_id}-{ms}", t, curve.read(t))


def backfill_times(end: datetime, hours: float, step_min: float = 5.0) -> Iterator[datetime]:
    """Every ``step_min`` min over the ``hours`` before ``end`` (oldest first, ``end`` excluded)."""
    n = int(hours * 60 / step_min)
    for i in range(n, 0, -1):
        yield end - timedelta(minutes=i * step_min)


def ed_census(
    org_id: str, now: datetime, n_waiting: int = 9, n_cubicles: int = 10, seed: int = 0
) -> list[dict[str, Any]]:
    """An emergency department as FHIR: Organization, Locations, active Encounters.

    Locations are named after stations of the bundled ``ed`` spec (``waiting room`` maps to the
    first step, ``cubicles`` to treatment; operations/store_link.py); waiting patients are
    ``arrived``, patients in a cubicle are ``in-progress``. Arrival times are spread over the
    last hours (minutes before ``now``, seeded).
    """
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = [
        {
            "resourceType": "Organization",
            "id": org_id,
            "meta": {"tag": [TAG]},
            "name": "Demo Emergency Department",
            "type": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                            "code": "prov",
                        }
                    ]
                }
            ],
        },
        {
            "resourceType": "Location",
            "id": f"{org_id}-waiting",
            "meta": {"tag": [TAG]},
            "name": "ED waiting room",
            "managingOrganization": {"reference": f"Organization/{org_id}"},
        },
        {
            "resourceType": "Location",
            "id": f"{org_id}-cubicles",
            "meta": {"tag": [TAG]},
            "name": "ED cubicles",
            "managingOrganization": {"reference": f"Organization/{org_id}"},
        },
    ]
    for i in range(n_waiting + n_cubicles):
        waiting = i < n_waiting
        arrived = now - timedelta(minutes=float(rng.uniform(5, 240)))
        since = arrived if waiting else arrived + (now - arrived) * float(rng.uniform(0.2, 0.8))
        loc = f"Location/{org_id}-{'waiting' if waiting else 'cubicles'}"
        out.append(
            {
                "resourceType": "Encounter",
                "id": f"{org_id}-enc-{i:03d}",
                "meta": {"tag": [TAG]},
                "status": "arrived" if waiting else "in-progress",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "EMER",
                },
                "serviceProvider": {"reference": f"Organization/{org_id}"},
                "period": {"start": _iso(arrived)},
                "location": [{"location": {"reference": loc}, "period": {"start": _iso(since)}}],
            }
        )
    return out
