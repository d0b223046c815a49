# Runs on CPython (host): reports pages (daily, members, devices) with inline SVG charts and CSV.
"""``GET /reports`` renders the three reports of ``host.store.reports``; ``GET
/reports/{name}.csv`` downloads one. Charts are drawn here as inline SVG (no script)."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from host.errors import NotFound
from host.store import reports as store_reports
from host.web.console.core import console, need, render
from host.web.console.permissions import StaffActor

router = APIRouter(prefix="/reports")
NAMES = ("daily", "members", "devices")


def _rows(request: Request, name: str, store: str | None = None) -> list[dict[str, Any]]:
    """Report ``name``; ``store``: a store-scoped actor's store (members are chain-wide)."""
    ctx = console(request).ctx
    now = datetime.now(ctx.policy.tz)
    db = ctx.read_db()
    try:
        if name == "daily":
            return store_reports.daily(db, ctx.policy, now.date(), 7, store=store)
        if name == "members":
            return store_reports.members(db, ctx.policy, now)
        if name == "devices":
            return store_reports.devices(db, ctx.policy, now, store=store)
    finally:
        db.conn.close()
    raise NotFound(f"no report {name!r} (reports: {', '.join(NAMES)})")


def bar_chart(labels: list[str], values: list[int], width: int = 560, height: int = 160
              ) -> dict[str, Any]:
    """Bars of ``values`` (non-negative), for the ``chart`` template macro."""
    top = max([v for v in values if v > 0] or [1])
    slot = width / max(1, len(values))
    bars = []
    for i, (label, v) in enumerate(zip(labels, values)):
        h = round((height - 30) * max(v, 0) / top)
        bars.append({"x": round(i * slot + slot * 0.15), "w": round(slot * 0.7),
                     "y": height - 20 - h, "h": h, "label": label, "value": v,
                     "tx": round(i * slot + slot / 2)})
    return {"width": width, "height": height, "bars": bars}


@router.get("")
def reports_page(request: Request, actor: StaffActor = Depends(need("reports.read"))
                 ) -> Response:
    daily = _rows(request, "daily", actor.store)
    chart = bar_chart([d["date"][5:] for d in daily], [d["revenue_fen"] or 0 for d in daily])
    taps = bar_chart([d["date"][5:] for d in daily], [d["taps"] for d in daily])
    return render(request, "reports.html", daily=daily, members=_rows(request, "members"),
                  devices=_rows(request, "devices", actor.store), chart=chart,
                  taps_chart=taps)


@router.get("/{name}.csv")
def report_csv(request: Request, name: str,
               actor: StaffActor = Depends(need("reports.read"))) -> Response:
    rows = _rows(request, name, actor.store)
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"',
                             "Cache-Control": "no-store"})
