"""Request and response models (the OpenAPI schema). Request bodies forbid unknown fields."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Base of every request body: unknown fields are an error (422), never ignored."""

    model_config = ConfigDict(extra="forbid")


class Error(BaseModel):
    """Every error response of the REST API."""

    error: str = Field(description="short machine-readable kind: unauthorized, forbidden, ...")
    detail: Any = Field(description="what went wrong and where")


class StateValue(BaseModel):
    """One typed value of a twin's state (latest per code), with its provenance."""

    system: str
    code: str
    display: str | None = None
    kind: str
    value: float | None = Field(default=None, description="as received, in `unit`")
    unit: str | None = Field(default=None, description="UCUM unit as received")
    value_canonical: float | None = Field(default=None, description="in `unit_canonical`")
    unit_canonical: str | None = Field(default=None, description="the code's canonical UCUM unit")
    unit_status: str | None = None
    value_code: str | None = None
    text: str | None = None
    mean: float | None = None
    sd: float | None = None
    quantiles: str | None = None
    effective: datetime | None = Field(default=None, description="when it was true (UTC)")
    effective_text: str | None = None
    status: str | None = None
    recorded_at: datetime | None = Field(
        default=None, description="when the store learned it (UTC)"
    )
    source: str | None = Field(
        default=None, description="the resource it came from, Type/id/_history/v"
    )


class TwinState(BaseModel):
    twin_id: str
    at: datetime | None = Field(default=None, description="effective-time cut (UTC); null = now")
    as_of: datetime | None = Field(
        default=None, description="recorded-time cut (UTC); null = latest"
    )
    values: list[StateValue]


class TwinSummary(BaseModel):
    twin_id: str = Field(description="Prefix/id, e.g. Patient/123 or Organization/ed")
    kind: str = Field(description="patient | facility | cohort")
    sync_mode: str = Field(description="model | shadow | twin")
    name: str | None = Field(default=None, description="display name (withheld from researchers)")
    created_at: datetime | None = None


class TwinPage(BaseModel):
    items: list[TwinSummary]
    next_cursor: str | None = Field(default=None, description="pass as `cursor` for the next page")


class TwinDetail(TwinSummary):
    resources: dict[str, int] = Field(description="current resources per FHIR type")
    events: int = Field(description="journal events about this twin")


class HistoryEvent(BaseModel):
    seq: int
    recorded_at: datetime
    kind: str
    payload: dict[str, Any]
    provenance: dict[str, Any]


class HistoryPage(BaseModel):
    twin_id: str
    items: list[HistoryEvent]
    next_cursor: str | None = None


class SeriesPoint(BaseModel):
    system: str
    code: str
    display: str | None = None
    value: float | None = None
    unit: str | None = None
    value_canonical: float | None = None
    unit_canonical: str | None = None
    unit_status: str | None = None
    value_code: str | None = None
    text: str | None = None
    effective: datetime | None = None
    recorded_at: datetime | None = None
    source: str | None = None


class Series(BaseModel):
    twin_id: str
    points: list[SeriesPoint]
    truncated: bool = Field(description="true when `limit` cut the series")


class GlucoseForecastRequest(Strict):
    horizons_min: list[int] = Field(default=[30, 60, 120], min_length=1, max_length=12)
    level: float = Field(
        default=0.9, gt=0.5, lt=1.0, description="central prediction interval level"
    )
    weight_kg: float = Field(
        default=70.0, ge=10, le=250, description="body weight (kg) if the record has none"
    )
    basal_u_h: float = Field(
        default=1.0, ge=0, le=12, description="basal rate ([IU]/h) where the record has none"
    )
    hours_of_data: float = Field(
        default=24.0, gt=0, le=72, description="history for a start without saved state (h)"
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class ForecastPoint(BaseModel):
    horizon_min: int
    median: float
    low: float
    high: float
    unit: str = "mg/dL"


class Simulated(BaseModel):
    simulated: bool = Field(
        default=True, description="always true: model output, not a measurement"
    )
    model: str
    model_version: str
    seed: int | None = None
    input_hash: str | None = None
    assumptions: list[str] = Field(default_factory=list)
    journal_batch: str | None = Field(
        default=None, description="batch id of the simulation.run event"
    )


class GlucoseForecast(Simulated):
    twin_id: str
    issued_at: datetime
    last_reading_at: datetime
    readings_used: int
    level: float
    points: list[ForecastPoint]


class Scenario(Strict):
    """A what-if scenario (care/glucose/whatif.py); minutes from the twin's last reading."""

    name: str = Field(min_length=1, max_length=80)
    hours: float = Field(default=6, gt=0, le=24)
    meals: list[tuple[float, float]] = Field(default_factory=list, max_length=20)
    boluses: list[tuple[float, float | str]] = Field(default_factory=list, max_length=20)
    basal: list[tuple[float, float]] = Field(default_factory=list, max_length=20)
    exercise: list[tuple[float, float, float]] = Field(default_factory=list, max_length=20)
    missed: list[float] = Field(default_factory=list, max_length=20)


class WhatIfRequest(Strict):
    scenarios: list[Scenario] = Field(min_length=1, max_length=4)
    weight_kg: float = Field(
        default=70.0, ge=10, le=250, description="body weight (kg) if the record has none"
    )
    basal_u_h: float = Field(
        default=1.0, ge=0, le=12, description="basal rate ([IU]/h) where the record has none"
    )
    cr_g_per_u: float = Field(default=10.0, gt=0, le=100, description="carbohydrate ratio (g/[IU])")
    hours_of_data: float = Field(
        default=24.0, gt=0, le=72, description="history for a start without saved state (h)"
    )
    start_glucose: float | None = Field(
        default=None, ge=20, le=600, description="mg/dL; used when the twin has no CGM data"
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    step_min: int = Field(default=5, ge=1, le=60, description="output every step_min minutes")


class ScenarioResult(BaseModel):
    name: str
    t_min: list[float]
    p05: list[float]
    p50: list[float]
    p95: list[float]
    unit: str = "mg/dL"


class WhatIfResponse(Simulated):
    twin_id: str
    personalised_from_readings: int
    results: list[ScenarioResult]


class FacilityRunRequest(Strict):
    spec: str = Field(
        default="ed",
        pattern=r"^[a-z_]{1,40}$",
        description="bundled spec: ed, ward, primary_care, ...",
    )
    replications: int = Field(default=5, ge=1, le=50)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    horizon_days: float | None = Field(default=None, gt=0, le=30, description="override (days)")


class KpiInterval(BaseModel):
    kpi: str
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    n: int


class FacilitySimulation(Simulated):
    twin_id: str
    spec: str
    replications: int
    kpis: list[KpiInterval]


class FacilityForecastRequest(Strict):
    spec: str = Field(default="ed", pattern=r"^[a-z_]{1,40}$")
    hours: list[float] = Field(default=[4, 8, 24], min_length=1, max_length=8)
    replications: int = Field(default=20, ge=2, le=100)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class ForecastBand(BaseModel):
    horizon_h: float
    quantity: str
    mean: float | None
    p05: float | None
    p95: float | None


class FacilityForecast(Simulated):
    twin_id: str
    spec: str
    census_at: datetime
    census_patients: int
    bands: list[ForecastBand]
