"""The virtual entity's vocabulary: twins, typed values (facts), journal events.

Nothing here knows FHIR: the thread translates inbound records into these types.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any


class TwinKind(StrEnum):
    PATIENT = "patient"
    FACILITY = "facility"
    COHORT = "cohort"


class SyncMode(StrEnum):
    """How a twin follows its subject (Kritzinger's taxonomy, seed 002).

    ``model``: no automatic link; ``shadow``: data flows in one way; ``twin``: two-way, the
    twin's predictions and recommendations are written back to the record.
    """

    MODEL = "model"
    SHADOW = "shadow"
    TWIN = "twin"


@dataclass(slots=True)
class Fact:
    """One typed value of a twin's state.

    ``system``/``code`` identify what is measured (LOINC, SNOMED CT or local). A quantity
    carries ``num`` in ``unit`` (UCUM, as received) and ``num_canonical`` in
    ``unit_canonical`` (the code's canonical UCUM unit); ``unit_status`` is ``ok``,
    ``converted``, ``no-unit``, ``unknown-unit`` or ``incompatible`` (flagged, never guessed).
    A distribution carries ``mean``/``sd`` or ``quantiles`` (JSON: {"0.05": x, ...}).
    ``effective`` is when it was true (UTC); the recorded time comes from the journal event.
    """

    key: str
    system: str
    code: str
    display: str | None = None
    effective: datetime | None = None
    status: str = "final"
    kind: str = "quantity"
    num: float | None = None
    unit: str | None = None
    num_canonical: float | None = None
    unit_canonical: str | None = None
    unit_status: str | None = None
    value_system: str | None = None
    value_code: str | None = None
    text: str | None = None
    low: float | None = None
    high: float | None = None
    mean: float | None = None
    sd: float | None = None
    quantiles: str | None = None
    effective_text: str | None = None


@dataclass(slots=True)
class Event:
    """A journal event before it is sealed into the hash chain by the store."""

    kind: str
    payload: dict[str, Any]
    provenance: dict[str, Any]
    twin_id: str | None = None
    subject: str | None = None


@dataclass(slots=True)
class InboundRecord:
    """An accepted inbound record (e.g. one FHIR resource) with its exact original text."""

    rid: str  # "Type/id"
    rtype: str
    raw: str
    sha256: str
    source: str
    locator: str
    subject: str | None = None
    facts: list[Fact] = field(default_factory=list)
    refs: list[tuple[str, str | None, str]] = field(default_factory=list)  # (ref, target, status)
    identifiers: list[tuple[str, str]] = field(default_factory=list)
    deleted: bool = False
    validation: str = "fast"


@dataclass(slots=True)
class Rejected:
    """A record that could not be accepted: kept in quarantine with where and why."""

    source: str
    locator: str
    reason: str
    raw: str
    line: int | None = None
    entry: int | None = None


def _pickle_as_tuple(cls: type) -> None:
    """Pickle ``cls`` (a slots dataclass) as (cls, field values): the default for slots
    classes builds a dict of the slots per object, about twice the cost. Converted records
    cross a process boundary during a parallel ingest (``thread.fhir.ingest``)."""
    getter = operator.attrgetter(*(f.name for f in fields(cls)))

    def __reduce__(self: Any) -> tuple[type, tuple[Any, ...]]:
        return (cls, getter(self))

    cls.__reduce__ = __reduce__  # type: ignore[assignment,method-assign]


for _cls in (Fact, InboundRecord, Rejected):
    _pickle_as_tuple(_cls)
