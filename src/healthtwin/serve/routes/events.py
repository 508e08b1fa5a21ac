"""Server-Sent Events: a twin's changes and alerts as they are committed, with filters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from healthtwin.serve.access import AccessContext, access
from healthtwin.serve.deps import context
from healthtwin.serve.routes.twins import _twin
from healthtwin.serve.services import Subscriber

router = APIRouter(prefix="/twins", tags=["subscriptions"])
Ctx = Annotated[AccessContext, Depends(context)]
KINDS = ("record.changed", "record.deleted", "alert")
HEARTBEAT_S = 15.0


@router.get(
    "/{prefix}/{id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "an SSE stream"}},
)
@access("twin.subscribe", "{twin}", "r", compartment="twin")
async def twin_events(
    prefix: str,
    id: str,
    request: Request,
    ctx: Ctx,
    kind: Annotated[
        list[str] | None,
        Query(max_length=3, description="record.changed, record.deleted, alert (default all)"),
    ] = None,
    code: Annotated[list[str] | None, Query(max_length=50, description="only these codes")] = None,
) -> StreamingResponse:
    """Stream ``event: ready`` then one SSE event per committed change or alert of this twin.

    Each event's ``data`` is JSON (rid, type, codes, values in canonical units, recorded
    time; alerts carry the rule, level and value). ``: keep-alive`` comments every 15 s.
    """
    bad = [k for k in kind or [] if k not in KINDS]
    if bad:
        from fastapi import HTTPException

        raise HTTPException(422, f"unknown event kinds {bad}; known: {list(KINDS)}")
    t = await _twin(request, f"{prefix}/{id}")
    sub = Subscriber(
        subject=t["subject"],
        kinds=frozenset(kind) if kind else None,
        codes=frozenset(code) if code else None,
    )
    feed = request.app.state.services.feed
    feed.subscribe(sub)

    async def stream() -> AsyncIterator[bytes]:
        try:
            ready = {"twin_id": t["twin_id"], "kinds": sorted(sub.kinds or KINDS)}
            yield b"retry: 3000\nevent: ready\ndata: " + orjson.dumps(ready) + b"\n\n"
            n = 0
            while True:
                try:
                    note = await asyncio.wait_for(sub.queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield b": keep-alive\n\n"
                    continue
                n += 1
                if sub.dropped:
                    note = {**note, "dropped_before": sub.dropped}
                    sub.dropped = 0
                ev = note["event"].encode()
                yield b"id: %d\nevent: %s\ndata: %s\n\n" % (n, ev, orjson.dumps(note))
        finally:
            feed.unsubscribe(sub)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
