# Runs on CPython (host): the reports page (daily, taps by hour, members, devices) with SVG charts and CSV.
"""``GET /reports`` renders the reports of ``host.store.reports`` with three charts (revenue
by day, taps by hour, the members' activity / repurchase / points redemption rates);
``GET /reports/{name}.csv`` downloads one report as the CLI's ``--csv`` writes it."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlite_utils
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from host.csvrows import write_csv
from host.errors import NotFound
from host.money import format_fen
from host.rules.policy import Policy
from host.store import reports as store_reports
from host.web.console.charts import bar_chart, percent
from host.web.console.core import console, need, render
from host.web.console.permissions import StaffActor

router = APIRouter(prefix="/reports")
#: Site-local days of the daily report and of the taps-by-hour chart (today the last).
DAYS = 7
Read = Callable[[sqlite_utils.Database, Policy, datetime], list[dict[str, Any]]]
#: Every report of the page, by the name of its CSV download.
READS: dict[str, Read] = {
    "daily": lambda db, pol, now, st: store_reports.daily(db, pol, now.date(), DAYS, store=st),
    "hours": lambda db, pol, now, st: store_reports.taps_by_hour(db, pol, now.date(), DAYS,
                                                                 store=st),
    # Members are chain-wide: a card topped up at one store pays at another.
    "members": lambda db, pol, now, st: store_reports.members(db, pol, now),
    "devices": lambda db, pol, now, st: store_reports.devices(db, pol, now, store=st),
}
#: The rates charted, from the member report's total row: (column, label).
RATES = (("activity_rate", "Activity"), ("repurchase_rate", "Repurchase"),
         ("points_redemption_rate", "Points redemption"))


def _read(request: Request, names: tuple[str, ...], store: str | None = None
          ) -> tuple[datetime, dict[str, Any]]:
    """The reports ``names`` on one read-only connection, and the time they were read;
    ``store``: a store-scoped actor's store (members are chain-wide)."""
    ctx = console(request).ctx
    now = datetime.now(ctx.policy.tz)
    db = ctx.read_db()
    try:
        return now, {name: READS[name](db, ctx.policy, now, store) for name in names}
    finally:
        db.conn.close()


def charts(daily: list[dict[str, Any]], hours: list[dict[str, Any]],
           members: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The page's three charts, from its reports."""
    total = members[-1]
    return {
        # A store's row has no counter cash (it names no reader): None, charted as 0.
        "revenue": bar_chart([d["date"][5:] for d in daily],
                             [d["revenue_fen"] or 0 for d in daily],
                             format_fen, width=330),
        "hours": bar_chart([f"{h['hour']:02d}" for h in hours], [h["taps"] for h in hours],
                           width=430, label_every=3),
        "rates": bar_chart([label for _, label in RATES], [total[k] for k, _ in RATES],
                           percent, top=1.0, width=300),
    }


@router.get("")
def reports_page(request: Request, actor: StaffActor = Depends(need("reports.read"))
                 ) -> Response:
    now, rep = _read(request, tuple(READS), actor.store)
    return render(request, "reports.html", today=now.date().isoformat(),
                  charts=charts(rep["daily"], rep["hours"], rep["members"]),
                  percent=percent, **rep)


@router.get("/{name}.csv")
def report_csv(request: Request, name: str,
               actor: StaffActor = Depends(need("reports.read"))) -> Response:
    if name not in READS:
        raise NotFound(f"no report {name!r} (reports: {', '.join(READS)})")
    now, rep = _read(request, (name,), actor.store)
    out = io.StringIO()
    write_csv(rep[name], out)
    filename = f"tapkiosk-{name}-{now.date().isoformat()}.csv"
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "Cache-Control": "no-store"})
