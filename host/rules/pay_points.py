# Runs on CPython (host): paying part of a sale with points — how many points a tap may use.
"""Points paying part of a sale (policy ``[points_payment]``, ``docs/operators.md``, "Paying
with points").

The member asks for it: the sale armed on the reader carries ``points`` (the kiosk page's
"use my points", the API's ``points``), an operator tap ``Tap.use_points`` (``tapkiosk tap
--use-points``): :data:`POINTS_MAX` for as many as the rules allow, or a number of points.
Only then does :func:`plan` do anything; it works on the price left after the member price
and the best coupon (``host.rules.payment``):

- at most ``max_share_pct`` of that price, in whole points (``fen_per_point`` fen each); a
  request above the cap is cut to the cap;
- a request for more points than the member has: ``short = "partial"`` uses what they have,
  ``"deny"`` refuses the tap (``insufficient_balance``, nothing moved);
- fewer than ``min_points`` are never used: the whole price is paid from stored value.

:func:`take` debits them (``host.ledger.points_pay``: the lot that expires first first) once
the stored-value part is paid, so a tap short of stored value moves nothing.
"""

from __future__ import annotations

from typing import NamedTuple

from host.ledger import points_pay
from host.money import format_fen
from host.rules.context import TapContext

#: A request for as many points as the rules allow.
POINTS_MAX = -1


class PointsPart(NamedTuple):
    """Points a tap pays with and the fen they pay."""

    points: int
    fen: int


NONE = PointsPart(0, 0)


def requested(ctx: TapContext) -> int:
    """The tap's request: 0 (none), :data:`POINTS_MAX` or a number of points."""
    if ctx.sale is not None:
        return ctx.sale.points
    return ctx.tap.use_points


def plan(ctx: TapContext, price_fen: int) -> PointsPart:
    """The points paying part of ``price_fen`` for the tap's request (:data:`NONE` without
    one); raises ``Denied`` when the policy's ``short`` rule is "deny" and the member has
    fewer than asked."""
    want = requested(ctx)
    if not want:
        return NONE
    pp = ctx.policy.points_payment
    if not pp.enabled or ctx.kind not in pp.kinds or price_fen <= 0:
        return NONE
    cap = price_fen * pp.max_share_pct // 100 // pp.fen_per_point
    have = ctx.member.pending.have("points")
    ask = cap if want == POINTS_MAX else min(want, cap)
    if ask > have:
        if pp.short == "deny" and want != POINTS_MAX:
            raise ctx.deny("insufficient_balance", f"积分不足 points {have}")
        ask = have
    if ask < pp.min_points:
        return NONE
    return PointsPart(ask, ask * pp.fen_per_point)


def take(ctx: TapContext, part: PointsPart) -> None:
    """Debit the points of ``part`` for this tap (nothing for none)."""
    if part.points:
        points_pay.take(ctx.conn, ctx.ts, ctx.member.id, part.points, part.fen,
                        tap_id=ctx.tap_id, pending=ctx.member.pending)


def label(part: PointsPart) -> str:
    """The reader text part: ``积分500抵5.00 `` ("" for none)."""
    return f"积分{part.points}抵{format_fen(part.fen)} " if part.points else ""
