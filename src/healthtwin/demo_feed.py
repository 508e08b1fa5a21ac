"""Synthetic inputs of the live demo: a CGM device stream and an emergency department census.

:func:`device_stream` is the one function the demo (``healthtwin.demo``) draws device
records from. It is the glucose twin's physiological stream
(:func:`healthtwin.care.glucose.stream.stream_patient`): a UVA/Padova virtual patient
(adult#001 by default) simulated at 1-min resolution from 12 h before the demo's start
(``origin``, at the basal steady state) for up to a week, with random meals (3 meals and
snacks a day at clock times counted from the simulation's start: breakfast about 5 h before
the demo's start, lunch about at it), their carbohydrate Observations and the pump's meal
boluses (MedicationAdministration), its body weight and basal rate (MedicationStatement).
Readings, meals and boluses are sent from 6 h before ``origin`` (the backfill) on.

CGM readings are sampled at the wall-clock times asked for (the demo samples more often than
a real CGM's 5 min so that a newcomer sees the twin move within seconds): the simulated
subcutaneous glucose, linearly interpolated between its minutes, plus the Breton & Kovatchev
sensor noise of a Dexcom sensor (``models/physiology/devices.py``, evaluated per minute and
interpolated the same way), clipped to the sensor's range. Times are never compressed: the
reading at wall-clock time t is the patient's glucose at t. Records other than readings are
sent when their minute has passed: those dated at or before ``origin`` with the backfill (a
call whose first time is before ``origin``), the later ones with the live stream. Every
resource is tagged ``synthetic``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
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
CGM_RANGE = (40.0, 400.0)  # mg/dL (Dexcom: 39-400; reported values are clipped to this)
BACKFILL_H = 6.0  # history sent before the demo's start (h)
LEAD_H = 12.0  # simulated before the demo's start (h)
SPAN_MIN = int(LEAD_H * 60) + 7 * 1440  # simulated span (min)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _effective(res: dict[str, Any]) -> datetime:
    when = res.get("effectiveDateTime") or (res.get("effectivePeriod") or {}).get("start")
    return datetime.fromisoformat(str(when).replace("Z", "+00:00"))


class VirtualPatient:
    """A UVA/Padova virtual patient simulated lazily minute by minute from ``start`` (UTC).

    ``glucose(t)`` is the subcutaneous glucose (mg/dL) at any time t >= start, linearly
    interpolated between the simulated minutes; ``noise(t)`` the sensor noise (mg/dL);
    ``records_until(t)`` the stream's records (weight, basal, meals, boluses) dated <= t not
    yet taken, oldest first; meals and boluses before ``send_from`` are not sent (weight and
    basal always are). Deterministic per (patient, seed, start).
    """

    def __init__(
        self,
        patient_id: str,
        start: datetime,
        seed: int,
        patient_name: str = "adult#001",
        minutes: int = SPAN_MIN,
        send_from: datetime | None = None,
    ) -> None:
        from healthtwin.care.glucose.stream import stream_patient
        from healthtwin.models.physiology.devices import CGMSensor

        self.start = start
        self.minutes = minutes
        self.send_from = send_from or start
        # noise=False: the 1-min "readings" are the subcutaneous glucose itself
        self._src = stream_patient(patient_name, start, minutes, seed, patient_id=patient_id,
                                   cgm_every_min=1, include_patient=False, noise=False)  # fmt: skip
        self._gs: list[float] = []
        self._pending: list[tuple[datetime, dict[str, Any]]] = []
        sensor = replace(CGMSensor.named("Dexcom"), sample_time=1.0)
        self._eps = sensor.noise(1, float(minutes), np.random.default_rng([seed, 1]))[0][0]
        self.low, self.high = CGM_RANGE

    def _until_minute(self, k: int) -> bool:
        """Simulate until minute ``k``'s glucose is known; False past the simulated span."""
        while len(self._gs) <= k:
            res = next(self._src, None)
            if res is None:
                return False
            codes = [c.get("code") for c in (res.get("code") or {}).get("coding", [])]
            if res["resourceType"] == "Observation" and CGM_LOINC in codes:
                self._gs.append(float(res["valueQuantity"]["value"]))
            else:
                when = _effective(res)
                header = res["resourceType"] == "MedicationStatement" or res["id"].endswith(
                    "-weight"
                )
                if header or when >= self.send_from:
                    res.setdefault("meta", {})["tag"] = [TAG]
                    self._pending.append((when, res))
        return True

    def minute_of(self, t: datetime) -> float:
        """Minutes since the simulation's start."""
        return (t - self.start).total_seconds() / 60.0

    def covers(self, t: datetime) -> bool:
        """Is ``t`` within the simulated span?"""
        return 0.0 <= self.minute_of(t) < self.minutes - 1

    def glucose(self, t: datetime) -> float:
        """Subcutaneous glucose (mg/dL) at ``t`` (interpolated between simulated minutes)."""
        m = self.minute_of(t)
        k = int(m)
        if not self.covers(t) or not self._until_minute(k + 1):
            raise ValueError(f"{t.isoformat()} is outside the simulated span from "
                             f"{self.start.isoformat()} ({self.minutes} min)")  # fmt: skip
        f = m - k
        return (1.0 - f) * self._gs[k] + f * self._gs[k + 1]

    def noise(self, t: datetime) -> float:
        """Sensor noise (mg/dL) at ``t`` (interpolated between its 1-min samples)."""
        m = self.minute_of(t)
        k = int(m)
        f = m - k
        return float((1.0 - f) * self._eps[k] + f * self._eps[k + 1])

    def reading(self, t: datetime) -> float:
        """A CGM reading at ``t``: glucose + sensor noise, clipped to the sensor range (mg/dL)."""
        return float(np.clip(self.glucose(t) + self.noise(t), self.low, self.high))

    def records_until(self, t: datetime, after: datetime | None = None) -> list[dict[str, Any]]:
        """Records dated in (``after``, ``t``] not yet taken (those <= ``after`` are dropped)."""
        self._until_minute(int(max(self.minute_of(t), 0.0)) + 1)
        out = [r for when, r in self._pending if when <= t and (after is None or when > after)]
        self._pending = [(w, r) for w, r in self._pending if w > t]
        return out


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
    patient_name: str = "adult#001",
) -> Iterator[dict[str, Any]]:
    """Device records of ``patient_id``: a CGM Observation at each time of ``times`` (lazy;
    UTC datetimes, increasing) and the pump's and meal log's records as their minute passes.

    The patient is simulated from ``origin`` − 12 h (``origin`` defaults to the first time);
    the same ``seed`` and ``origin`` give the same patient, so a backfill and a live stream
    continue each other (module docstring). Reading ids are ``cgm-<patient>-<epoch ms>``;
    re-sending a record is idempotent in the store. Ends past the simulated week.
    """
    vp: VirtualPatient | None = None
    backfill = False
    last: datetime | None = None
    for t in times:
        if vp is None:
            origin = origin or t
            vp = VirtualPatient(patient_id, origin - timedelta(hours=LEAD_H), seed, patient_name,
                                send_from=origin - timedelta(hours=BACKFILL_H))  # fmt: skip
            backfill = t < origin
        assert origin is not None
        if not vp.covers(t):
            return
        if backfill:
            yield from vp.records_until(min(t, origin))
        else:
            yield from vp.records_until(t, after=origin)
        ms = int(t.timestamp() * 1000)
        yield cgm_observation(patient_id, f"cgm-{patient_id}-{ms}", t, vp.reading(t))
        last = t
    if vp is not None and backfill and origin is not None and last is not None:
        yield from vp.records_until(origin)  # the backfill's records up to the demo's start


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
