# Runs on CPython (host): `tapkiosk member ...` and `tapkiosk card ...` — parsers and handlers.
"""Member and card commands."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from host.store.uid import canonical_uid
from host.cli import privacy
from host.cli.args import Parents, date_arg, group, member_arg, whole
from host.cli.context import Ctx, Handler
from host.errors import InputError, NotFound
from host.privacy.mask import mask_phone, normalise_phone
from host.store import lookup, views


def add_parsers(sub: Any, p: Parents) -> None:
    """``member add|show|list|edit`` and ``card enroll|block|unblock|replace``."""
    member = group(sub, "member", "members")
    m = member.add_parser("add", **p.write)
    m.add_argument("--name", default="")
    m.add_argument("--phone", help="mainland mobile number (+86 allowed)")
    m.add_argument("--birthday", help="MM-DD or YYYY-MM-DD (only MM-DD is kept)")
    m.add_argument("--note")
    m.add_argument("--consent-terms", metavar="VERSION", help="the privacy terms version the "
                   "member accepted (needed with any personal field)")
    m.add_argument("--tier", help="manual tier (logged); default: the policy's default tier")
    m.add_argument("--referrer", type=member_arg, help="member id of the referrer")
    m = member.add_parser("show", **p.read)
    m.add_argument("member", nargs="?", type=member_arg)
    m.add_argument("--card", help="find the member by card UID")
    m.add_argument("--phone", help="find the member by phone (through the blind index)")
    m.add_argument("--reveal", action="store_true",
                   help="show name, phone, birthday and note in full (logged)")
    m = member.add_parser("list", **p.read)
    m.add_argument("--tier")
    m.add_argument("--limit", type=whole("limit"), default=1000)
    m = member.add_parser("edit", **p.write)
    m.add_argument("member", type=member_arg)
    m.add_argument("--name")
    m.add_argument("--phone")
    m.add_argument("--birthday")
    m.add_argument("--note")
    m.add_argument("--consent-terms", metavar="VERSION")
    m.add_argument("--tier", help="tier name (manual override) or 'auto'")
    m.add_argument("--status", choices=("active", "suspended"))
    m = member.add_parser("export", help="all of a member's data as JSON (logged reveal)",
                          **p.read)
    m.add_argument("member", type=member_arg)
    m.add_argument("--out", help="new file to write, mode 0600 (default: stdout)")
    m = member.add_parser("erase", help="destroy a member's personal data, block their "
                          "cards; the books stay", **p.write)
    m.add_argument("member", type=member_arg)

    card = group(sub, "card", "cards")
    c = card.add_parser("enroll", help="MEMBER UID, or UID --member M [--secure --reader R]",
                        **p.write)
    c.add_argument("first", metavar="MEMBER|UID")
    c.add_argument("second", nargs="?", metavar="UID")
    c.add_argument("--member", type=member_arg, help="member id (then give only the UID)")
    c.add_argument("--secure", action="store_true",
                   help="personalise a blank NTAG 424 DNA on --reader (host/SECURE.md)")
    c.add_argument("--reader", help="nfcpy reader: usb, tty:USB0:pn532, udp:HOST:PORT, "
                   "or pn532:/dev/SERIAL")
    c.add_argument("--expires", type=date_arg, help="YYYY-MM-DD (card refused from that day)")
    for name in ("block", "unblock"):
        c = card.add_parser(name, **p.write)
        c.add_argument("uid")
    c = card.add_parser("replace", help="lost card: block OLD, move everything to NEW", **p.write)
    c.add_argument("old_uid")
    c.add_argument("new_uid")


def member_add(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.add_member(a.name, phone=a.phone, birthday=a.birthday, note=a.note,
                                  consent_terms=a.consent_terms, tier=a.tier,
                                  referrer_id=a.referrer, key=a.key))


def member_show(ctx: Ctx, a: argparse.Namespace) -> None:
    if sum(x is not None for x in (a.member, a.card, a.phone)) != 1:
        raise InputError("give a member id, --card UID or --phone NUMBER")
    mid = a.member
    if a.card is not None:
        mid = views.member_id_of_card(ctx.db, canonical_uid(a.card))
    if a.phone is not None:
        found = lookup.members_by_phone(ctx.db, a.phone)
        if not found:
            raise NotFound(f"no member with phone {mask_phone(normalise_phone(a.phone))}")
        mid = found[0]["id"]
    m = views.member(ctx.db, mid)
    if a.reveal:
        m.update(ctx.admin.reveal(mid))
    ctx.show(m)


def member_list(ctx: Ctx, a: argparse.Namespace) -> None:
    if a.tier is not None and a.tier not in ctx.policy.tiers:
        raise InputError(f"unknown tier {a.tier!r} (tiers: {', '.join(ctx.policy.tiers)})")
    ctx.show(views.members(ctx.db, a.tier, a.limit))


def member_edit(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.edit_member(a.member, name=a.name, phone=a.phone, birthday=a.birthday,
                                   note=a.note, consent_terms=a.consent_terms, tier=a.tier,
                                   status=a.status, key=a.key))


def member_export(ctx: Ctx, a: argparse.Namespace) -> None:
    privacy.dump(ctx, ctx.admin.export_member(a.member), a.out)


def member_erase(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.erase_member(a.member, key=a.key))


def _enroll_target(a: argparse.Namespace) -> tuple[int, str]:
    """(member, uid) from ``MEMBER UID`` or ``UID --member M``."""
    if a.member is not None:
        if a.second is not None:
            raise InputError("give UID --member M, or MEMBER UID (not both)")
        return a.member, a.first
    if a.second is not None:
        return member_arg(a.first), a.second
    raise InputError("give the member: UID --member M")


def card_enroll(ctx: Ctx, a: argparse.Namespace) -> None:
    exp = 0
    if a.expires:
        exp = int(datetime(a.expires.year, a.expires.month, a.expires.day,
                           tzinfo=ctx.policy.tz).timestamp())
        if exp <= ctx.ts():
            raise InputError(f"--expires {a.expires.isoformat()} is not in the future")
    member, uid = _enroll_target(a)
    if a.secure:
        if not a.reader:
            raise InputError("--secure needs --reader (e.g. usb or tty:USB0:pn532)")
        from host.secure.enroll import enroll_secure, nfc_reader
        ctx.show(enroll_secure(ctx.admin, member, uid, nfc_reader(a.reader), expires_at=exp,
                               key=a.key))
    elif a.reader:
        raise InputError("--reader is only used with --secure")
    else:
        ctx.show(ctx.admin.enroll_card(member, uid, expires_at=exp, key=a.key))


def card_block(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.set_card_status(a.uid, "blocked", key=a.key))


def card_unblock(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.set_card_status(a.uid, "active", key=a.key))


def card_replace(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.replace_card(a.old_uid, a.new_uid, key=a.key))


COMMANDS: dict[str, Handler] = {
    "member add": member_add, "member show": member_show, "member list": member_list,
    "member edit": member_edit, "member export": member_export, "member erase": member_erase,
    "card enroll": card_enroll, "card block": card_block,
    "card unblock": card_unblock, "card replace": card_replace,
}
