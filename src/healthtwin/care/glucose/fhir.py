"""Pure builders turning twin outputs into FHIR R4 resource dicts (no I/O, no store).

Every resource is tagged ``simulated`` (and predictions ``predicted``) in ``meta.tag`` with
the system :data:`TAG_SYSTEM`; ids are deterministic UUID-5s of (kind, model, input hash,
time, content) so writing the same output twice is idempotent. Each builder's output pairs
with :func:`provenance`, which names the model and version and the input hash.

Glucose is in mg/dL (UCUM ``mg/dL``), insulin in UCUM ``[IU]``, probabilities in 1.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from healthtwin.care.glucose.alerts import AlertEvent

TAG_SYSTEM = "https://healthtwin.dev/fhir/CodeSystem/twin-output"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
GLUCOSE_LOINC = ("2339-0", "Glucose [Mass/volume] in Blood")
_NS = uuid.UUID("6f0c3b8e-2a4b-5b7e-9d1c-0e8f6a2b4c7d")


@dataclass(frozen=True)
class ModelRef:
    """The model that produced an output: name, version and the hash of its inputs."""

    name: str
    version: str
    input_hash: str


def input_hash(*parts: Any) -> str:
    """SHA-256 (hex) of the inputs: arrays by dtype, shape and bytes; others as JSON."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _id(kind: str, model: ModelRef, *content: Any) -> str:
    key = json.dumps([kind, model.name, model.version, model.input_hash, *content], default=str)
    return str(uuid.uuid5(_NS, key))


def _meta(*codes: str) -> dict[str, Any]:
    return {"tag": [{"system": TAG_SYSTEM, "code": c, "display": c} for c in codes]}


def _iso(t: datetime) -> str:
    if t.tzinfo is None:
        raise ValueError(f"time {t!r}: must be timezone-aware (FHIR instants need an offset)")
    return t.isoformat()


def _mgdl(v: float) -> dict[str, Any]:
    return {"value": round(float(v), 2), "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}


def forecast_observation(
    patient: str,
    issued: datetime,
    horizon_min: int,
    median_mg_dl: float,
    low_mg_dl: float,
    high_mg_dl: float,
    level: float,
    model: ModelRef,
) -> dict[str, Any]:
    """Observation (status preliminary, tagged predicted + simulated) of forecast glucose.

    ``effectiveDateTime`` = issued + horizon; the prediction interval is in two components.
    """
    if not low_mg_dl <= median_mg_dl <= high_mg_dl:
        raise ValueError(
            f"forecast: need low <= median <= high, got {low_mg_dl}, {median_mg_dl}, {high_mg_dl}"
        )
    eff = issued + timedelta(minutes=horizon_min)
    pct = f"{100 * level:g}%"
    comp = [
        {"code": {"coding": [{"system": TAG_SYSTEM, "code": f"pi-{b}"}],
                  "text": f"{pct} prediction interval {b} bound"},
         "valueQuantity": _mgdl(v)}
        for b, v in (("lower", low_mg_dl), ("upper", high_mg_dl))
    ]  # fmt: skip
    return {
        "resourceType": "Observation",
        "id": _id("obs", model, patient, _iso(issued), horizon_min, median_mg_dl),
        "meta": _meta("predicted", "simulated"),
        "status": "preliminary",
        "code": {
            "coding": [{"system": LOINC, "code": GLUCOSE_LOINC[0], "display": GLUCOSE_LOINC[1]}],
            "text": f"Predicted glucose {horizon_min} min ahead (simulated by {model.name})",
        },
        "subject": {"reference": patient},
        "effectiveDateTime": _iso(eff),
        "issued": _iso(issued),
        "valueQuantity": _mgdl(median_mg_dl),
        "method": {"text": f"{model.name} {model.version} digital-twin forecast"},
        "component": comp,
    }


def hypo_risk_assessment(
    patient: str, issued: datetime, probability: float, horizon_min: int, model: ModelRef
) -> dict[str, Any]:
    """RiskAssessment: probability (1) of glucose < 70 mg/dL within ``horizon_min`` min."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability = {probability} is outside [0, 1]")
    return {
        "resourceType": "RiskAssessment",
        "id": _id("risk", model, patient, _iso(issued), horizon_min, probability),
        "meta": _meta("predicted", "simulated"),
        "status": "preliminary",
        "subject": {"reference": patient},
        "occurrenceDateTime": _iso(issued),
        "method": {"text": f"{model.name} {model.version}"},
        "prediction": [
            {
                "outcome": {"text": "Hypoglycaemia (glucose < 70 mg/dL)"},
                "probabilityDecimal": round(float(probability), 4),
                "whenPeriod": {
                    "start": _iso(issued),
                    "end": _iso(issued + timedelta(minutes=horizon_min)),
                },
            }
        ],
    }


def alert_detected_issue(
    patient: str, start: datetime, event: AlertEvent, model: ModelRef
) -> dict[str, Any]:
    """DetectedIssue (status preliminary) for an alert; ``start`` is the time of t = 0 min."""
    when = start + timedelta(minutes=event.time_min)
    severity = "high" if event.kind == "hypo-predicted" else "moderate"
    return {
        "resourceType": "DetectedIssue",
        "id": _id("issue", model, patient, _iso(when), event.kind),
        "meta": _meta("simulated"),
        "status": "preliminary",
        "severity": severity,
        "code": {"coding": [{"system": TAG_SYSTEM, "code": event.kind}], "text": event.kind},
        "patient": {"reference": patient},
        "identifiedDateTime": _iso(when),
        "detail": event.detail,
    }


def insulin_proposal(
    patient: str, authored: datetime, units: float, reason: str, model: ModelRef
) -> dict[str, Any]:
    """MedicationRequest (intent proposal, status draft) for an insulin dose in [IU]."""
    if not 0.0 <= units <= 100.0:
        raise ValueError(f"units = {units} [IU] is outside the valid range [0, 100] [IU]")
    return {
        "resourceType": "MedicationRequest",
        "id": _id("medreq", model, patient, _iso(authored), units),
        "meta": _meta("simulated"),
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": {"text": "insulin (rapid-acting)"},
        "subject": {"reference": patient},
        "authoredOn": _iso(authored),
        "reasonCode": [{"text": reason}],
        "dosageInstruction": [
            {
                "text": f"{units:.2f} [IU] subcutaneous (twin recommendation, simulated)",
                "doseAndRate": [
                    {"doseQuantity": {"value": round(float(units), 2), "unit": "[IU]",
                                      "system": UCUM, "code": "[IU]"}}
                ],
            }
        ],
    }  # fmt: skip


def bolus_parameters_careplan(
    patient: str, created: datetime, cr: tuple[float, float, float],
    cf: tuple[float, float, float], model: ModelRef,
) -> dict[str, Any]:  # fmt: skip
    """CarePlan (intent proposal) with personalised CR (g/[IU]) and CF (mg/dL/[IU]) ± 95 % CI."""
    desc = (
        f"Carbohydrate ratio {cr[0]:.1f} g/[IU] (95% interval {cr[1]:.1f}-{cr[2]:.1f}); "
        f"correction factor {cf[0]:.1f} mg/dL/[IU] (95% interval {cf[1]:.1f}-{cf[2]:.1f}); "
        f"estimated by {model.name} {model.version} (simulated)"
    )
    return {
        "resourceType": "CarePlan",
        "id": _id("careplan", model, patient, _iso(created), cr, cf),
        "meta": _meta("simulated"),
        "status": "draft",
        "intent": "proposal",
        "subject": {"reference": patient},
        "created": _iso(created),
        "title": "Personalised bolus parameters",
        "description": desc,
    }


def provenance(
    targets: list[dict[str, Any]], recorded: datetime, model: ModelRef,
    inputs: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Provenance naming the model, its version and the input hash for ``targets``."""
    if not targets:
        raise ValueError("provenance: targets must name at least one resource")
    entities = [{"role": "source", "what": {"reference": r}} for r in (inputs or [])]
    entities.append(
        {
            "role": "source",
            "what": {
                "identifier": {
                    "system": "urn:ietf:rfc:6920",
                    "value": f"sha-256;{model.input_hash}",
                },
                "display": "hash of the twin's inputs",
            },
        }
    )
    refs = [f"{t['resourceType']}/{t['id']}" for t in targets]
    return {
        "resourceType": "Provenance",
        "id": _id("prov", model, refs, _iso(recorded)),
        "meta": _meta("simulated"),
        "target": [{"reference": r} for r in refs],
        "recorded": _iso(recorded),
        "activity": {"text": "digital-twin simulation"},
        "agent": [
            {
                "type": {"text": "performer"},
                "who": {"display": f"healthtwin model {model.name} version {model.version}"},
            }
        ],
        "entity": entities,
    }
