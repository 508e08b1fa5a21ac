"""FastAPI dependencies shared by the routes: the access context, the store gateway."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from healthtwin.serve.access import AccessContext
from healthtwin.serve.gateway import StoreGateway


async def context(request: Request) -> AccessContext:
    """The guard's decision for this request (the guard runs as an app-wide dependency)."""
    ctx: AccessContext | None = getattr(request.state, "access", None)
    if ctx is None:
        ctx = await request.app.state.guard(request)
    return ctx


def gateway_of(request: Request) -> StoreGateway:
    gw: StoreGateway = request.app.state.gateway
    return gw


def services(request: Request) -> Any:
    return request.app.state
