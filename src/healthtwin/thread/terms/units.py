"""UCUM units: validation and conversion through ucumvert (UCUM grammar) on pint.

We do not implement UCUM ourselves: ucumvert parses UCUM codes into pint quantities, and pint
converts. What is ours is the glue the ingestion fast path needs: a per-(unit, unit) cache of
the linear map ``y = a*x + b`` (``b`` is non-zero only for affine temperature scales), so a
million values cost a million multiplications rather than a million pint conversions, and the
substance-amount <-> mass bridge (mmol/L <-> mg/dL) through a code's molar mass.

Building the ucumvert/pint registry costs about 1.5 s, more than ingesting 20,000 resources, so
the answers for common codes are precomputed by ucumvert itself into ``data/ucum_table.json``
(``scripts/gen_ucum_table.py``; a test checks every entry against ucumvert live). A code that is
not in the table is answered live, exactly as before.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any


class UnitError(ValueError):
    """A unit string is not valid UCUM, or two units are not commensurable."""


@lru_cache(maxsize=1)
def _registry() -> Any:
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


_lock = threading.Lock()


@lru_cache(maxsize=4096)
def _quantity(code: str) -> Any:
    """Parse a UCUM code into a pint Quantity of magnitude 1 (in the code's own scale)."""
    if code is None or code.strip() != code or code == "":
        raise UnitError(f"{code!r} is not a valid UCUM code (empty or surrounding whitespace)")
    if " " in code:
        raise UnitError(f"{code!r} is not a valid UCUM code (UCUM codes contain no spaces)")
    expr = code
    reg = _registry()
    with _lock:
        try:
            q = reg.from_ucum(expr)
        except Exception as exc:
            raise UnitError(f"{code!r} is not a valid UCUM code: {exc}".splitlines()[0]) from exc
    if not hasattr(q, "to"):
        # A bare number/annotation comes back as a token: it is dimensionless unity.
        q = reg.Quantity(1.0, "dimensionless")
    return q


@lru_cache(maxsize=1)
def _table() -> tuple[dict[str, bool], dict[tuple[str, str, float | None], LinearMap | None]]:
    """The precomputed answers (validity; conversions, None = not commensurable)."""
    data = json.loads(
        resources.files("healthtwin.thread.terms").joinpath("data/ucum_table.json").read_text()
    )
    conv = {
        (src, dst, mm): (None if a is None else LinearMap(float(a), float(b)))
        for src, dst, mm, a, b in data["conversions"]
    }
    return dict(data["valid"]), conv


def is_valid_ucum(code: str) -> bool:
    """True when ``code`` parses as a UCUM unit expression."""
    known = _table()[0].get(code)
    return live_is_valid_ucum(code) if known is None else known


def live_is_valid_ucum(code: str) -> bool:
    """``is_valid_ucum`` asked of ucumvert itself (no precomputed table)."""
    try:
        _quantity(code)
    except UnitError:
        return False
    return True


@dataclass(frozen=True)
class LinearMap:
    """``target = scale * source + offset``."""

    scale: float
    offset: float = 0.0

    def __call__(self, value: float) -> float:
        return self.scale * value + self.offset


@lru_cache(maxsize=4096)
def conversion(src: str, dst: str, molar_mass_g_per_mol: float | None = None) -> LinearMap:
    """The linear map converting values in UCUM ``src`` to UCUM ``dst``.

    ``molar_mass_g_per_mol`` lets substance amounts (mol) convert to and from mass (g) for a
    given analyte. Raises :class:`UnitError` when either code is invalid or they are not
    commensurable.
    """
    table = _table()[1]
    key = (src, dst, molar_mass_g_per_mol)
    if key not in table:
        return live_conversion(src, dst, molar_mass_g_per_mol)
    lin = table[key]
    if lin is None:
        why = "" if molar_mass_g_per_mol is None else f" (molar mass {molar_mass_g_per_mol} g/mol)"
        raise UnitError(f"cannot convert {src!r} to {dst!r}: not commensurable{why}")
    return lin


@lru_cache(maxsize=4096)
def live_conversion(src: str, dst: str, molar_mass_g_per_mol: float | None = None) -> LinearMap:
    """``conversion`` computed by ucumvert/pint itself (no precomputed table)."""
    if src == dst:
        _quantity(src)
        return LinearMap(1.0, 0.0)
    qs, qd = _quantity(src), _quantity(dst)
    reg = _registry()
    with _lock:
        try:
            at0 = reg.Quantity(0.0, qs.units).to(qd.units).magnitude * 1.0
            at1 = reg.Quantity(1.0, qs.units).to(qd.units).magnitude * 1.0
            # A parsed code may carry a numeric factor ("4.s/m" is 4 s/m): a value v in src is
            # v*mag_s units_s; pint maps x units_s to a*x + b units_d; divide by mag_d.
            mag_s, mag_d = float(qs.magnitude), float(qd.magnitude)
            return LinearMap((at1 - at0) * mag_s / mag_d, at0 / mag_d)
        except Exception as exc:
            if molar_mass_g_per_mol is None:
                raise UnitError(f"cannot convert {src!r} to {dst!r}: not commensurable") from exc
    # substance <-> mass bridge through the molar mass
    mm = reg.Quantity(molar_mass_g_per_mol, "g/mol")
    with _lock:
        for bridge in (mm, 1 / mm):
            try:
                out = (reg.Quantity(1.0, qs.units) * qs.magnitude * bridge).to(qd.units)
            except Exception:
                continue
            return LinearMap(float(out.magnitude) / float(qd.magnitude), 0.0)
    raise UnitError(
        f"cannot convert {src!r} to {dst!r}, even through a molar mass of "
        f"{molar_mass_g_per_mol} g/mol"
    )


def convert(value: float, src: str, dst: str, molar_mass_g_per_mol: float | None = None) -> float:
    """Convert ``value`` from UCUM unit ``src`` to ``dst``."""
    return conversion(src, dst, molar_mass_g_per_mol)(value)
