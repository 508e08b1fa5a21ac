"""The codes the glucose twin reads and writes, in one place (see docs/glucose-twin.md).

Inputs are read from the store by code; anything not matched here is not an input. Every
quantity is converted by the spine's UCUM layer (:mod:`healthtwin.thread.terms.units`) to the
twin's unit: glucose mg/dL (mmol/L through the molar mass of glucose), insulin [IU] and
[IU]/h, carbohydrate g, body weight kg.
"""

from __future__ import annotations

from healthtwin.care.glucose.fhir import TAG_SYSTEM
from healthtwin.thread.terms.codes import LOINC, MOLAR_MASS_G_PER_MOL, RXNORM, SNOMED, UCUM

#: ``TAG_SYSTEM`` (care/glucose/fhir.py) tags everything the twin writes; a resource carrying
#: any tag of this system is a twin output and is never read back as a patient input.
__all__ = ["LOINC", "RXNORM", "SNOMED", "TAG_SYSTEM", "UCUM"]

#: Continuous glucose monitoring (interstitial fluid); HL7 CGM IG 1.0.0 sensor-reading codes.
CGM_CODES: dict[str, str] = {
    "99504-3": "Glucose [Mass/volume] in Interstitial fluid",
    "14745-4": "Glucose [Moles/volume] in Body fluid",
}
#: Blood glucose (capillary meter, venous/plasma laboratory); used as measurements too.
BLOOD_GLUCOSE_CODES: dict[str, str] = {
    "2339-0": "Glucose [Mass/volume] in Blood",
    "15074-8": "Glucose [Moles/volume] in Blood",
    "41653-7": "Glucose [Mass/volume] in Capillary blood by Glucometer",
    "14743-9": "Glucose [Moles/volume] in Capillary blood by Glucometer",
    "2345-7": "Glucose [Mass/volume] in Serum or Plasma",
    "14749-6": "Glucose [Moles/volume] in Serum or Plasma",
}
GLUCOSE_CODES: dict[str, str] = {**CGM_CODES, **BLOOD_GLUCOSE_CODES}
#: Carbohydrate intake (a meal, g): LOINC 9059-7 "Carbohydrate intake Estimated".
CARB_CODES: dict[str, str] = {"9059-7": "Carbohydrate intake Estimated"}
#: Body weight (kg) for the twin's prior.
BODY_WEIGHT_CODES: dict[str, str] = {"29463-7": "Body weight"}

#: Insulin medications: SNOMED CT substance, RxNorm ingredient; a medication concept whose
#: text or any coding display contains "insulin" (case-insensitive) is insulin too.
INSULIN_CODES: dict[tuple[str, str], str] = {
    (SNOMED, "67866001"): "Insulin (substance)",
    (RXNORM, "5856"): "insulin",
}
INSULIN_WORD = "insulin"

GLUCOSE_UNIT = "mg/dL"
GLUCOSE_MOLAR_MASS = MOLAR_MASS_G_PER_MOL["2339-0"]  # g/mol
CARB_UNIT = "g"
WEIGHT_UNIT = "kg"
INSULIN_UNIT = "[IU]"
INSULIN_RATE_UNIT = "[IU]/h"
#: UCUM's ``U`` is the enzyme unit (umol/min). Insulin doses written in ``U`` are insulin
#: units by universal clinical convention, so for insulin only these codes are read as [IU]
#: (the record keeps its unit; the mapping is listed in docs/glucose-twin.md).
INSULIN_UNIT_ALIASES: dict[str, str] = {
    "U": "[IU]",
    "U/h": "[IU]/h",
    "U/min": "[IU]/min",
    "U/d": "[IU]/d",
}
#: Plausible ranges; values outside are skipped with a reason (never clipped).
GLUCOSE_RANGE_MG_DL = (20.0, 600.0)  # the EnKF's start accepts 20-600 mg/dL
CARB_RANGE_G = (0.0, 500.0)
BOLUS_RANGE_IU = (0.0, 75.0)
BASAL_RANGE_IU_H = (0.0, 10.0)
WEIGHT_RANGE_KG = (10.0, 250.0)

#: Observation statuses read as measurements; others (preliminary, entered-in-error, ...) not.
MEASUREMENT_STATUSES = frozenset({"final", "amended", "corrected"})
#: MedicationAdministration / MedicationStatement statuses read as insulin given.
GIVEN_STATUSES = frozenset({"completed", "in-progress", "active", "intended"})
#: MedicationRequest intents read as a prescribed basal rate (never "proposal").
ORDER_INTENTS = frozenset({"order", "original-order", "plan", "instance-order"})

#: Tag system of synthetic device data (care/glucose/stream.py): simulated patients, but
#: patient data as far as the twin is concerned (inputs), never twin outputs.
DATA_ORIGIN_SYSTEM = "https://healthtwin.dev/fhir/CodeSystem/data-origin"
