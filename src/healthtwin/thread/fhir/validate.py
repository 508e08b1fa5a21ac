"""FHIR R4 validation: a fast path that checks what the platform uses, and a strict mode.

Strict mode validates every resource with the maintained ``fhir.resources`` models (R4B, the
models that parse Synthea R4; see ``../shared/data/README.md``). It runs about 1,100
resources/s, so the default fast path checks the resource type, the id, the elements R4 marks
as required (1..1 / 1..*) for the types we ingest, and everything the normaliser reads. A
resource accepted by the fast path is stored with ``validation = 'fast'`` and counted as such in
``healthtwin stats``; ``healthtwin validate`` (or ``ingest --strict``) applies strict mode, so
nothing strict mode would reject is accepted without saying so.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from healthtwin.thread.fhir.normalize import ID_RE

R4_RESOURCE_TYPES = frozenset(
    [
        "Account",
        "ActivityDefinition",
        "AdverseEvent",
        "AllergyIntolerance",
        "Appointment",
        "AppointmentResponse",
        "AuditEvent",
        "Basic",
        "Binary",
        "BiologicallyDerivedProduct",
        "BodyStructure",
        "Bundle",
        "CapabilityStatement",
        "CarePlan",
        "CareTeam",
        "CatalogEntry",
        "ChargeItem",
        "ChargeItemDefinition",
        "Claim",
        "ClaimResponse",
        "ClinicalImpression",
        "CodeSystem",
        "Communication",
        "CommunicationRequest",
        "CompartmentDefinition",
        "Composition",
        "ConceptMap",
        "Condition",
        "Consent",
        "Contract",
        "Coverage",
        "CoverageEligibilityRequest",
        "CoverageEligibilityResponse",
        "DetectedIssue",
        "Device",
        "DeviceDefinition",
        "DeviceMetric",
        "DeviceRequest",
        "DeviceUseStatement",
        "DiagnosticReport",
        "DocumentManifest",
        "DocumentReference",
        "EffectEvidenceSynthesis",
        "Encounter",
        "Endpoint",
        "EnrollmentRequest",
        "EnrollmentResponse",
        "EpisodeOfCare",
        "EventDefinition",
        "Evidence",
        "EvidenceVariable",
        "ExampleScenario",
        "ExplanationOfBenefit",
        "FamilyMemberHistory",
        "Flag",
        "Goal",
        "GraphDefinition",
        "Group",
        "GuidanceResponse",
        "HealthcareService",
        "ImagingStudy",
        "Immunization",
        "ImmunizationEvaluation",
        "ImmunizationRecommendation",
        "ImplementationGuide",
        "InsurancePlan",
        "Invoice",
        "Library",
        "Linkage",
        "List",
        "Location",
        "Measure",
        "MeasureReport",
        "Media",
        "Medication",
        "MedicationAdministration",
        "MedicationDispense",
        "MedicationKnowledge",
        "MedicationRequest",
        "MedicationStatement",
        "MedicinalProduct",
        "MedicinalProductAuthorization",
        "MedicinalProductContraindication",
        "MedicinalProductIndication",
        "MedicinalProductIngredient",
        "MedicinalProductInteraction",
        "MedicinalProductManufactured",
        "MedicinalProductPackaged",
        "MedicinalProductPharmaceutical",
        "MedicinalProductUndesirableEffect",
        "MessageDefinition",
        "MessageHeader",
        "MolecularSequence",
        "NamingSystem",
        "NutritionOrder",
        "Observation",
        "ObservationDefinition",
        "OperationDefinition",
        "OperationOutcome",
        "Organization",
        "OrganizationAffiliation",
        "Parameters",
        "Patient",
        "PaymentNotice",
        "PaymentReconciliation",
        "Person",
        "PlanDefinition",
        "Practitioner",
        "PractitionerRole",
        "Procedure",
        "Provenance",
        "Questionnaire",
        "QuestionnaireResponse",
        "RelatedPerson",
        "RequestGroup",
        "ResearchDefinition",
        "ResearchElementDefinition",
        "ResearchStudy",
        "ResearchSubject",
        "RiskAssessment",
        "RiskEvidenceSynthesis",
        "Schedule",
        "SearchParameter",
        "ServiceRequest",
        "Slot",
        "Specimen",
        "SpecimenDefinition",
        "StructureDefinition",
        "StructureMap",
        "Subscription",
        "Substance",
        "SubstanceNucleicAcid",
        "SubstancePolymer",
        "SubstanceProtein",
        "SubstanceReferenceInformation",
        "SubstanceSourceMaterial",
        "SubstanceSpecification",
        "SupplyDelivery",
        "SupplyRequest",
        "Task",
        "TerminologyCapabilities",
        "TestReport",
        "TestScript",
        "ValueSet",
        "VerificationResult",
        "VisionPrescription",
    ]
)

# Elements R4 requires (min cardinality >= 1); "x" suffix = a choice type [x].
REQUIRED: dict[str, tuple[str, ...]] = {
    "Observation": ("status", "code"),
    "Condition": ("subject",),
    "Encounter": ("status", "class"),
    "MedicationRequest": ("status", "intent", "medication[x]", "subject"),
    "MedicationStatement": ("status", "medication[x]", "subject"),
    "MedicationAdministration": ("status", "medication[x]", "subject", "effective[x]"),
    "Procedure": ("status", "subject"),
    "Immunization": ("status", "vaccineCode", "patient", "occurrence[x]"),
    "AllergyIntolerance": ("patient",),
    "DiagnosticReport": ("status", "code"),
    "DocumentReference": ("status", "content"),
    "Claim": ("status", "type", "use", "patient", "created", "provider", "priority", "insurance"),
    "ExplanationOfBenefit": (
        "status",
        "type",
        "use",
        "patient",
        "created",
        "insurer",
        "provider",
        "outcome",
        "insurance",
    ),
    "CarePlan": ("status", "intent", "subject"),
    "Goal": ("lifecycleStatus", "description", "subject"),
    "ImagingStudy": ("status", "subject"),
    "Provenance": ("target", "recorded", "agent"),
    "RiskAssessment": ("status", "subject"),
    "DetectedIssue": ("status",),
    "Flag": ("status", "code", "subject"),
    "Consent": ("status", "scope", "category"),
    "AuditEvent": ("type", "recorded", "agent", "source"),
}


_CHOICES: dict[str, tuple[str, ...]] = {
    "medication[x]": ("medicationCodeableConcept", "medicationReference"),
    "effective[x]": ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "effectiveTiming"),
    "occurrence[x]": ("occurrenceDateTime", "occurrenceString"),
}


def _has(obj: dict[str, Any], name: str) -> bool:
    choices = _CHOICES.get(name)
    if choices is not None:
        return any(c in obj for c in choices)
    v = obj.get(name)
    return v is not None and v != [] and v != ""


def fast_check(obj: dict[str, Any]) -> str | None:
    """None if the resource passes the fast path, else the reason it is rejected."""
    rtype = obj.get("resourceType")
    if not isinstance(rtype, str):
        return "missing resourceType"
    if rtype not in R4_RESOURCE_TYPES:
        return f"unknown resourceType {rtype!r} (not a FHIR R4 resource type)"
    rid = obj.get("id")
    if rid is not None and (not isinstance(rid, str) or not ID_RE.match(rid)):
        return f"{rtype}.id {rid!r} is not a valid FHIR id ([A-Za-z0-9-.]{{1,64}})"
    missing = [n for n in REQUIRED.get(rtype, ()) if not _has(obj, n)]
    if missing:
        return f"{rtype} is missing required element(s): {', '.join(missing)}"
    return None


@lru_cache(maxsize=256)
def _model(rtype: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(rtype)


def strict_check(obj: dict[str, Any]) -> str | None:
    """Validate with fhir.resources (R4B models). None if valid, else a one-line reason."""
    rtype = obj.get("resourceType")
    try:
        model = _model(str(rtype))
    except (KeyError, ValueError, LookupError):
        return f"unknown resourceType {rtype!r}"
    try:
        model.model_validate(obj)
    except Exception as exc:  # pydantic.ValidationError and friends
        # the error list, not the bound method: a local holding the exception would tie this
        # frame to its traceback and keep both (and the caller's store) alive
        errs_of = getattr(exc, "errors", None)
        errors = errs_of() if callable(errs_of) else None
        del errs_of
        if errors is not None:
            first = errors[:3]
            parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in first]
            more = len(errors) - len(first)
            return (
                "strict R4B validation failed: "
                + "; ".join(parts)
                + (f" (+{more} more)" if more > 0 else "")
            )
        return f"strict R4B validation failed: {exc}".splitlines()[0]
    return None
