"""Pure helpers shared by the store backends (no database access).

Both backends (``duckdb_store.py``, ``postgres_store.py``) use these, so that every backend
writes the same rows, the same journal payloads and therefore the same hashes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from healthtwin.twin.model import TwinKind

SCHEMA_VERSION = "1"

# Fact columns in table order after (rid, version, fkey, subject).
FACT_COLS = [
    "system",
    "code",
    "display",
    "kind",
    "num",
    "unit",
    "num_canonical",
    "unit_canonical",
    "unit_status",
    "value_system",
    "value_code",
    "text",
    "low",
    "high",
    "mean",
    "sd",
    "quantiles",
    "effective",
    "effective_text",
    "status",
]

# Columns of a ``state`` row, in order.
STATE_COLS = [
    "system",
    "code",
    "display",
    "kind",
    "num",
    "unit",
    "num_canonical",
    "unit_canonical",
    "unit_status",
    "value_code",
    "text",
    "mean",
    "sd",
    "quantiles",
    "effective",
    "effective_text",
    "status",
    "recorded_at",
    "rid",
    "version",
    "fkey",
    "seq",
]

# Resource types whose arrival creates a twin (the resource is the twin's subject).
TWIN_KIND_OF_TYPE = {"Patient": TwinKind.PATIENT, "Organization": TwinKind.FACILITY}


def utcnow() -> datetime:
    """Now as a naive UTC datetime (the stores keep naive UTC timestamps)."""
    return datetime.now(UTC).replace(tzinfo=None)


def naive(ts: datetime | None) -> datetime | None:
    """An aware datetime converted to naive UTC; a naive one is taken as UTC already."""
    if ts is None:
        return None
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def canonical_json(obj: Any) -> str:
    """Canonical JSON text (sorted keys) of an event payload or provenance: what is hashed."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


def name_of(raw: str) -> str | None:
    """A display name for a twin from its subject resource's original text (or None)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if obj.get("resourceType") == "Patient":
        for n in obj.get("name") or []:
            given = " ".join(n.get("given") or [])
            family = n.get("family") or ""
            full = f"{given} {family}".strip() or n.get("text")
            if full:
                return str(full)
        return None
    return str(obj["name"]) if isinstance(obj.get("name"), str) else None


def parse_conditional(ref: str) -> tuple[str, str, str, str] | None:
    """``Type?identifier=system|value`` -> (ref, "Type/%" LIKE pattern, system, value).

    ``system`` is "" when the reference names no system. None for other conditional forms.
    """
    rtype, _, query = ref.partition("?")
    if not query.startswith("identifier="):
        return None
    token = query[len("identifier=") :]
    system, bar, value = token.rpartition("|")
    return (ref, f"{rtype}/%", system if bar else "", value if bar else token)


# The columns of each table, in table order: the same in both backends (the DuckDB DDL,
# the PostgreSQL DDL, COPY and the bulk Arrow inserts rely on it; tests check DuckDB's).
TABLE_COLUMNS: dict[str, list[str]] = {
    "journal": [
        "seq",
        "event_id",
        "recorded_at",
        "kind",
        "twin_id",
        "subject",
        "batch_id",
        "payload",
        "provenance",
        "prev_hash",
        "hash",
    ],
    "records": [
        "rid",
        "version",
        "rtype",
        "content_sha256",
        "raw",
        "subject",
        "seq",
        "recorded_at",
        "superseded_at",
        "deleted",
        "validation",
        "source",
        "locator",
        "batch_id",
    ],
    "facts": [
        "rid",
        "version",
        "fkey",
        "subject",
        *FACT_COLS,
        "recorded_at",
        "superseded_at",
        "seq",
    ],
    "refs": ["rid", "version", "reference", "target", "status"],
    "identifiers": ["rid", "system", "value"],
    "twins": ["twin_id", "kind", "subject", "sync_mode", "name", "created_at", "seq"],
    "quarantine": [
        "qid",
        "batch_id",
        "recorded_at",
        "source",
        "locator",
        "line",
        "entry",
        "reason",
        "raw",
        "seq",
    ],
}
