"""``healthtwin risk``: 10-year cardiovascular risk calculators (PCE 2013, Framingham 2008)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import click

# The models (and scikit-learn behind models.base) are imported inside the commands: the CLI
# discovers every capability at start-up, and `healthtwin --help` must not pay for them.

_QTY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([^\s].*)?$")


class CholesterolType(click.ParamType):
    """A cholesterol value with an optional UCUM unit ("213", "213 mg/dL", "5.5 mmol/L")."""

    name = "QUANTITY"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        from healthtwin.models.risk import cholesterol_to_mg_dl

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


def _compute(
    equation: str, allow_extrapolation: bool, sd: dict[str, float], **kw: Any
) -> tuple[float, tuple[float, float] | None]:
    """Point risk (fraction) and, if any input error is given, a 95 % simulated interval."""
    from healthtwin.models.base import OutOfRangeError
    from healthtwin.models.risk import (
        equation_info,
        framingham_cvd_risk,
        pooled_cohort_risk,
        risk_input_uncertainty,
    )

    fn = {"pooled_cohort_equations": pooled_cohort_risk}.get(equation, framingham_cvd_risk)
    try:
        risk = float(fn(**kw, allow_extrapolation=allow_extrapolation)[0])
        interval = None
        if any(v > 0 for v in sd.values()):
            out = risk_input_uncertainty(
                equation, **sd, allow_extrapolation=allow_extrapolation, seed=0, **kw
            )
            interval = (float(out[0, 1]), float(out[0, 2]))
        return risk, interval
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
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


_INTERVAL_METHOD = (
    "simulated: 2000 Monte Carlo draws of input measurement error (SBP normal, cholesterol "
    "lognormal); the published equations publish no coefficient covariance"
)


def _emit(
    fmt: str,
    title: str,
    result: tuple[float, tuple[float, float] | None],
    inputs: dict[str, Any],
    equation: str,
) -> None:
    from healthtwin.models.risk import equation_info

    info = equation_info(equation)
    risk, interval = result
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "equation": title,
                    "risk_10y": {"value": round(100 * risk, 4), "unit": "%"},
                    "horizon": info.horizon,
                    "outcome": info.outcome,
                    "inputs": inputs,
                    "interval_95": None
                    if interval is None
                    else {
                        "lower": round(100 * interval[0], 4),
                        "upper": round(100 * interval[1], 4),
                        "unit": "%",
                        "method": _INTERVAL_METHOD,
                    },
                    "interval_note": None
                    if interval is not None
                    else "no interval: give --sd-sbp/--cv-chol/--cv-hdl for input uncertainty; "
                    "no coefficient covariance was published",
                    "source": info.source,
                },
                indent=2,
            )
        )
        return
    click.echo(f"{title}: 10-year risk {100 * risk:.1f} %")
    if interval is not None:
        click.echo(
            f"  95 % interval {100 * interval[0]:.1f}-{100 * interval[1]:.1f} % "
            "(simulated from input measurement error)"
        )
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
            "--sd-sbp",
            type=click.FloatRange(min=0),
            default=0.0,
            help="SD of SBP measurement error, mm[Hg] (gives a simulated interval).",
        ),
        click.option(
            "--cv-chol",
            type=click.FloatRange(min=0),
            default=0.0,
            help="Coefficient of variation of total cholesterol (1).",
        ),
        click.option(
            "--cv-hdl",
            type=click.FloatRange(min=0),
            default=0.0,
            help="Coefficient of variation of HDL cholesterol (1).",
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
def ascvd(
    fmt: str,
    allow_extrapolation: bool,
    sd_sbp: float,
    cv_chol: float,
    cv_hdl: float,
    **kw: Any,
) -> None:
    """ACC/AHA Pooled Cohort Equations (Goff 2013): hard ASCVD, age 40-79."""
    sd = {"sd_sbp": sd_sbp, "cv_total_chol": cv_chol, "cv_hdl": cv_hdl}
    result = _compute("pooled_cohort_equations", allow_extrapolation, sd, **kw)
    _emit(
        fmt,
        "Pooled Cohort Equations (ACC/AHA 2013)",
        result,
        _inputs(**kw),
        "pooled_cohort_equations",
    )


@risk_group.command("framingham")
@_common
def framingham(
    fmt: str,
    allow_extrapolation: bool,
    sd_sbp: float,
    cv_chol: float,
    cv_hdl: float,
    **kw: Any,
) -> None:
    """Framingham general CVD risk (D'Agostino 2008), age 30-74."""
    sd = {"sd_sbp": sd_sbp, "cv_total_chol": cv_chol, "cv_hdl": cv_hdl}
    result = _compute("framingham_general_cvd_2008", allow_extrapolation, sd, **kw)
    _emit(
        fmt, "Framingham general CVD (2008)", result, _inputs(**kw), "framingham_general_cvd_2008"
    )


def register(group: click.Group) -> None:
    """Add ``risk`` to the top-level ``healthtwin`` group."""
    group.add_command(risk_group)
