# Runs on CPython (host): the dashboard — today's figures, the live tap feed (SSE), the device board.
"""``GET /`` and ``GET /events`` (the bus as server-sent events for the live feed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from host.store import frontdesk, reports
from host.web.console.core import SESSION_COOKIE, console, need, render
from host.web.console.permissions import StaffActor

router = APIRouter()
#: Seconds between keep-alive comments on an idle feed.
KEEPALIVE_S = 15.0
#: Bus events the feed shows.
FEED_KINDS = frozenset({"tap", "decision", "device_online", "device_offline", "sale"})


@router.get("/")
def dashboard(request: Request, actor: StaffActor = Depends(need("dashboard.read"))
              ) -> Response:
    ctx = console(request).ctx
    now = datetime.now(ctx.policy.tz)
    db = ctx.read_db()
    try:
        today = reports.daily(db, ctx.policy, now.date(), 1, store=actor.store)[0]
        board = reports.devices(db, ctx.policy, now, 1, store=actor.store)
        last = frontdesk.last_taps(db)
    finally:
        db.conn.close()
    return render(request, "dashboard.html", today=today, board=board, last=last)


def _store_devices(request: Request, store: str | None) -> frozenset[str] | None:
    """The readers a store-scoped account's feed shows (None: every reader)."""
    if store is None:
        return None
    ctx = console(request).ctx
    db = ctx.read_db()
    try:
        return frozenset(d["device_id"] for d in reports.devices(
            db, ctx.policy, datetime.now(ctx.policy.tz), 1, store=store))
    finally:
        db.conn.close()


async def _feed(request: Request, devices: frozenset[str] | None = None) -> AsyncIterator[str]:
    con = console(request)
    ctx, sid = con.ctx, request.cookies.get(SESSION_COOKIE)
    sub = ctx.open_stream(FEED_KINDS)
    try:
        yield "event: ready\ndata: {}\n\n"  # subscribed: nothing published from now is lost
        while not sub.closed:
            event = await sub.next(KEEPALIVE_S)
            if not con.sessions.alive(sid):  # the feed ends with the session
                break
            if event is not None and devices is not None and \
                    event.data.get("device_id") not in devices:
                continue      # another store's reader (a store-scoped account)
            yield event.sse() if event is not None else ": keep-alive\n\n"
    finally:
        ctx.end_stream(sub)


@router.get("/events")
def events(request: Request, actor: StaffActor = Depends(need("events.read"))
           ) -> StreamingResponse:
    return StreamingResponse(_feed(request, _store_devices(request, actor.store)),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
