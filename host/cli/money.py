# Runs on CPython (host): `tapkiosk topup|refund|pass|points` — stored value, passes and points.
"""Commands that move value, all through the admin writes."""

from __future__ import annotations

import argparse
from typing import Any

from host.cli.args import Parents, group, member_arg, money_arg, whole
from host.cli.context import Ctx, Handler
from host.errors import InputError


def add_parsers(sub: Any, p: Parents) -> None:
    """``topup``, ``refund``, ``pass sell|plans|cancel`` and ``points redeem|gift|grant``."""
    t = sub.add_parser("topup", help="add stored value (ladder bonus applies)", **p.write)
    t.add_argument("member", type=member_arg)
    t.add_argument("amount", type=money_arg, help="yuan, e.g. 100.00")
    _counter(t)
    t = sub.add_parser("refund", help="refund principal (bonus is forfeited pro rata)", **p.write)
    t.add_argument("member", type=member_arg)
    t.add_argument("amount", nargs="?", type=money_arg, help="yuan; omit with --all")
    t.add_argument("--all", action="store_true", help="refund all principal")
    _counter(t)

    ps = group(sub, "pass", "passes")
    t = ps.add_parser("sell", **p.write)
    t.add_argument("member", type=member_arg)
    t.add_argument("plan")
    t.add_argument("--from-balance", action="store_true", help="pay from stored value")
    _counter(t)
    ps.add_parser("plans", help="list the plans of the policy", **p.read)
    t = ps.add_parser("cancel", help="stop a pass now, refund the unused part pro rata",
                      **p.write)
    t.add_argument("pass_id", type=whole("pass id"))
    _counter(t)

    pts = group(sub, "points", "points")
    t = pts.add_parser("redeem", help="points for a catalogue item or bonus balance",
                       **p.write)
    t.add_argument("member", type=member_arg)
    t.add_argument("points", nargs="?", type=whole("points"),
                   help="the points (for --item: optional, the catalogue price)")
    g = t.add_mutually_exclusive_group(required=True)
    g.add_argument("--item", help="a catalogue item (tapkiosk catalogue list)")
    g.add_argument("--to-balance", action="store_true", help="convert to bonus balance")
    t.add_argument("--qty", type=whole("quantity", 1, 1000), default=1)
    t = pts.add_parser("grant", help="a manager's grant of points, with the reason", **p.write)
    t.add_argument("member", type=member_arg)
    t.add_argument("points", type=whole("points"))
    t.add_argument("--reason", required=True)
    t = pts.add_parser("gift", **p.write)
    t.add_argument("from_member", type=member_arg)
    t.add_argument("to_member", type=member_arg)
    t.add_argument("points", type=whole("points"))


def _counter(t: Any) -> None:
    t.add_argument("--store", metavar="NAME",
                   help="a chain's store whose counter takes the cash (its daily report)")


def _at_counter(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.admin.store = a.store


def topup(ctx: Ctx, a: argparse.Namespace) -> None:
    _at_counter(ctx, a)
    ctx.show(ctx.admin.topup(a.member, a.amount, key=a.key))


def refund(ctx: Ctx, a: argparse.Namespace) -> None:
    if (a.amount is None) == (not a.all):
        raise InputError("give an amount or --all (not both)")
    _at_counter(ctx, a)
    ctx.show(ctx.admin.refund(a.member, None if a.all else a.amount, key=a.key))


def pass_sell(ctx: Ctx, a: argparse.Namespace) -> None:
    _at_counter(ctx, a)
    ctx.show(ctx.admin.sell_pass(a.member, a.plan, from_balance=a.from_balance, key=a.key))


def pass_cancel(ctx: Ctx, a: argparse.Namespace) -> None:
    _at_counter(ctx, a)
    ctx.show(ctx.admin.cancel_pass(a.pass_id, key=a.key))


def pass_plans(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show([{"plan": p.name, "kind": p.kind, "price_fen": p.price_fen,
               "covers": " ".join(p.covers), "duration": p.duration, "uses": p.uses,
               "daily_cap": p.daily_cap, "discount_pct": p.discount_pct}
              for p in ctx.policy.plans.values()])


def points_redeem(ctx: Ctx, a: argparse.Namespace) -> None:
    if a.to_balance and a.points is None:
        raise InputError("give the points to convert")
    ctx.show(ctx.admin.redeem_points(a.member, a.points, item=a.item, qty=a.qty,
                                     to_balance=a.to_balance, key=a.key))


def points_grant(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.grant_points(a.member, a.points, a.reason, key=a.key))


def points_gift(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.gift_points(a.from_member, a.to_member, a.points, key=a.key))


COMMANDS: dict[str, Handler] = {
    "topup": topup, "refund": refund, "pass sell": pass_sell, "pass plans": pass_plans,
    "pass cancel": pass_cancel,
    "points redeem": points_redeem, "points gift": points_gift, "points grant": points_grant,
}
