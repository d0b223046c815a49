# Runs on CPython (host): `tapkiosk tiers evaluate|history` — the tier rules run by hand or by a timer.
"""Tier commands: ``tiers evaluate`` applies upgrades and keep rules (保级) to every member
now (run it daily: a timer, or cron); ``tiers history [MEMBER]`` lists the changes."""

from __future__ import annotations

import argparse
from typing import Any

from host.cli.args import Parents, group, member_arg, whole
from host.cli.context import Ctx, Handler
from host.store import views


def add_parsers(sub: Any, p: Parents) -> None:
    """``tiers evaluate`` and ``tiers history [MEMBER] [--limit N]``."""
    t = group(sub, "tiers", "member tiers")
    t.add_parser("evaluate", help="apply upgrade and keep rules to every member now", **p.write)
    h = t.add_parser("history", help="tier changes, newest first", **p.read)
    h.add_argument("member", nargs="?", type=member_arg)
    h.add_argument("--limit", type=whole("limit"), default=50)


def tiers_evaluate(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.evaluate_tiers(key=a.key))


def tiers_history(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(views.tier_changes(ctx.db, a.member, a.limit))


COMMANDS: dict[str, Handler] = {"tiers evaluate": tiers_evaluate,
                                "tiers history": tiers_history}
