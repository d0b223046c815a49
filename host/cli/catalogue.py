# Runs on CPython (host): `tapkiosk catalogue ...` — what points buy, its prices and stock.
"""Catalogue commands: ``catalogue add NAME POINTS [--stock N]`` (no ``--stock``: unlimited),
``catalogue restock NAME N``, ``catalogue withdraw NAME`` and ``catalogue list``."""

from __future__ import annotations

import argparse
from typing import Any

from host.cli.args import Parents, group, whole
from host.cli.context import Ctx, Handler
from host.store import views


def add_parsers(sub: Any, p: Parents) -> None:
    """``catalogue add|restock|withdraw|list``."""
    c = group(sub, "catalogue", "the points catalogue")
    t = c.add_parser("add", help="a new item for points", **p.write)
    t.add_argument("name")
    t.add_argument("points", type=whole("points price"))
    t.add_argument("--stock", type=whole("stock", 0), help="units (default: unlimited)")
    t = c.add_parser("restock", **p.write)
    t.add_argument("name")
    t.add_argument("units", type=whole("units"))
    t = c.add_parser("withdraw", help="take an item off the catalogue", **p.write)
    t.add_argument("name")
    c.add_parser("list", **p.read)


def catalogue_add(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.add_item(a.name, a.points, stock_units=a.stock, key=a.key))


def catalogue_restock(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.restock(a.name, a.units, key=a.key))


def catalogue_withdraw(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.withdraw_item(a.name, key=a.key))


def catalogue_list(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(views.catalogue(ctx.db))


COMMANDS: dict[str, Handler] = {
    "catalogue add": catalogue_add, "catalogue restock": catalogue_restock,
    "catalogue withdraw": catalogue_withdraw, "catalogue list": catalogue_list,
}
