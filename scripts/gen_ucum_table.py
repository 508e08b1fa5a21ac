"""Regenerate ``src/healthtwin/thread/terms/data/ucum_table.json`` from ucumvert/pint.

The table is a precomputed cache of what :mod:`healthtwin.thread.terms.units` would compute
live (validity of common UCUM codes and the linear maps to each canonical unit), so that an
ingest does not pay ~1.5 s to build the pint/ucumvert registry when every unit it meets is a
common one. ``tests/spine/test_spine_units.py`` checks every entry against ucumvert live.

    .venv/bin/python scripts/gen_ucum_table.py
"""

from __future__ import annotations

import json
from pathlib import Path

from healthtwin.thread.terms import units
from healthtwin.thread.terms.codes import CANONICAL_UNITS, MOLAR_MASS_G_PER_MOL

OUT = Path(__file__).resolve().parents[1] / "src/healthtwin/thread/terms/data/ucum_table.json"

# Unit codes met in Synthea, the official R4 examples and common clinical feeds (valid or not:
# an invalid code is cached as invalid, so it is flagged without building the registry).
COMMON = """
% /mL /min /uL 10*12/L 10*3/uL 10*6/uL 10*9/L 10^12/L 258813002 258814008 265201 C CFU/ML
Cel U U/L Y [in_i] [lb_av] cL/s cm fL g g/L g/cm-2 g/dL g/dl in kPa kU/L kg kg/m2 lbs m
mL/min mg/L mg/dL mg/g mm mmHg mm[Hg] mmol/L mmol/l ng/mL pH pg pg/mL ug/mL ug/ml umol/L
x10*12/L x10*9/L (score) {score} 1 /h /s /wk /d a mo wk d h min s ms L mL dL uL
mg ug ng kg/m2 m2 mEq/L meq/L mg/mL mol/L nmol/L pmol/L IU/L [IU]/L U/mL [iU]/L mU/L
ng/dL ug/dL ug/L mg/kg mL/kg {beats}/min {breaths}/min [degF] K [ppm] [pH] mosm/kg
{T-score} {count} {nominal} {ratio} {index} {cells}/uL {copies}/mL {titer} [arb'U]/mL
mm/h g/(24.h) mg/(24.h) mmol/mol mL/min/{1.73_m2} mL/min/1.73m2 [in_us] [ft_i] [oz_av]
""".split()  # noqa: SIM905
# Codes with spaces or odd characters are also kept (they are flagged, never guessed).
ODD = [
    "% (sample/positive control)",
    "beats/minute",
    "breaths/minute",
    "degrees C",
    "mm Hg",
    "g/cm²",
    "K/ul",
    "lbs",
]


def main() -> None:
    codes = sorted(set(COMMON) | set(ODD) | set(CANONICAL_UNITS.values()))
    valid = {c: units.live_is_valid_ucum(c) for c in codes}
    # the (canonical unit, molar mass) pairs ingestion asks for, one per LOINC code
    targets = sorted(
        {(dst, MOLAR_MASS_G_PER_MOL.get(code)) for code, dst in CANONICAL_UNITS.items()},
        key=lambda t: (t[0], t[1] or 0.0),
    )
    conv = []
    for src in (c for c in codes if valid[c]):
        for dst, mm in targets:
            try:
                lin = units.live_conversion(src, dst, mm)
                conv.append([src, dst, mm, lin.scale, lin.offset])
            except units.UnitError:
                conv.append([src, dst, mm, None, None])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "generated_by": "scripts/gen_ucum_table.py (ucumvert on pint)",
                "valid": valid,
                "conversions": conv,
            },
            indent=0,
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"{OUT}: {len(valid)} codes, {len(conv)} conversions")


if __name__ == "__main__":
    main()
