# Runs on CPython (host): `tapkiosk ledger|verify|expire|export` — the books: entries, checks, write-offs, dumps.
"""Ledger corrections and listing, the projection check, lot expiry and the JSON export."""

from __future__ import annotations

import argparse
import json
from typing import Any

from host.cli import privacy
from host.cli.args import Parents, group, member_arg, whole
from host.cli.context import Ctx, Handler
from host.ledger import book as ledger
from host.store import views


def add_parsers(sub: Any, p: Parents) -> None:
    """``ledger reverse|list``, ``verify``, ``expire`` and ``export``."""
    lg = group(sub, "ledger", "ledger entries")
    t = lg.add_parser("reverse", help="correct an entry with a reversing entry", **p.write)
    t.add_argument("entry_id", type=whole("ledger entry id"))
    t.add_argument("--reason", default="")
    t = lg.add_parser("list", **p.read)
    t.add_argument("member", type=member_arg)
    t.add_argument("--limit", type=whole("limit"), default=50)
    sub.add_parser("verify", help="recompute every projection from the ledger", **p.read)
    sub.add_parser("expire", help="write off expired bonus and points lots now", **p.write)
    e = sub.add_parser("export", help="dump every table as JSON", **p.read)
    e.add_argument("--out", help="file to write (default: stdout)")
    e.add_argument("--with-keys", action="store_true", help="include device keys")
    e.add_argument("--include-personal", action="store_true",
                   help="include members' personal fields in clear (the file is 0600)")


def ledger_reverse(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.reverse(a.entry_id, reason=a.reason, key=a.key))


def ledger_list(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(views.ledger(ctx.db, a.member, a.limit))


def verify(ctx: Ctx, a: argparse.Namespace) -> int:
    """Exit 1 when a projection differs from the ledger."""
    problems = ledger.verify(ctx.db)
    ctx.show({"ok": not problems, "ledger_rows": views.ledger_rows(ctx.db),
              "problems": problems})
    return 1 if problems else 0


def expire(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.expire(key=a.key))


def export(ctx: Ctx, a: argparse.Namespace) -> None:
    data = views.export(ctx.db, a.with_keys)
    if a.include_personal:
        data["members_personal"] = ctx.admin.reveal_all()
    text = json.dumps(data, ensure_ascii=False, sort_keys=True) + "\n"
    if not a.out:
        ctx.out.write(text)
        return
    privacy.write_private(a.out, text)
    ctx.show({"out": a.out, "tables": {k: len(v) for k, v in data.items()}})


COMMANDS: dict[str, Handler] = {
    "ledger reverse": ledger_reverse, "ledger list": ledger_list, "verify": verify,
    "expire": expire, "export": export,
}
