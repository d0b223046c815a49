# Runs on CPython (host): `tapkiosk messages ...` — member contacts, the daily queue, draining the outbox.
"""Message commands: ``messages contact MEMBER [--email E] [--opt-out|--opt-in]``,
``messages queue`` (daily: birthdays, win-back coupons, points about to expire),
``messages send`` (deliver what is due, with retries) and ``messages list``."""

from __future__ import annotations

import argparse
from typing import Any

from host.cli.args import Parents, group, member_arg, whole
from host.cli.context import Ctx, Handler
from host.messages import channels, sender
from host.store import views


def add_parsers(sub: Any, p: Parents) -> None:
    """``messages contact|queue|send|list``."""
    g = group(sub, "messages", "member messages")
    t = g.add_parser("contact", help="a member's e-mail and opt-out", **p.write)
    t.add_argument("member", type=member_arg)
    t.add_argument("--email", help="e-mail address ('' clears it)")
    o = t.add_mutually_exclusive_group()
    o.add_argument("--opt-out", dest="opt_out", action="store_const", const=True)
    o.add_argument("--opt-in", dest="opt_out", action="store_const", const=False)
    g.add_parser("queue", help="queue today's birthday, win-back and expiry messages", **p.write)
    t = g.add_parser("send", help="deliver the messages that are due", **p.read)
    t.add_argument("--limit", type=whole("limit"), default=500)
    t = g.add_parser("list", help="the outbox, newest first", **p.read)
    t.add_argument("--status", choices=("pending", "sending", "sent", "failed", "skipped"))
    t.add_argument("--limit", type=whole("limit"), default=50)


def messages_contact(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.set_contact(a.member, email=a.email, opt_out=a.opt_out, key=a.key))


def messages_queue(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.queue_messages(key=a.key))


def messages_send(ctx: Ctx, a: argparse.Namespace) -> None:
    clock = ctx.admin.clock
    ctx.show(sender.send_due(ctx.db, ctx.policy, channels.for_policy(ctx.policy.messages),
                             lambda: int(clock().timestamp()), a.limit))


def messages_list(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(views.messages(ctx.db, a.status, a.limit))


COMMANDS: dict[str, Handler] = {
    "messages contact": messages_contact, "messages queue": messages_queue,
    "messages send": messages_send, "messages list": messages_list,
}
