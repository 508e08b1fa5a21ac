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
    value: float | None = Field(None, description="as received, in `unit`")
    unit: str | None = Field(None, description="UCUM unit as received")
    value_canonical: float | None = Field(None, description="in `unit_canonical`")
    unit_canonical: str | None = Field(None, description="the code's canonical UCUM unit")
    unit_status: str | None = None
    value_code: str | None = None
    text: str | None = None
    mean: float | None = None
    sd: float | None = None
    quantiles: str | None = None
    effective: datetime | None = Field(None, description="when it was true (UTC)")
    effective_text: str | None = None
    status: str | None = None
    recorded_at: datetime | None = Field(None, description="when the store learned it (UTC)")
    source: str | None = Field(None, description="the resource it came from, Type/id/_history/v")


class TwinState(BaseModel):
    twin_id: str
    at: datetime | None = Field(None, description="effective-time cut (UTC); null = now")
    as_of: datetime | None = Field(None, description="recorded-time cut (UTC); null = latest")
    values: list[StateValue]
