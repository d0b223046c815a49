# Runs on CPython (host): the technician's device page — every reader, its settings and health.
"""``GET /devices``: each device's kind, settings, online state, last seen, firmware, last
tap and today's health (taps, denies, latency) from the store's own functions."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from host.store import frontdesk, reports
from host.store.devices import list_devices
from host.web.console.core import console, need, render
from host.web.console.permissions import StaffActor

router = APIRouter(prefix="/devices")


@router.get("")
def devices_page(request: Request, actor: StaffActor = Depends(need("devices.read"))
                 ) -> Response:
    ctx = console(request).ctx
    db = ctx.read_db()
    try:
        health = {r["device_id"]: r for r in reports.devices(
            db, ctx.policy, datetime.now(ctx.policy.tz), 1, store=actor.store)}
        devices = [d for d in list_devices(db) if d["device_id"] in health]  # actor's store
        last = frontdesk.last_taps(db)
    finally:
        db.conn.close()
    return render(request, "devices.html", devices=devices, health=health, last=last)
