# Runs on CPython (host): wash-bay rules — the program (button or armed sale) is paid in wash.order.
"""Wash taps: the program is the armed sale's (``host.rules.sales``, armed through the API)
or else the tap's service code (the bay's program buttons); within opening hours it is paid
by the first of ``wash.order`` (time pass, punch card, balance at the tier price) that
covers ``wash:<code>``. A sale of products (no program) is paid from stored value."""

from __future__ import annotations

from host.rules.context import Outcome, TapContext
from host.rules.payment import pay


def decide(ctx: TapContext) -> Outcome:
    """Decide a wash tap; raises ``Denied``."""
    pol = ctx.policy
    sale = ctx.sale
    if sale is None and ctx.tap.sale_id:
        raise ctx.deny("no_sale", "Sale ended - choose again 请重新选择")
    if sale is not None and not sale.service:
        out = pay(ctx, "kiosk", ("balance",), sale.amount_fen)
        out.relay_ms = 0
        return out
    code = int(sale.service if sale is not None else ctx.tap.service)
    prog = pol.programs.get(code)
    if prog is None:
        raise ctx.deny("bad_service", f"Unknown program {code}")
    if not ctx.open_now():
        raise ctx.closed()
    out = pay(ctx, f"wash:{prog.code}", pol.wash_order, prog.price_fen)
    out.relay_ms = pol.wash_relay_ms
    out.text = f"{prog.name} · {out.text}"
    return out
