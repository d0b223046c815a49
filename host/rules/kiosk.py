# Runs on CPython (host): kiosk rules — the amount comes from the tap, paid from stored value.
"""Kiosk taps: the amount is the tap's (0 < amount <= ``kiosk.max_amount``), paid from stored
value at the tier price (or a discount card's covering ``kiosk``); points are earned."""

from __future__ import annotations

from host.rules.context import Outcome, TapContext
from host.rules.payment import pay


def decide(ctx: TapContext) -> Outcome:
    """Decide a kiosk tap; raises ``Denied`` (``invalid_amount`` for an amount out of range)."""
    pol = ctx.policy
    amount = ctx.tap.amount_fen
    if not 0 < amount <= pol.kiosk_max_fen:
        raise ctx.deny("invalid_amount", "Invalid amount")
    out = pay(ctx, "kiosk", ("balance",), amount)
    out.relay_ms = pol.kiosk_relay_ms
    return out
