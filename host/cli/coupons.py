# Runs on CPython (host): `tapkiosk coupon ...` — issue, list, hand over, the daily rules, the templates.
"""Coupon commands: ``coupon issue MEMBER TEMPLATE`` (a manager's coupon), ``coupon list
MEMBER [--all]``, ``coupon redeem COUPON`` (a gift item handed over at the counter),
``coupon run`` (the daily rules: birthdays, win-back) and ``coupon templates``."""

from __future__ import annotations

import argparse
from typing import Any

from host.cli.args import Parents, group, member_arg, whole
from host.cli.context import Ctx, Handler
from host.store import views


def add_parsers(sub: Any, p: Parents) -> None:
    """``coupon issue|list|redeem|run|templates``."""
    c = group(sub, "coupon", "coupons")
    t = c.add_parser("issue", help="give a member a coupon of a policy template", **p.write)
    t.add_argument("member", type=member_arg)
    t.add_argument("template")
    t = c.add_parser("list", help="a member's open coupons (--all: used and expired too)",
                     **p.read)
    t.add_argument("member", type=member_arg)
    t.add_argument("--all", action="store_true")
    t = c.add_parser("redeem", help="use a coupon at the counter (a gift item)", **p.write)
    t.add_argument("coupon_id", type=whole("coupon id"))
    c.add_parser("run", help="issue the daily rule coupons (birthdays, win-back)", **p.write)
    c.add_parser("templates", help="the coupon templates of the policy", **p.read)


def coupon_issue(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.issue_coupon(a.member, a.template, key=a.key))


def coupon_list(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(views.coupons(ctx.db, a.member, ctx.ts(), a.all))


def coupon_redeem(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.redeem_coupon(a.coupon_id, key=a.key))


def coupon_run(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.run_coupon_rules(key=a.key))


def coupon_templates(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show([{"template": t.name, "kind": t.kind,
               "off_fen": t.value if t.kind == "amount_off" else None,
               "off_pct": t.value if t.kind == "percent_off" else None,
               "min_spend_fen": t.min_spend_fen, "covers": " ".join(t.covers) or "all",
               "item": t.item, "valid_days": t.valid_days}
              for t in ctx.policy.coupon_templates.values()])


COMMANDS: dict[str, Handler] = {
    "coupon issue": coupon_issue, "coupon list": coupon_list, "coupon redeem": coupon_redeem,
    "coupon run": coupon_run, "coupon templates": coupon_templates,
}
