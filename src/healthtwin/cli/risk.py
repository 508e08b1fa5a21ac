"""``healthtwin risk``: 10-year cardiovascular risk calculators (PCE 2013, Framingham 2008)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import click

from healthtwin.models.base import OutOfRangeError
from healthtwin.models.risk import (
    cholesterol_to_mg_dl,
    equation_info,
    framingham_cvd_risk,
    pooled_cohort_risk,
)

_QTY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([^\s].*)?$")


class CholesterolType(click.ParamType):
    """A cholesterol value with an optional UCUM unit ("213", "213 mg/dL", "5.5 mmol/L")."""

    name = "QUANTITY"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float | int):
            return float(value)
        m = _QTY.match(str(value))
        if m is None:
            self.fail(
                f"{value!r} is not a number with an optional unit (e.g. '5.5 mmol/L')", param, ctx
            )
        unit = (m.group(2) or "mg/dL").strip()
        try:
            return float(cholesterol_to_mg_dl(float(m.group(1)), unit))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


_CHOL = CholesterolType()
_YESNO = click.Choice(["yes", "no"], case_sensitive=False)
_OPTION_FOR = {"age": "--age", "total_chol": "--total-chol", "hdl": "--hdl", "sbp": "--sbp"}


def _compute(fn: Callable[..., Any], equation: str, **kw: Any) -> float:
    try:
        return float(fn(**kw)[0])
    except OutOfRangeError as exc:
        key = next(
            (k for k in _OPTION_FOR if str(exc).split(": ", 1)[-1].startswith(k + " =")), None
        )
        option = _OPTION_FOR.get(key or "", "input")
        low, high, unit = equation_info(equation).valid_range.get(key or "", (0.0, 0.0, ""))
        raise click.BadParameter(
            f"{str(exc).replace('allow_extrapolation=True', '--allow-extrapolation')}. "
            f"Valid range for {option}: {low:g}-{high:g} {unit}.",
            param_hint=option,
        ) from None


def _emit(fmt: str, title: str, risk: float, inputs: dict[str, Any], equation: str) -> None:
    info = equation_info(equation)
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "equation": title,
                    "risk_10y": {"value": round(100 * risk, 4), "unit": "%"},
                    "horizon": info.horizon,
                    "outcome": info.outcome,
                    "inputs": inputs,
                    "interval": None,
                    "interval_note": "published equation: no coefficient covariance was published",
                    "source": info.source,
                },
                indent=2,
            )
        )
        return
    click.echo(f"{title}: 10-year risk {100 * risk:.1f} %")
    click.echo(f"  outcome: {info.outcome}")
    for k, v in inputs.items():
        click.echo(
            f"  {k:<12} {v['value']:g} {v['unit']}" if isinstance(v, dict) else f"  {k:<12} {v}"
        )
    click.echo(f"  source: {info.source}")


def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--age", type=float, required=True, help="Age in years (a)."),
        click.option(
            "--sex", type=click.Choice(["female", "male"], case_sensitive=False), required=True
        ),
        click.option(
            "--total-chol",
            type=_CHOL,
            required=True,
            help="Total cholesterol; mg/dL by default, or e.g. '5.5 mmol/L'.",
        ),
        click.option(
            "--hdl",
            type=_CHOL,
            required=True,
            help="HDL cholesterol; mg/dL by default, or e.g. '1.3 mmol/L'.",
        ),
        click.option("--sbp", type=float, required=True, help="Systolic blood pressure in mm[Hg]."),
        click.option(
            "--bp-treated", type=_YESNO, required=True, help="On blood-pressure medication."
        ),
        click.option("--smoker", type=_YESNO, required=True),
        click.option("--diabetes", type=_YESNO, required=True),
        click.option(
            "--allow-extrapolation",
            is_flag=True,
            help="Compute outside the derivation range (not validated).",
        ),
        click.option(
            "--format",
            "fmt",
            type=click.Choice(["table", "json"]),
            default="table",
            show_default=True,
        ),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _inputs(**kw: Any) -> dict[str, Any]:
    return {
        "age": {"value": kw["age"], "unit": "a"},
        "sex": kw["sex"],
        **({"race": kw["race"]} if "race" in kw else {}),
        "total_chol": {"value": round(kw["total_chol"], 3), "unit": "mg/dL"},
        "hdl": {"value": round(kw["hdl"], 3), "unit": "mg/dL"},
        "sbp": {"value": kw["sbp"], "unit": "mm[Hg]"},
        "bp_treated": kw["bp_treated"],
        "smoker": kw["smoker"],
        "diabetes": kw["diabetes"],
    }


@click.group(name="risk")
def risk_group() -> None:
    """10-year cardiovascular risk from published equations."""


@risk_group.command("ascvd")
@_common
@click.option(
    "--race",
    type=click.Choice(["white", "african_american", "black", "other"], case_sensitive=False),
    required=True,
    help="'other' uses the white equations (2013 guideline advice).",
)
def ascvd(fmt: str, allow_extrapolation: bool, **kw: Any) -> None:
    """ACC/AHA Pooled Cohort Equations (Goff 2013): hard ASCVD, age 40-79."""
    risk = _compute(
        pooled_cohort_risk, "pooled_cohort_equations", allow_extrapolation=allow_extrapolation, **kw
    )
    _emit(
        fmt,
        "Pooled Cohort Equations (ACC/AHA 2013)",
        risk,
        _inputs(**kw),
        "pooled_cohort_equations",
    )


@risk_group.command("framingham")
@_common
def framingham(fmt: str, allow_extrapolation: bool, **kw: Any) -> None:
    """Framingham general CVD risk (D'Agostino 2008), age 30-74."""
    risk = _compute(
        framingham_cvd_risk,
        "framingham_general_cvd_2008",
        allow_extrapolation=allow_extrapolation,
        **kw,
    )
    _emit(fmt, "Framingham general CVD (2008)", risk, _inputs(**kw), "framingham_general_cvd_2008")


def register(group: click.Group) -> None:
    """Add ``risk`` to the top-level ``healthtwin`` group."""
    group.add_command(risk_group)
