# Runs on CPython (host): coupons at a tap — the best open coupon taken off the price, shown on the reader.
"""Coupon application for the payment rules (``host.rules.payment``).

``pick`` finds the best coupon for a price (``host.ledger.coupons.best``: largest saving, then
expiring first); ``use`` records its redemption against the tap, so a void gives it back;
``label`` is the reader text part (``券-5.00``, or ``free (coupon)``)."""

from __future__ import annotations

from typing import NamedTuple

from host.ledger import coupons
from host.money import format_fen
from host.rules.context import TapContext


class Applied(NamedTuple):
    """A coupon chosen for a tap and what it saves."""

    coupon_id: int
    saved_fen: int


def pick(ctx: TapContext, cover: str, price_fen: int) -> Applied | None:
    """The best coupon for ``price_fen`` of ``cover``, or None."""
    if not ctx.member.coupons:
        return None   # the tap's card query found no valid coupon of the member
    found = coupons.best(ctx.conn, ctx.member.id, cover, price_fen, ctx.ts)
    return None if found is None else Applied(found[0].id, found[1])


def use(ctx: TapContext, a: Applied | None) -> None:
    """Record the coupon's redemption by this tap (nothing for None)."""
    if a is not None:
        coupons.redeem(ctx.conn, a.coupon_id, ctx.ts, saved_fen=a.saved_fen,
                       tap_id=ctx.tap_id)


def label(a: Applied | None) -> str:
    """The reader text for a used coupon ("" for none)."""
    return "" if a is None else f"券-{format_fen(a.saved_fen)} "


def whole(ctx: TapContext, cover: str, price_fen: int) -> Applied | None:
    """A coupon that pays all of ``price_fen`` (a free wash or entry), or None."""
    a = pick(ctx, cover, price_fen)
    return a if a is not None and a.saved_fen >= price_fen else None
