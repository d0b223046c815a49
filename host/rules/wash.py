# Runs on CPython (host): wash-bay rules — the service code picks the program, paid in wash.order.
"""Wash taps: the tap's service code picks the program (``wash.programs``); within opening
hours it is paid by the first of ``wash.order`` (time pass, punch card, balance at the
tier price) that covers ``wash:<code>``."""

from __future__ import annotations

from host.rules.context import Outcome, TapContext
from host.rules.payment import pay


def decide(ctx: TapContext) -> Outcome:
    """Decide a wash tap; raises ``Denied``."""
    pol = ctx.policy
    prog = pol.programs.get(int(ctx.tap.service))
    if prog is None:
        raise ctx.deny("bad_service", f"Unknown program {int(ctx.tap.service)}")
    if not ctx.open_now():
        raise ctx.closed()
    out = pay(ctx, f"wash:{prog.code}", pol.wash_order, prog.price_fen)
    out.relay_ms = pol.wash_relay_ms
    out.text = f"{prog.name} · {out.text}"
    return out
