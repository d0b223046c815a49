# Runs on CPython (host): how a tap is paid — time pass, punch card or stored value, in the policy's order.
"""Payment choice for one service.

:func:`pay` tries the methods of ``order`` in turn: ``pass`` (a time pass covering the
service, within its daily cap), ``punch`` (a punch card with uses left, oldest first) and
``balance`` (stored value at the tier price, or a discount card's price when lower, less the
best open coupon (``host.rules.coupons``), less the points the member asked to pay with
(``host.rules.pay_points``); points and a qualifying purchase earned on the stored value
paid). When none pays, a coupon that pays the whole price (a free wash or entry) is used;
else the deny reason is, in priority, ``daily_cap``, ``insufficient_balance``, ``no_pass``.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta
from typing import NamedTuple

from host.errors import InsufficientFunds
from host.ledger import book as ledger
from host.ledger import rewards
from host.ledger.periods import day_start
from host.money import format_fen
from host.rules import campaigns, coupons, pay_points
from host.rules.context import Outcome, TapContext


class PassRow(NamedTuple):
    """A pass as the payment rules read it."""

    id: int
    covers: str
    ends_at: int
    uses_left: int | None
    daily_cap: int | None
    discount_pct: int | None


def passes(conn: sqlite3.Connection, member_id: int, cover: str, ts: int,
           kind: str) -> list[PassRow]:
    """The member's valid passes of ``kind`` covering ``cover``, oldest first."""
    rows = conn.execute(
        "SELECT id, covers, ends_at, uses_left, daily_cap, discount_pct FROM passes "
        "WHERE member_id = ? AND kind = ? AND starts_at <= ? AND (ends_at = 0 OR ends_at > ?)"
        " ORDER BY created_at, id", (member_id, kind, ts, ts)).fetchall()
    return [p for p in map(PassRow._make, rows) if cover in json.loads(p.covers)]


def used_today(conn: sqlite3.Connection, pass_id: int, now: datetime,
               count_direction: bool) -> int:
    """Granted taps on ``pass_id`` since local midnight (entries only for a gate)."""
    sql = ("SELECT count(*) FROM taps WHERE pass_id = ? AND ts >= ? AND verdict = 'grant'"
           " AND id NOT IN (SELECT tap_id FROM tap_voids)")   # a voided tap used nothing
    if count_direction:
        sql += " AND coalesce(direction, 'in') <> 'out'"
    return conn.execute(sql, (pass_id, day_start(now))).fetchone()[0]


def pay(ctx: TapContext, cover: str, order: tuple[str, ...], price_fen: int,
        count_direction: bool = False) -> Outcome:
    """Pay for one service with the first method in ``order`` that covers it; raises
    ``Denied`` when none does."""
    capped = False
    short = False
    for method in order:
        if method in ("pass", "punch"):
            out, was_capped = _by_pass(ctx, cover, method, count_direction)
            capped = capped or was_capped
            if out is not None:
                return out
        elif method == "balance" and price_fen > 0:
            out = _by_balance(ctx, cover, price_fen)
            if out is not None:
                return out
            short = True
    free = _by_coupon(ctx, cover, price_fen)
    if free is not None:
        return free
    if capped:
        raise ctx.deny("daily_cap", "Pass used up for today")
    if short:
        bal = ctx.member.balance_fen()
        raise ctx.deny("insufficient_balance", f"余额不足 balance {format_fen(bal)}")
    raise ctx.deny("no_pass", "No valid pass")


def _by_pass(ctx: TapContext, cover: str, method: str, count_direction: bool
             ) -> tuple[Outcome | None, bool]:
    """A time pass (``method`` "pass") or punch card ("punch"): (Outcome or None, capped)."""
    capped = False
    kind = "time" if method == "pass" else "punch"
    for p in passes(ctx.conn, ctx.member.id, cover, ctx.ts, kind) if ctx.member.passes else ():
        if kind == "punch" and not p.uses_left:
            continue
        if p.daily_cap and used_today(ctx.conn, p.id, ctx.now, count_direction) >= p.daily_cap:
            capped = True
            continue
        if kind == "time":
            until = datetime.fromtimestamp(p.ends_at, ctx.now.tzinfo) - timedelta(seconds=1)
            return Outcome("grant", "ok", f"pass to {until:%m-%d}", pass_id=p.id), capped
        ledger.debit_use(ctx.conn, ctx.ts, ctx.member.id, p.id, "use", tap_id=ctx.tap_id)
        left = p.uses_left - 1
        return Outcome("grant", "ok", f"{left} left", pass_id=p.id, uses_left=left), capped
    return None, capped


def member_price(ctx: TapContext, cover: str, price_fen: int) -> tuple[int, int | None]:
    """(price, discount pass id or None): the best of the tier price and a discount card,
    less a campaign's extra discount (``host.rules.campaigns``)."""
    pol, m = ctx.policy, ctx.member
    tier = pol.tiers.get(m.tier) or pol.tiers[pol.default_tier]
    pay_fen = price_fen * tier.discount_pct // 100
    disc_pid = None
    for p in passes(ctx.conn, m.id, cover, ctx.ts, "discount") if m.passes else ():
        cand = price_fen * p.discount_pct // 100
        if cand < pay_fen:
            pay_fen, disc_pid = cand, p.id
    extra = campaigns.extra_discount_pct(pol, ctx.now, ctx.kind)
    return pay_fen * (100 - extra) // 100, disc_pid


def _by_coupon(ctx: TapContext, cover: str, price_fen: int) -> Outcome | None:
    """When nothing else paid: a coupon that pays the whole member price (free entry/wash)."""
    pay_fen, _ = member_price(ctx, cover, price_fen)
    a = coupons.whole(ctx, cover, pay_fen) if pay_fen > 0 else None
    if a is None:
        return None
    coupons.use(ctx, a)
    return Outcome("grant", "ok", f"{coupons.label(a)}free")


def _by_balance(ctx: TapContext, cover: str, price_fen: int) -> Outcome | None:
    """Stored value at the best of tier price and discount card, less the best coupon, less
    the points the member asked to pay with (``host.rules.pay_points``); None when stored
    value is short (the coupon and the points stay unused then)."""
    pol, m = ctx.policy, ctx.member
    pay_fen, disc_pid = member_price(ctx, cover, price_fen)
    if pay_fen <= 0:
        return Outcome("grant", "ok", "free", pass_id=disc_pid)
    applied = coupons.pick(ctx, cover, pay_fen)
    if applied is not None:
        pay_fen -= applied.saved_fen
        if pay_fen <= 0:
            coupons.use(ctx, applied)
            return Outcome("grant", "ok", f"{coupons.label(applied)}free", pass_id=disc_pid)
    part = pay_points.plan(ctx, pay_fen)          # none unless the member asked for it
    pay_fen -= part.fen
    try:
        if pay_fen:
            ledger.spend(ctx.conn, ctx.ts, m.id, pay_fen, pol.spend_order, "spend",
                         tap_id=ctx.tap_id, pending=m.pending)
    except InsufficientFunds:
        return None
    if part.points:
        pay_points.take(ctx, part)
    if applied is not None:
        coupons.use(ctx, applied)
    earned = rewards.earn(ctx.conn, pol, m.id, m.birthday, pay_fen, ctx.now, ctx.ts,
                          tap_id=ctx.tap_id, pending=m.pending, campaign_kind=ctx.kind)
    campaigns.issue_coupons(ctx.conn, pol, m.id, ctx.now, ctx.ts, ctx.kind)
    rewards.qualify(ctx.conn, pol, m.id, ctx.ts, paid_fen=pay_fen, now=ctx.now,
                    pending=m.pending, current=(m.tier, int(m.manual)), tap_id=ctx.tap_id)
    text = f"paid {format_fen(pay_fen)} left {format_fen(m.balance_fen())}"
    if applied is not None or part.points:
        text = f"{coupons.label(applied)}{pay_points.label(part)}{text}"
    return Outcome("grant", "ok", text, charged_fen=pay_fen, points_earned=earned,
                   pass_id=disc_pid, points_paid=part.points, points_paid_fen=part.fen)
