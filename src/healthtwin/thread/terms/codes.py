"""Code systems and per-code canonical units.

Each LOINC code the platform reasons about has one canonical UCUM unit; quantities are
converted to it on ingestion (the original value and unit are kept beside). Codes not listed
keep the unit they arrived in (when it is valid UCUM) as their canonical unit.
"""

from __future__ import annotations

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOCAL = "urn:healthtwin:local"

SYSTEM_ALIASES = {
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "http://snomed.info/sct/": SNOMED,
    "http://loinc.org/": LOINC,
}

#: LOINC code -> canonical UCUM unit.
CANONICAL_UNITS: dict[str, str] = {
    # glucose (mass concentration)
    "2339-0": "mg/dL",  # Glucose [Mass/volume] in Blood
    "2345-7": "mg/dL",  # Glucose [Mass/volume] in Serum or Plasma
    "41653-7": "mg/dL",  # Glucose [Mass/volume] in Capillary blood by Glucometer
    "15074-8": "mg/dL",  # Glucose [Moles/volume] in Blood (converted via molar mass)
    "14749-6": "mg/dL",  # Glucose [Moles/volume] in Serum or Plasma
    "99504-3": "mg/dL",  # Glucose [Mass/volume] in Interstitial fluid (CGM)
    "14745-4": "mg/dL",  # Glucose [Moles/volume] in Body fluid (CGM in mmol/L)
    "14743-9": "mg/dL",  # Glucose [Moles/volume] in Capillary blood by Glucometer
    # nutrition
    "9059-7": "g",  # Carbohydrate intake Estimated
    # blood pressure
    "8480-6": "mm[Hg]",  # Systolic blood pressure
    "8462-4": "mm[Hg]",  # Diastolic blood pressure
    # vital signs
    "8867-4": "/min",  # Heart rate
    "9279-1": "/min",  # Respiratory rate
    "8310-5": "Cel",  # Body temperature
    "29463-7": "kg",  # Body weight
    "8302-2": "cm",  # Body height
    "39156-5": "kg/m2",  # BMI
    "2708-6": "%",  # Oxygen saturation in Arterial blood
    "59408-5": "%",  # Oxygen saturation by pulse oximetry
    # lipids and chemistry
    "2093-3": "mg/dL",  # Cholesterol [Mass/volume] in Serum or Plasma
    "2085-9": "mg/dL",  # HDL cholesterol
    "18262-6": "mg/dL",  # LDL cholesterol (direct)
    "13457-7": "mg/dL",  # LDL cholesterol (calculated)
    "2571-8": "mg/dL",  # Triglyceride
    "4548-4": "%",  # Hemoglobin A1c/Hemoglobin.total in Blood
    "2160-0": "mg/dL",  # Creatinine [Mass/volume] in Serum or Plasma
    "6299-2": "mg/dL",  # Urea nitrogen [Mass/volume] in Blood
}

#: Molar masses (g/mol) for substance-amount <-> mass conversions, keyed by LOINC code.
MOLAR_MASS_G_PER_MOL: dict[str, float] = {
    **dict.fromkeys(
        ["2339-0", "2345-7", "41653-7", "15074-8", "14749-6", "99504-3", "14745-4", "14743-9"],
        180.156,
    ),
    **dict.fromkeys(["2093-3", "2085-9", "18262-6", "13457-7"], 386.65),  # cholesterol
    "2571-8": 885.7,  # triolein, the conventional triglyceride molar mass
    "2160-0": 113.12,  # creatinine
}


def normalise_system(system: str | None) -> str:
    """Map OIDs and trailing-slash variants onto the canonical code-system URI."""
    if not system:
        return LOCAL
    return SYSTEM_ALIASES.get(system, system)
