"""REST for twins: list and search, state at a time, history, forecasts and simulations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from healthtwin.serve.access import AccessContext, access
from healthtwin.serve.deps import context, gateway_of
from healthtwin.serve.models import StateValue, TwinState
from healthtwin.twin.store.base import StoreError

router = APIRouter(prefix="/twins", tags=["twins"])

Ctx = Annotated[AccessContext, Depends(context)]


def utc(ts: datetime | None) -> datetime | None:
    """Naive store times are UTC; aware inputs are converted to UTC."""
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def state_value(row: dict[str, Any]) -> StateValue:
    return StateValue(
        system=row["system"],
        code=row["code"],
        display=row.get("display"),
        kind=row["kind"],
        value=row.get("num"),
        unit=row.get("unit"),
        value_canonical=row.get("num_canonical"),
        unit_canonical=row.get("unit_canonical"),
        unit_status=row.get("unit_status"),
        value_code=row.get("value_code"),
        text=row.get("text"),
        mean=row.get("mean"),
        sd=row.get("sd"),
        quantiles=row.get("quantiles"),
        effective=utc(row.get("effective")),
        effective_text=row.get("effective_text"),
        status=row.get("status"),
        recorded_at=utc(row.get("recorded_at")),
        source=f"{row['rid']}/_history/{row['version']}" if row.get("rid") else None,
    )


@router.get("/{prefix}/{id}/state", response_model=TwinState)
@access("twin.state", "{twin}", "r", compartment="twin")
async def twin_state(
    prefix: str,
    id: str,
    request: Request,
    ctx: Ctx,
    at: Annotated[datetime | None, Query(description="effective-time cut (ISO 8601)")] = None,
    as_of: Annotated[datetime | None, Query(description="recorded-time cut (ISO 8601)")] = None,
) -> TwinState:
    """Latest value per code with effective <= ``at`` as known at ``as_of`` (bitemporal)."""
    gw = gateway_of(request)
    twin_id = f"{prefix}/{id}"
    at_, as_of_ = utc(at), utc(as_of)
    try:
        rows = await gw.call(gw.store.state, twin_id, at_, as_of_)
    except StoreError as exc:
        raise not_found(str(exc)) from None
    return TwinState(twin_id=twin_id, at=at_, as_of=as_of_, values=[state_value(r) for r in rows])


def not_found(detail: str) -> Exception:
    from healthtwin.serve.access import Denied

    return Denied(404, detail)
