"""Declarative facility spec (YAML), validated with pydantic; errors name the field.

All times are in minutes ("min") unless a field name says otherwise; rates are per hour ("/h").
A spec describes *stations* (units such as triage, cubicles, wards, clinic rooms, each with a
number of servers: staff, beds or equipment), *patient classes* (priority, patience, pathway of
steps with branching probabilities and service-time distributions), *arrivals* (a cyclic
rate profile by period and weekday factors), *policies* and optional *primary-care workload*.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

EXIT = "exit"


class SpecError(ValueError):
    """A facility spec is invalid; the message names the field (dotted path) and the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class Dist(_Strict):
    """A service/duration distribution, in min.

    ``exponential(mean)``, ``lognormal(mean, sd)`` (moments of the lognormal itself),
    ``normal(mean, sd, low)`` (resampled below ``low``), ``gamma(mean, sd)``,
    ``uniform(low, high)``, ``deterministic(mean)``, ``empirical(values)``.
    """

    dist: Literal[
        "exponential", "lognormal", "normal", "gamma", "uniform", "deterministic", "empirical"
    ]
    mean: float | None = Field(default=None, gt=0)
    sd: float | None = Field(default=None, gt=0)
    low: float | None = Field(default=None, ge=0)
    high: float | None = Field(default=None, gt=0)
    values: list[float] | None = None

    @model_validator(mode="after")
    def _params(self) -> Dist:
        need: dict[str, tuple[str, ...]] = {
            "exponential": ("mean",),
            "lognormal": ("mean", "sd"),
            "normal": ("mean", "sd"),
            "gamma": ("mean", "sd"),
            "uniform": ("low", "high"),
            "deterministic": ("mean",),
            "empirical": ("values",),
        }
        missing = [p for p in need[self.dist] if getattr(self, p) is None]
        if missing:
            raise ValueError(f"{self.dist} distribution needs {', '.join(missing)}")
        if (
            self.dist == "uniform"
            and self.low is not None
            and self.high is not None
            and self.high <= self.low
        ):
            raise ValueError("uniform needs high > low")
        if self.dist == "empirical" and (not self.values or min(self.values) < 0):
            raise ValueError("empirical needs a non-empty list of values >= 0")
        return self

    def expected(self) -> float:
        """Mean in min."""
        if self.dist == "uniform":
            return (float(self.low or 0) + float(self.high or 0)) / 2
        if self.dist == "empirical":
            return float(np.mean(self.values or [0.0]))
        return float(self.mean or 0.0)

    def second_moment(self) -> float:
        """E[S^2] in min^2 (normal ignores truncation at ``low``)."""
        m = self.expected()
        if self.dist == "exponential":
            return 2 * m * m
        if self.dist == "deterministic":
            return m * m
        if self.dist == "uniform":
            a, b = float(self.low or 0), float(self.high or 0)
            return (a * a + a * b + b * b) / 3
        if self.dist == "empirical":
            return float(np.mean(np.square(self.values or [0.0])))
        sd = float(self.sd or 0.0)
        return sd * sd + m * m

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` values (min), vectorised."""
        d = self.dist
        if d == "exponential":
            return rng.exponential(float(self.mean or 0.0), n)
        if d == "deterministic":
            return np.full(n, float(self.mean or 0.0))
        if d == "uniform":
            return rng.uniform(float(self.low or 0.0), float(self.high or 0.0), n)
        if d == "empirical":
            return rng.choice(np.asarray(self.values, dtype=float), n)
        m, s = float(self.mean or 0.0), float(self.sd or 0.0)
        if d == "lognormal":
            phi = np.sqrt(s * s + m * m)
            return rng.lognormal(np.log(m * m / phi), np.sqrt(np.log(phi * phi / (m * m))), n)
        if d == "gamma":
            k = (m / s) ** 2
            return rng.gamma(k, m / k, n)
        out = rng.normal(m, s, n)
        low = 0.0 if self.low is None else float(self.low)
        bad = out < low
        while bad.any():
            out[bad] = rng.normal(m, s, int(bad.sum()))
            bad = out < low
        return out


class ShiftBlock(_Strict):
    """From ``start_hour`` (h of day, 0-24) the station has ``servers`` servers."""

    start_hour: float = Field(ge=0, lt=24)
    servers: int = Field(ge=0)


class Station(_Strict):
    """A unit with ``servers`` identical servers (staff, beds, cubicles or equipment)."""

    servers: int = Field(ge=0, description="servers when no schedule applies (1)")
    kind: Literal[
        "triage", "registration", "assessment", "treatment", "ward", "clinic", "other"
    ] = "other"
    role: str | None = Field(default=None, description="staff role / resource type")
    preemptive: bool = Field(default=False, description="higher priority pre-empts (resume)")
    hold_until_next: bool = Field(
        default=False, description="patient keeps this server until admitted downstream"
    )
    schedule: list[ShiftBlock] | None = None
    infinite: bool = Field(default=False, description="ample servers (M/G/inf)")
    max_queue: int | None = Field(
        default=None, ge=0, description="blocking: arrivals finding this many waiting are lost"
    )


class Step(_Strict):
    """One step of a pathway: queue at ``station``, then service ``service`` (min)."""

    name: str
    station: str
    service: Dist
    next: dict[str, float] | None = Field(
        default=None, description="step name (or 'exit') -> probability; default: next in list"
    )
    also: list[str] = Field(
        default_factory=list,
        description="other stations (staff of another role, equipment) held with this one "
        "for the whole service; the patient starts only when one server of each is free",
    )


class PatientClass(_Strict):
    """A patient class: share of arrivals, priority (1 = highest), patience and pathway."""

    share: float = Field(gt=0, le=1)
    priority: int = Field(default=1, ge=1)
    acuity: int | None = Field(default=None, ge=1, le=5)
    patience: Dist | None = Field(default=None, description="time before leaving unseen, min")
    pathway: list[Step] = Field(min_length=1)


class Arrivals(_Strict):
    """Non-homogeneous Poisson arrivals: cyclic ``profile`` of rates (/h) per period."""

    profile: list[float] = Field(min_length=1)
    period_min: float = Field(default=60.0, gt=0)
    weekday_factors: list[float] | None = Field(default=None, min_length=7, max_length=7)


class Disruption(_Strict):
    """Stress events: ``surge`` (arrivals x factor) or ``capacity`` (station servers +delta)."""

    kind: Literal["surge", "capacity"]
    start: float = Field(ge=0, description="min after run start")
    end: float = Field(gt=0, description="min after run start")
    factor: float = Field(default=1.0, gt=0)
    station: str | None = None
    delta: int = 0

    @model_validator(mode="after")
    def _window(self) -> Disruption:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.kind == "capacity" and self.station is None:
            raise ValueError("capacity disruption needs a station")
        return self


class Policies(_Strict):
    """Policies: 4-hour target (min), discharge window for wards."""

    target_min: float = Field(default=240.0, gt=0)
    discharge_hours: tuple[float, float] | None = Field(
        default=None, description="ward discharges only between these hours of day (h)"
    )


class InboxTask(_Strict):
    per_patient_year: float = Field(ge=0, description="tasks per panel patient per year (/a)")
    minutes: Dist


class VisitType(_Strict):
    share: float = Field(gt=0, le=1)
    minutes: Dist


class PrimaryCare(_Strict):
    """Primary-care workload for one provider: panel, visits, inbox, clinic hours."""

    panel_size: int = Field(gt=0)
    visits_per_patient_year: float = Field(gt=0, description="/a")
    visit_types: dict[str, VisitType]
    inbox: dict[str, InboxTask] = Field(default_factory=dict)
    clinic_hours_per_day: float = Field(default=8.0, gt=0, le=24)
    days_per_week: int = Field(default=5, ge=1, le=7)


class FacilitySpec(_Strict):
    """A whole facility. Times in min; the run starts at ``start_weekday``/``start_hour``."""

    name: str
    horizon: float = Field(gt=0, description="run length, min")
    warmup: float = Field(default=0.0, ge=0, description="discarded initial period, min")
    start_hour: float = Field(default=0.0, ge=0, lt=24)
    start_weekday: int = Field(default=0, ge=0, le=6, description="0 = Monday")
    stations: dict[str, Station]
    classes: dict[str, PatientClass]
    arrivals: Arrivals
    policies: Policies = Field(default_factory=Policies)
    disruptions: list[Disruption] = Field(default_factory=list)
    primary_care: PrimaryCare | None = None
    sample_every: float = Field(default=60.0, gt=0, description="occupancy sampling, min")

    @model_validator(mode="after")
    def _refs(self) -> FacilitySpec:
        if self.warmup >= self.horizon:
            raise ValueError(f"warmup ({self.warmup} min) must be < horizon ({self.horizon} min)")
        total = sum(c.share for c in self.classes.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"classes: shares must sum to 1, got {total:g}")
        for cname, cls in self.classes.items():
            names = [s.name for s in cls.pathway]
            if len(set(names)) != len(names):
                raise ValueError(f"classes.{cname}.pathway: step names must be unique")
            for i, st in enumerate(cls.pathway):
                where = f"classes.{cname}.pathway[{i}]"
                if st.station not in self.stations:
                    raise ValueError(f"{where}.station: unknown station {st.station!r}")
                for k, extra in enumerate(st.also):
                    if extra not in self.stations or extra == st.station:
                        raise ValueError(
                            f"{where}.also[{k}]: unknown or repeated station {extra!r}"
                        )
                    if self.stations[extra].preemptive or self.stations[st.station].preemptive:
                        raise ValueError(
                            f"{where}.also[{k}]: joint holding is not supported with pre-emption"
                        )
                if st.next is not None:
                    for tgt in st.next:
                        if tgt != EXIT and tgt not in names:
                            raise ValueError(f"{where}.next: unknown step {tgt!r}")
                    p = sum(st.next.values())
                    if abs(p - 1.0) > 1e-6 or min(st.next.values()) < 0:
                        raise ValueError(f"{where}.next: probabilities must sum to 1, got {p:g}")
        for i, d in enumerate(self.disruptions):
            if d.station is not None and d.station not in self.stations:
                raise ValueError(f"disruptions[{i}].station: unknown station {d.station!r}")
        for sname, station in self.stations.items():
            hours = [b.start_hour for b in station.schedule or []]
            if hours != sorted(hours):
                raise ValueError(f"stations.{sname}.schedule: start_hour must increase")
        return self

    def digest(self) -> str:
        """SHA-256 of the canonical JSON form (the spec hash for run records)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid facility spec {source}:"]
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(root)"
        lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def _resolve_profile_csv(data: dict[str, Any], base: Path, source: str) -> None:
    """``arrivals.profile_csv``: read the rate column (/h) of a CSV (``period,arrival_rate``,
    the treat-sim format) into ``arrivals.profile``; paths are relative to the spec file."""
    arr = data.get("arrivals")
    if not isinstance(arr, dict) or "profile_csv" not in arr:
        return
    import pandas as pd

    name = str(arr.pop("profile_csv"))
    path = (base / name) if not Path(name).is_absolute() else Path(name)
    if not path.exists():
        raise SpecError(
            f"invalid facility spec {source}:\n  arrivals.profile_csv: {path} not found"
        )
    df = pd.read_csv(path)
    col = "arrival_rate" if "arrival_rate" in df.columns else df.columns[-1]
    rates = pd.to_numeric(df[col], errors="coerce")
    if rates.isna().any() or (rates < 0).any():
        raise SpecError(
            f"invalid facility spec {source}:\n  arrivals.profile_csv: column {col!r} of {path} "
            "must hold rates >= 0 (/h)"
        )
    arr["profile"] = rates.astype(float).tolist()


def parse_spec(
    data: dict[str, Any], source: str = "<dict>", base_dir: str | Path | None = None
) -> FacilitySpec:
    """Validate a spec dict; raise :class:`SpecError` naming each bad field.

    ``arrivals.profile_csv`` (a CSV of hourly rates) is resolved against ``base_dir``.
    """
    if not isinstance(data, dict):
        raise SpecError(f"invalid facility spec {source}: top level must be a mapping")
    _resolve_profile_csv(data, Path(base_dir) if base_dir else Path.cwd(), source)
    try:
        return FacilitySpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_error(err, source)) from None


def load_spec(path: str | Path) -> FacilitySpec:
    """Load a YAML spec from a path, or a bundled example by name (``ed``, ``ward``, ...)."""
    p = Path(path)
    if not p.exists():
        bundled = Path(__file__).parent / "specs" / f"{path}.yaml"
        if bundled.exists():
            p = bundled
        else:
            raise SpecError(f"facility spec {path}: file not found (and no bundled spec)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"facility spec {p}: YAML syntax error: {err}") from None
    return parse_spec(data, str(p), p.parent)


def bundled_specs() -> list[str]:
    """Names of the bundled example specs."""
    return sorted(q.stem for q in (Path(__file__).parent / "specs").glob("*.yaml"))
