# Runs on CPython (host): `tapkiosk report daily|members|devices|dormant` — tables, JSON or CSV.
"""Report commands over ``host.store.reports``."""

from __future__ import annotations

import argparse
from typing import Any

from host.cli import render
from host.cli.args import Parents, date_arg, group, whole
from host.cli.context import Ctx, Handler
from host.store import outage, programme_reports, reports

_NAMES = ("daily", "members", "devices", "dormant", "referrals", "coupons", "campaigns",
          "spend", "top-spenders", "birthdays", "offline")


def add_parsers(sub: Any, p: Parents) -> None:
    """``report daily|members|devices|dormant|referrals|coupons|campaigns|spend|top-spenders|birthdays`` with ``--csv`` and ``--days``."""
    rep = group(sub, "report", "reports")
    for name in _NAMES:
        r = rep.add_parser(name, **p.read)
        r.add_argument("--csv", action="store_true")
        r.add_argument("--days", type=whole("days", 1, 3660))
        if name in ("daily", "devices"):
            r.add_argument("--store", help="that store of the chain only (default: chain-wide,"
                           " split per store when there is more than one)")
        if name == "daily":
            r.add_argument("--date", type=date_arg, help="last day (default: today)")
        if name == "top-spenders":
            r.add_argument("--limit", type=whole("limit", 1, 1000), default=10)


def _print(ctx: Ctx, a: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    if a.csv:
        render.write_csv(rows, ctx.out)
    else:
        ctx.show(rows)


def daily(ctx: Ctx, a: argparse.Namespace) -> None:
    _print(ctx, a, reports.daily(ctx.db, ctx.policy, a.date or ctx.now.date(), a.days or 7,
                                 store=a.store, breakdown=True))


def members(ctx: Ctx, a: argparse.Namespace) -> None:
    _print(ctx, a, reports.members(ctx.db, ctx.policy, ctx.now, a.days or 30))


def devices(ctx: Ctx, a: argparse.Namespace) -> None:
    _print(ctx, a, reports.devices(ctx.db, ctx.policy, ctx.now, a.days or 1, store=a.store))


def dormant(ctx: Ctx, a: argparse.Namespace) -> None:
    _print(ctx, a, reports.dormant(ctx.db, ctx.policy, ctx.now, a.days))


def offline_report(ctx: Ctx, a: argparse.Namespace) -> None:
    """Taps granted during a WAN outage that the chain's database refused on replay."""
    rows = outage.unapplied(ctx.db)
    if a.days:
        rows = [r for r in rows if r["tapped_at"] >= ctx.ts() - a.days * 86400]
    _print(ctx, a, rows)


def referrals_report(ctx: Ctx, a: argparse.Namespace) -> None:
    _print(ctx, a, programme_reports.referrals(ctx.db, ctx.policy, ctx.now, a.days))


def coupons_report(ctx: Ctx, a: argparse.Namespace) -> None:
    _print(ctx, a, programme_reports.coupons(ctx.db, ctx.policy, ctx.now, a.days))


def campaigns_report(ctx: Ctx, a: argparse.Namespace) -> None:
    _print(ctx, a, programme_reports.campaigns(ctx.db, ctx.policy, ctx.now))


def spend_report(ctx: Ctx, a: argparse.Namespace) -> None:
    _print(ctx, a, programme_reports.spend(ctx.db, ctx.policy, ctx.now, a.days or 30))


def top_spenders_report(ctx: Ctx, a: argparse.Namespace) -> None:
    _print(ctx, a, programme_reports.top_spenders(ctx.db, ctx.policy, ctx.now, a.days or 30,
                                                  a.limit))


def birthdays_report(ctx: Ctx, a: argparse.Namespace) -> None:
    _print(ctx, a, programme_reports.birthdays(ctx.db, ctx.policy, ctx.now, a.days or 14))


COMMANDS: dict[str, Handler] = {
    "report daily": daily, "report members": members, "report devices": devices,
    "report dormant": dormant, "report referrals": referrals_report,
    "report coupons": coupons_report, "report campaigns": campaigns_report,
    "report spend": spend_report, "report top-spenders": top_spenders_report,
    "report birthdays": birthdays_report, "report offline": offline_report,
}
