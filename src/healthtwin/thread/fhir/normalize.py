"""FHIR R4 resource -> the twin's typed values, references and identifiers.

This is the translation half of the digital thread: the twin layer knows nothing of FHIR, it
receives :class:`healthtwin.twin.model.Fact` values (code, value with UCUM unit, effective time,
status) and reference/identifier rows. Only what the platform reasons about becomes a fact; every
resource, modelled or not, is stored whole (see ``ingest``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from healthtwin.thread.terms.codes import (
    CANONICAL_UNITS,
    LOINC,
    MOLAR_MASS_G_PER_MOL,
    UCUM,
    normalise_system,
)
from healthtwin.thread.terms.units import UnitError, conversion, is_valid_ucum
from healthtwin.twin.model import Fact

# the string body unrolled ([^"\\]*(?:\\.[^"\\]*)*): same language as (?:[^"\\]|\\.)*, 3x faster
REFERENCE_RE = re.compile(r'"reference"\s*:\s*"([^"\\]*(?:\\.[^"\\]*)*)"')
ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
SUBJECT_KEYS = ("subject", "patient", "beneficiary")

# Resource types whose entries carry an "effective" point for facts, in order of preference.
EFFECTIVE_KEYS = (
    "effectiveDateTime",
    "effectiveInstant",
    "effectivePeriod",
    "occurrenceDateTime",
    "onsetDateTime",
    "onsetPeriod",
    "performedDateTime",
    "performedPeriod",
    "authoredOn",
    "dateAsserted",
    "recordedDate",
    "issued",
    "date",
)


class FhirTimeError(ValueError):
    """A FHIR date/dateTime/instant that cannot be read."""


def parse_time(value: Any) -> datetime | None:
    """FHIR date, dateTime or instant -> aware UTC datetime (partial dates: period start)."""
    if value is None:
        return None
    if isinstance(value, dict):  # Period
        return parse_time(value.get("start") or value.get("end"))
    if not isinstance(value, str):
        raise FhirTimeError(f"{value!r} is not a FHIR date/dateTime")
    n = len(value)
    try:
        if n == 4:
            dt = datetime(int(value), 1, 1, tzinfo=UTC)
        elif n == 7:
            dt = datetime(int(value[:4]), int(value[5:7]), 1, tzinfo=UTC)
        else:
            dt = datetime.fromisoformat(value)
            dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    except ValueError as exc:
        raise FhirTimeError(f"{value!r} is not a FHIR date/dateTime: {exc}") from None
    return dt


def first_coding(cc: Any) -> tuple[str, str, str | None]:
    """(system, code, display) of a CodeableConcept, preferring LOINC, then SNOMED CT."""
    if not isinstance(cc, dict):
        return ("", "", None)
    codings = cc.get("coding") or []
    best = None
    for c in codings:
        if not isinstance(c, dict) or not c.get("code"):
            continue
        sys_ = normalise_system(c.get("system"))
        if best is None or (sys_ == LOINC and best[0] != LOINC):
            best = (sys_, str(c["code"]), c.get("display"))
    if best is None:
        text = cc.get("text")
        return ("urn:healthtwin:text", str(text), text) if text else ("", "", None)
    return best


def references(text: str) -> list[str]:
    """Every Reference.reference string in a resource's original JSON text (C-speed regex)."""
    return [m.replace('\\"', '"') for m in REFERENCE_RE.findall(text)]


def subject_of(obj: dict[str, Any]) -> str | None:
    """The patient reference a resource is about (subject / patient / beneficiary)."""
    if obj.get("resourceType") == "Patient":
        return None
    for key in SUBJECT_KEYS:
        ref = obj.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            return str(ref["reference"])
    return None


def identifiers(obj: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for ident in obj.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("value") is not None:
            out.append((str(ident.get("system") or ""), str(ident["value"])))
    return out


def quantity_fact(q: dict[str, Any], system: str, code: str) -> tuple[dict[str, Any], str | None]:
    """Value fields for a FHIR Quantity; returns (fields, error) where error rejects the record.

    Only a non-numeric value rejects the record. Units are flagged on the value, never guessed:
    ``invalid-ucum`` (claims UCUM, does not parse), ``unknown-unit`` (another unit system),
    ``incompatible`` (valid UCUM, not convertible to the code's canonical unit), ``no-unit``.
    Flagged values keep their original value and unit but get no canonical value.
    """
    value = q.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return {}, f"Quantity.value {value!r} is not a number"
    unit = q.get("code") if q.get("code") is not None else q.get("unit")
    fields: dict[str, Any] = {"kind": "quantity", "num": float(value), "unit": unit}
    if q.get("comparator"):
        fields["text"] = str(q["comparator"])
    claims_ucum = q.get("system") == UCUM
    if unit is None or unit == "":
        fields["unit_status"] = "no-unit"
        return fields, None
    if not (claims_ucum or q.get("system") is None) or not is_valid_ucum(str(unit)):
        # Kept and flagged, never guessed: "invalid-ucum" when the record claims UCUM but the
        # code does not parse (Synthea 2.4 writes "(score)"), "unknown-unit" otherwise.
        fields["unit_status"] = "invalid-ucum" if claims_ucum else "unknown-unit"
        return fields, None
    unit = str(unit)
    canonical = CANONICAL_UNITS.get(code) if system == LOINC else None
    if canonical is None:
        fields.update(num_canonical=float(value), unit_canonical=unit, unit_status="ok")
        return fields, None
    try:
        lin = conversion(unit, canonical, MOLAR_MASS_G_PER_MOL.get(code))
    except UnitError:
        fields["unit_status"] = "incompatible"
        return fields, None
    fields.update(
        num_canonical=lin(float(value)),
        unit_canonical=canonical,
        unit_status="ok" if unit == canonical else "converted",
    )
    return fields, None


def _value_fields(
    obj: dict[str, Any], system: str, code: str
) -> tuple[dict[str, Any] | None, str | None]:
    if "valueQuantity" in obj:
        q = obj["valueQuantity"]
        if not isinstance(q, dict):
            return None, "valueQuantity is not an object"
        return quantity_fact(q, system, code)
    if "valueCodeableConcept" in obj:
        s, c, d = first_coding(obj["valueCodeableConcept"])
        return {"kind": "code", "value_system": s, "value_code": c, "text": d}, None
    if "valueString" in obj:
        return {"kind": "string", "text": str(obj["valueString"])}, None
    if "valueBoolean" in obj:
        return {"kind": "boolean", "num": 1.0 if obj["valueBoolean"] else 0.0}, None
    if "valueInteger" in obj:
        v = obj["valueInteger"]
        if isinstance(v, bool) or not isinstance(v, int):
            return None, f"valueInteger {v!r} is not an integer"
        return {"kind": "integer", "num": float(v), "unit": "1", "unit_status": "ok"}, None
    if "valueRange" in obj:
        r = obj["valueRange"] or {}
        lo, hi = (r.get("low") or {}).get("value"), (r.get("high") or {}).get("value")
        unit = (r.get("low") or r.get("high") or {}).get("code")
        return {"kind": "range", "low": lo, "high": hi, "unit": unit}, None
    if "valueDateTime" in obj:
        return {"kind": "datetime", "text": str(obj["valueDateTime"])}, None
    if "valuePeriod" in obj:
        return {"kind": "period", "text": str(obj["valuePeriod"])}, None
    if "valueRatio" in obj:
        r = obj["valueRatio"] or {}
        n, d = (r.get("numerator") or {}).get("value"), (r.get("denominator") or {}).get("value")
        num = float(n) / float(d) if n is not None and d not in (None, 0) else None
        return {"kind": "ratio", "num": num, "text": str(r)}, None
    if "valueSampledData" in obj:
        return {"kind": "sampled-data", "text": "SampledData"}, None
    return None, None


def _status(obj: dict[str, Any]) -> str:
    st = obj.get("status")
    if obj.get("resourceType") == "Condition":
        vs = first_coding(obj.get("verificationStatus"))[1]
        if vs == "entered-in-error":
            return "entered-in-error"
        return first_coding(obj.get("clinicalStatus"))[1] or "unknown"
    return str(st) if st else "unknown"


def _effective(obj: dict[str, Any]) -> tuple[datetime | None, str | None]:
    for key in EFFECTIVE_KEYS:
        if key in obj:
            raw = obj[key]
            return parse_time(raw), raw if isinstance(raw, str) else (raw or {}).get("start")
    return None, None


# Resource types whose state value is "this code, with this status": (element, fact kind).
_CODED: dict[str, tuple[str, str]] = {
    "Condition": ("code", "code"),
    "AllergyIntolerance": ("code", "code"),
    "Procedure": ("code", "code"),
    "Immunization": ("vaccineCode", "code"),
    "MedicationRequest": ("medicationCodeableConcept", "medication"),
    "MedicationStatement": ("medicationCodeableConcept", "medication"),
    "MedicationAdministration": ("medicationCodeableConcept", "medication"),
}


def facts_of(obj: dict[str, Any]) -> tuple[list[Fact], str | None]:
    """Typed values of a resource, or an error string that rejects the record."""
    rtype = obj.get("resourceType")
    try:
        eff, eff_text = _effective(obj)
    except FhirTimeError as exc:
        return [], str(exc)
    status = _status(obj)
    facts: list[Fact] = []
    if rtype == "Observation":
        system, code, display = first_coding(obj.get("code"))
        fields, err = _value_fields(obj, system, code)
        if err:
            return [], f"Observation.{err}"
        if fields is not None:
            facts.append(Fact("", system, code, display, effective=eff, status=status, **fields))
        for i, comp in enumerate(obj.get("component") or []):
            if not isinstance(comp, dict):
                return [], f"Observation.component[{i}] is not an object"
            csys, ccode, cdisp = first_coding(comp.get("code"))
            cfields, err = _value_fields(comp, csys, ccode)
            if err:
                return [], f"Observation.component[{i}].{err}"
            if cfields is not None:
                facts.append(
                    Fact(
                        f"component[{i}]",
                        csys,
                        ccode,
                        cdisp,
                        effective=eff,
                        status=status,
                        **cfields,
                    )
                )
        if fields is None and not facts and obj.get("dataAbsentReason"):
            s, c, d = first_coding(obj.get("dataAbsentReason"))
            facts.append(
                Fact(
                    "",
                    system,
                    code,
                    display,
                    effective=eff,
                    status=status,
                    kind="absent",
                    value_system=s,
                    value_code=c,
                    text=d,
                )
            )
    elif rtype in _CODED:
        element, kind = _CODED[rtype]
        system, code, display = first_coding(obj.get(element))
        if code:
            facts.append(
                Fact(
                    "",
                    system,
                    code,
                    display,
                    effective=eff,
                    status=status,
                    kind=kind,
                    value_code=status,
                    text=display,
                )
            )
    elif rtype == "Patient":
        if obj.get("gender"):
            facts.append(
                Fact(
                    "gender",
                    "http://hl7.org/fhir/administrative-gender",
                    "gender",
                    "Administrative gender",
                    effective=None,
                    status="final",
                    kind="code",
                    value_code=str(obj["gender"]),
                )
            )
        if obj.get("birthDate"):
            try:
                parse_time(obj["birthDate"])
            except FhirTimeError as exc:
                return [], f"Patient.birthDate: {exc}"
            facts.append(
                Fact(
                    "birthDate",
                    "urn:healthtwin:local",
                    "birthDate",
                    "Birth date",
                    effective=None,
                    status="final",
                    kind="datetime",
                    text=str(obj["birthDate"]),
                )
            )
    for f in facts:
        f.effective_text = eff_text
    return facts, None
