# Runs on CPython (host): /v1/events — the event bus as a server-sent-events stream.
"""``GET /v1/events[?kinds=tap,sale]`` (``events.read``): one SSE message per bus event
(``id``, ``event`` = kind, ``data`` = the JSON envelope ``{"id", "kind", "ts", "data"}``), and a
comment line every :data:`KEEPALIVE_S` seconds so proxies keep the connection open. A client
that does not keep up loses its oldest events (a gap in the ids)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from host.web.context import WebContext
from host.web.deps import context, need
from host.web.events import KINDS, check_kinds
from host.web.models import ErrorOut
from host.web.permissions import Actor

#: Seconds between keep-alive comments on an idle stream.
KEEPALIVE_S = 15.0

router = APIRouter(tags=["events"],
                   responses={s: {"model": ErrorOut} for s in (400, 401, 403)})


async def _stream(ctx: WebContext, kinds: frozenset[str] | None) -> AsyncIterator[str]:
    sub = ctx.open_stream(kinds)
    try:
        yield ": tapkiosk events\n\n"
        while not sub.closed:
            event = await sub.next(KEEPALIVE_S)
            yield event.sse() if event is not None else ": keep-alive\n\n"
    finally:
        ctx.end_stream(sub)


@router.get("/events", summary="Server-sent events: taps, decisions, devices, sales",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
def events(kinds: str | None = Query(None, description=f"comma-separated: {', '.join(KINDS)}"),
           actor: Actor = Depends(need("events.read")),
           ctx: WebContext = Depends(context)) -> StreamingResponse:
    wanted = check_kinds(k.strip() for k in kinds.split(",") if k.strip()) if kinds else None
    return StreamingResponse(_stream(ctx, wanted),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
