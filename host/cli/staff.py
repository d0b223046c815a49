# Runs on CPython (host): `tapkiosk staff ...` (console accounts) and `tapkiosk audit` (the audit log).
"""Staff accounts of the web console and the audit log of every staff and CLI write.

``staff add NAME --role cashier|manager|technician [--store S]`` asks for the password (twice on a
terminal; one line on standard input otherwise, for scripts); ``staff list``, ``staff
disable|enable NAME``, ``staff role NAME ROLE``, ``staff password NAME``, ``staff store NAME --store S|--all``
(a store-scoped account sees and acts on its store's devices and reports only). ``audit`` prints the
log, newest first, filtered by ``--actor``, ``--action`` (``card`` matches ``card.enroll``),
``--member`` and ``--limit``. Each staff write is audited as ``cli:<os user>``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from host.cli.args import Parents, group, member_arg, whole
from host.cli.context import Ctx, Handler
from host.errors import InputError
from host.store import audit, staff, stores


def add_parsers(sub: Any, p: Parents) -> None:
    """``staff add|list|disable|enable|role|password`` and ``audit``."""
    st = group(sub, "staff", "web console staff accounts")
    s = st.add_parser("add", **p.read)
    s.add_argument("name")
    s.add_argument("--role", required=True, choices=staff.ROLES)
    s.add_argument("--store", help="the one store of the chain this account sees and acts "
                   "on (default: every store)")
    st.add_parser("list", **p.read)
    s = st.add_parser("store", help="scope an account to one store (--all: every store)",
                      **p.read)
    s.add_argument("name")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--store", help="a store name (tapkiosk store list)")
    g.add_argument("--all", action="store_true", help="every store of the chain")
    for name in ("disable", "enable", "password"):
        st.add_parser(name, **p.read).add_argument("name")
    s = st.add_parser("role", **p.read)
    s.add_argument("name")
    s.add_argument("role", choices=staff.ROLES)

    a = sub.add_parser("audit", help="the audit log of staff and CLI writes", **p.read)
    a.add_argument("--actor", help="a staff name or cli:USER")
    a.add_argument("--action", help="e.g. topup, refund, card (all card.* actions)")
    a.add_argument("--member", type=member_arg)
    a.add_argument("--limit", type=whole("limit", 1, audit.MAX_ROWS), default=50)


def _password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise InputError("the two passwords differ")
        return first
    line = sys.stdin.readline()
    if not line:
        raise InputError("no password on standard input")
    return line.rstrip("\r\n")


def _who() -> dict[str, str]:
    return {"actor": audit.cli_actor()}


def add(ctx: Ctx, a: argparse.Namespace) -> None:
    if a.store is not None:
        stores.store_id(ctx.db, a.store)   # an unknown store is refused before the password
    ctx.show(staff.add_staff(ctx.db, a.name, a.role, _password(), store=a.store, **_who()))


def store(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(staff.set_store(ctx.db, a.name, None if a.all else a.store, **_who()))


def list_(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(staff.list_staff(ctx.db))


def disable(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(staff.set_active(ctx.db, a.name, False, **_who()))


def enable(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(staff.set_active(ctx.db, a.name, True, **_who()))


def role(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(staff.set_role(ctx.db, a.name, a.role, **_who()))


def password(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(staff.set_password(ctx.db, a.name, _password(), **_who()))


def show_audit(ctx: Ctx, a: argparse.Namespace) -> None:
    rows = audit.rows(ctx.db, actor=a.actor, action=a.action, member_id=a.member,
                      limit=a.limit)
    if not ctx.as_json:
        rows = [{**r, "before": json.dumps(r["before"], ensure_ascii=False) if r["before"]
                 else "", "after": json.dumps(r["after"], ensure_ascii=False) if r["after"]
                 else ""} for r in rows]
    ctx.show(rows)


COMMANDS: dict[str, Handler] = {
    "staff add": add, "staff list": list_, "staff disable": disable, "staff enable": enable,
    "staff role": role, "staff password": password, "staff store": store,
    "audit": show_audit,
}
