# Runs on CPython (host): kiosk rules — the armed sale's amount (or a fixed-price tap's), paid from stored value.
"""Kiosk taps pay the sale armed on the reader (``host.rules.sales``): its amount, from
stored value at the tier price (or a discount card's covering ``kiosk``); points are earned.
With no sale armed, a reader with the device setting ``fixed_price`` (a simple vending
point) pays the tap's own amount (0 < amount <= ``kiosk.max_amount``); any other is refused
``no_sale``, and so is a tap naming a sale that is no longer armed."""

from __future__ import annotations

from host.rules.context import Outcome, TapContext
from host.rules.payment import pay


def decide(ctx: TapContext) -> Outcome:
    """Decide a kiosk tap; raises ``Denied``."""
    pol = ctx.policy
    if not ctx.store_open():   # a chain store's hours (policy [stores.NAME])
        raise ctx.closed()
    if ctx.sale is not None:
        amount = ctx.sale.amount_fen
    elif ctx.tap.sale_id or not ctx.settings.get("fixed_price", True):
        raise ctx.deny("no_sale", "No sale - choose first 请先选择")
    else:
        amount = ctx.tap.amount_fen
    if not 0 < amount <= pol.kiosk_max_fen:
        raise ctx.deny("invalid_amount", "Invalid amount")
    out = pay(ctx, "kiosk", ("balance",), amount)
    out.relay_ms = pol.kiosk_relay_ms
    return out
