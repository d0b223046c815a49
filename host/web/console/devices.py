# Runs on CPython (host): the technician's device page — readers, their health, settings, config pushes, keys.
"""``GET /devices``: each device's kind, settings, online state, last seen, firmware, last
tap and today's health (taps, denies, latency) from the store's own functions.

The technician's actions (``devices.write``), each one audited, idempotent write through
``actions.run`` (the form's key: a double submit is applied once):

* ``POST /devices/{id}/settings``: the settings of ``tapkiosk device add`` (name, hours,
  duplicate window; a gate's direction and anti-passback; a kiosk's fixed price), parsed and
  checked by the store's ``parse_settings``: a bad value is one line on the page, nothing
  changed;
* ``POST /devices/{id}/push``: the device's config and, for a gate, its allow-list sent now
  by the daemon (``Service.push_config``) to a connected reader;
* ``POST /devices/{id}/key``: a new key and sequence epoch (``tapkiosk device key
  --rotate``); the key is shown once on the answer, never logged nor audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import Response

from host.errors import Conflict, InputError, NotFound
from host.store import frontdesk, reports
from host.store.devices import get_device, list_devices, parse_settings
from host.web.console import actions
from host.web.console.core import console, need, redirect, render
from host.web.console.permissions import StaffActor

router = APIRouter(prefix="/devices")
DeviceId = Path(pattern=r"^[A-Za-z0-9_.-]{1,16}$")


def _page(request: Request, actor: StaffActor, status: int = 200, **values: Any) -> Response:
    ctx = console(request).ctx
    db = ctx.read_db()
    try:
        health = {r["device_id"]: r for r in reports.devices(
            db, ctx.policy, datetime.now(ctx.policy.tz), 1, store=actor.store)}
        devices = [d for d in list_devices(db) if d["device_id"] in health]  # actor's store
        last = frontdesk.last_taps(db)
    finally:
        db.conn.close()
    values.setdefault("error", None)
    values.setdefault("notice", None)
    return render(request, "devices.html", status=status, devices=devices, health=health,
                  last=last, key=actions.new_form_key, **values)


@router.get("")
def devices_page(request: Request, actor: StaffActor = Depends(need("devices.read"))
                 ) -> Response:
    return _page(request, actor)


def _kind(request: Request, actor: StaffActor, device_id: str) -> str:
    """The device's kind; a store-scoped technician may act on their store's readers only
    (the same answer as for a device that does not exist: nothing is told of other stores)."""
    db = console(request).ctx.read_db()
    try:
        dev = get_device(db, device_id)
    finally:
        db.conn.close()
    if actor.store is not None and dev.get("store") != actor.store:
        raise NotFound(f"unknown device {device_id!r}")
    return dev["kind"]


@router.post("/{device_id}/settings")
def edit_settings(request: Request, device_id: str = DeviceId, key: str = Form(""),
                  name: str | None = Form(None), hours: str | None = Form(None),
                  duplicate_window_s: str | None = Form(None),
                  direction: str | None = Form(None), anti_passback: str | None = Form(None),
                  fixed_price: str | None = Form(None),
                  actor: StaffActor = Depends(need("devices.write"))) -> Response:
    k = actions.form_key(key)
    given = {"name": name, "hours": hours, "duplicate_window_s": duplicate_window_s,
             "direction": direction, "anti_passback": anti_passback, "fixed_price": fixed_price}
    try:
        settings = parse_settings(_kind(request, actor, device_id),
                                  {f: v.strip() for f, v in given.items() if v is not None})
        actions.run(console(request).ctx, actor,
                    lambda admin: admin.set_device(device_id, settings, key=k))
    except InputError as e:
        return _page(request, actor, 400, error=f"{device_id}: {e}")
    return redirect(request, f"/devices?saved={device_id}#device-{device_id}")


@router.post("/{device_id}/push")
def push_config(request: Request, device_id: str = DeviceId, key: str = Form(""),
                actor: StaffActor = Depends(need("devices.write"))) -> Response:
    k = actions.form_key(key)
    _kind(request, actor, device_id)
    ctx = console(request).ctx
    readers = ctx.links()
    st = readers.device(device_id)
    if st is None:
        raise NotFound(f"unknown device {device_id!r}")
    if not st.online:       # refused before anything is recorded
        raise Conflict(f"device {device_id} is offline: it gets its config and allow-list "
                       "when it next connects")
    recorded = actions.run(ctx, actor, lambda admin: admin.record_config_push(device_id, key=k))
    if recorded["replayed"]:
        return _page(request, actor, notice=("replayed", device_id, recorded))
    return _page(request, actor, notice=("pushed", device_id, readers.push_config(device_id)))


@router.post("/{device_id}/key")
def rotate_key(request: Request, device_id: str = DeviceId, key: str = Form(""),
               actor: StaffActor = Depends(need("devices.write"))) -> Response:
    k = actions.form_key(key)
    kind = _kind(request, actor, device_id)
    result = actions.run(console(request).ctx, actor,
                         lambda admin: admin.rotate_device_key(device_id, key=k))
    return render(request, "device_key.html", device_id=device_id, kind=kind,
                  new_key=result.get("new_key"))
