"""Synthetic device stream: FHIR R4 records of a simulated patient (UVA/Padova + CGM noise).

:func:`stream_patient` simulates one UVA/Padova virtual patient minute by minute and yields,
in time order, the FHIR R4 resources a CGM, a pump and a meal log would send:

* ``Patient`` (identifier = the virtual-patient name) and a body-weight ``Observation`` (kg);
* the pump's basal rate as a ``MedicationStatement`` (insulin, ``rateQuantity`` in [IU]/h);
* a CGM reading every ``cgm_every_min`` min: ``Observation`` LOINC 99504-3, mg/dL, the
  subcutaneous glucose plus the Breton & Kovatchev sensor noise, clipped to the sensor range;
* each meal: ``Observation`` LOINC 9059-7 (carbohydrate, g) and its bolus as a
  ``MedicationAdministration`` (insulin, ``dosage.dose`` in [IU]): meal/CR plus a correction
  (CGM − 140)/CF when CGM > 150 mg/dL (simglucose's basal-bolus rule), pump-rounded.

Meals are :func:`healthtwin.care.glucose.control.random_meal_scenario` (3 meals and snacks per
day). Everything is tagged ``synthetic`` (system :data:`codes.DATA_ORIGIN_SYSTEM`): simulated
data standing in for a patient's measurements, so the twin reads it as input (twin outputs
carry a different tag system and are never read back). Ids are deterministic, so re-sending
the same stream is idempotent in the store. The generator is lazy: a live demo can pace it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from healthtwin.care.glucose import codes as C
from healthtwin.care.glucose.control import random_meal_scenario
from healthtwin.models.physiology.devices import CGMSensor, InsulinPump
from healthtwin.models.physiology.uva_padova import UVAPadovaParams, UVAPadovaStepper

MAX_MINUTES = 60 * 24 * 60  # 60 days


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_patient_id(patient_name: str, seed: int) -> str:
    """FHIR id of a simulated patient, e.g. ``vp-adult-001-s1`` for adult#001, seed 1."""
    return f"vp-{patient_name.replace('#', '-')}-s{seed}"


def _meta() -> dict[str, Any]:
    return {
        "tag": [
            {
                "system": C.DATA_ORIGIN_SYSTEM,
                "code": "synthetic",
                "display": "synthetic data (simulated UVA/Padova virtual patient)",
            }
        ]
    }


def _insulin_concept(what: str) -> dict[str, Any]:
    return {
        "coding": [{"system": C.SNOMED, "code": "67866001", "display": "Insulin (substance)"}],
        "text": f"insulin, rapid-acting ({what})",
    }


def _qty(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": C.UCUM, "code": unit}


def stream_patient(
    patient_name: str,
    start: datetime,
    minutes: int,
    seed: int = 0,
    *,
    patient_id: str | None = None,
    sensor: str = "Dexcom",
    cgm_every_min: int = 5,
    include_patient: bool = True,
    first_minute: int = 0,
    noise: bool = True,
) -> Iterator[dict[str, Any]]:
    """FHIR R4 resources (dicts) of a simulated patient over ``minutes`` min from ``start``.

    ``start`` must be timezone-aware. ``first_minute`` skips the resources before that minute
    (the simulation still runs from 0), so a stream can be sent in pieces: pieces
    ``[0, a)`` and ``[a, b)`` together equal ``[0, b)`` for the same seed (the header
    resources come with the piece that has ``first_minute == 0``). ``noise=False`` reports
    the subcutaneous glucose itself (clipped to the sensor range).
    """
    if start.tzinfo is None:
        raise ValueError(f"start {start!r}: must be timezone-aware (e.g. 2026-01-01T00:00Z)")
    if not 0 < minutes <= MAX_MINUTES:
        raise ValueError(f"minutes = {minutes} is outside (0, {MAX_MINUTES}] min")
    if not 1 <= cgm_every_min <= 60:
        raise ValueError(f"cgm_every_min = {cgm_every_min} is outside [1, 60] min")
    if not 0 <= first_minute < minutes:
        raise ValueError(f"first_minute = {first_minute} is outside [0, {minutes}) min")
    params = UVAPadovaParams.from_names([patient_name])
    pid = patient_id or default_patient_id(patient_name, seed)
    subject = {"reference": f"Patient/{pid}"}
    rng = np.random.default_rng(seed)
    days = -(-minutes // 1440)
    meals = random_meal_scenario(1, days, rng)[0, :minutes]
    cgm_sensor = replace(CGMSensor.named(sensor), sample_time=float(cgm_every_min))
    eps_all, _ = cgm_sensor.noise(1, float(minutes), rng)
    pump = InsulinPump.named("Insulet")
    basal = float(pump.basal(params.basal_u_per_min)[0])  # U/min, deliverable
    basal_u_h = round(basal * 60.0, 4)
    cr, cf = float(params.quest["CR"][0]), float(params.quest["CF"][0])
    bw = float(params["BW"][0])
    sim = UVAPadovaStepper(params)
    last_cgm = float(sim.gsub[0])

    if first_minute == 0:
        if include_patient:
            yield {
                "resourceType": "Patient",
                "id": pid,
                "meta": _meta(),
                "identifier": [
                    {"system": "https://healthtwin.dev/virtual-patient", "value": patient_name}
                ],
                "name": [{"text": f"Virtual patient {patient_name} (simulated)"}],
            }
        yield {
            "resourceType": "Observation",
            "id": f"{pid}-weight",
            "meta": _meta(),
            "status": "final",
            "code": {"coding": [{"system": C.LOINC, "code": "29463-7", "display": "Body weight"}]},
            "subject": subject,
            "effectiveDateTime": _iso(start),
            "valueQuantity": _qty(round(bw, 2), "kg"),
        }
        yield {
            "resourceType": "MedicationStatement",
            "id": f"{pid}-basal",
            "meta": _meta(),
            "status": "active",
            "medicationCodeableConcept": _insulin_concept("pump basal"),
            "subject": subject,
            "effectivePeriod": {"start": _iso(start)},
            "dosage": [
                {
                    "text": f"{basal_u_h:g} [IU]/h continuous subcutaneous infusion",
                    "doseAndRate": [{"rateQuantity": _qty(basal_u_h, C.INSULIN_RATE_UNIT)}],
                }
            ],
        }
    for k in range(minutes):
        when = start + timedelta(minutes=k)
        emit = k >= first_minute
        if k % cgm_every_min == 0:
            j = k // cgm_every_min
            eps = float(eps_all[0, j]) if noise else 0.0
            reading = float(np.clip(sim.gsub[0] + eps, cgm_sensor.low, cgm_sensor.high))
            last_cgm = reading
            if emit:
                yield {
                    "resourceType": "Observation",
                    "id": f"{pid}-cgm-{k:06d}",
                    "meta": _meta(),
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/"
                                    "observation-category",
                                    "code": "laboratory",
                                }
                            ]
                        }
                    ],
                    "code": {
                        "coding": [
                            {
                                "system": C.LOINC,
                                "code": "99504-3",
                                "display": C.CGM_CODES["99504-3"],
                            }
                        ]
                    },
                    "subject": subject,
                    "effectiveDateTime": _iso(when),
                    "valueQuantity": _qty(round(reading, 1), C.GLUCOSE_UNIT),
                    "device": {"display": f"{cgm_sensor.name} CGM (simulated)"},
                }
        meal = float(meals[k])
        bolus = 0.0
        if meal > 0:
            corr = (last_cgm - 140.0) / cf if last_cgm > 150.0 else 0.0
            bolus = float(pump.bolus(np.array([meal / cr + corr]))[0])
            if emit:
                yield {
                    "resourceType": "Observation",
                    "id": f"{pid}-carbs-{k:06d}",
                    "meta": _meta(),
                    "status": "final",
                    "code": {
                        "coding": [
                            {"system": C.LOINC, "code": "9059-7", "display": C.CARB_CODES["9059-7"]}
                        ]
                    },
                    "subject": subject,
                    "effectiveDateTime": _iso(when),
                    "valueQuantity": _qty(round(meal, 1), C.CARB_UNIT),
                }
                if bolus > 0:
                    yield {
                        "resourceType": "MedicationAdministration",
                        "id": f"{pid}-bolus-{k:06d}",
                        "meta": _meta(),
                        "status": "completed",
                        "medicationCodeableConcept": _insulin_concept("meal bolus"),
                        "subject": subject,
                        "effectiveDateTime": _iso(when),
                        "dosage": {
                            "text": "meal bolus (simulated basal-bolus rule)",
                            "dose": _qty(round(bolus, 2), C.INSULIN_UNIT),
                        },
                    }
        sim.step(np.array([meal]), np.array([basal + bolus]))


def to_ndjson(resources: Iterable[dict[str, Any]]) -> Iterator[str]:
    """One minified JSON line per resource (FHIR Bulk Data NDJSON), with newline."""
    for r in resources:
        yield json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n"


def to_bundle(resources: Iterable[dict[str, Any]], kind: str = "collection") -> dict[str, Any]:
    """A ``collection`` or ``transaction`` Bundle (PUT Type/id) of the resources."""
    if kind not in ("collection", "transaction"):
        raise ValueError(f"bundle type must be 'collection' or 'transaction', got {kind!r}")
    entries = []
    for r in resources:
        e: dict[str, Any] = {"resource": r}
        if kind == "transaction":
            e["request"] = {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}
        entries.append(e)
    return {"resourceType": "Bundle", "type": kind, "entry": entries}
