# Runs on CPython (host): gate rules — direction, opening hours, anti-passback, entry paid by a pass.
"""Gate taps: the direction is the device's (``in``/``out``) or the tap's when the device is
``both``. Leaving is always allowed (nobody is locked in) unless anti-passback finds the
member outside; entering needs opening hours, no anti-passback conflict and a pass or punch
card covering ``gate`` (``gate.order``). Presence is kept in ``presence``; an entry counts as
inside for ``gate.presence_expiry_hours`` (then the member may enter again without an exit)."""

from __future__ import annotations

import sqlite3

from host.rules.context import Outcome, TapContext
from host.rules.payment import pay


def decide(ctx: TapContext) -> Outcome:
    """Decide a gate tap (see the module doc); raises ``Denied``."""
    pol, m = ctx.policy, ctx.member
    fixed = ctx.settings.get("direction", "both")
    direction = fixed if fixed in ("in", "out") else (ctx.tap.direction or "in")
    if direction not in ("in", "out"):
        raise ctx.deny("internal", "Bad direction")
    apb = ctx.settings.get("anti_passback", True)
    if direction == "out":  # leaving after a long stay is fine: no expiry here
        if apb and not is_inside(ctx.conn, m.id, ctx.ts, 0):
            raise ctx.deny("passback", "Not checked in")
        set_presence(ctx.conn, m.id, 0, ctx.tap.device_id, ctx.ts)
        return Outcome("grant", "ok", f"Goodbye {m.name}", relay_ms=pol.gate_relay_ms)
    if not ctx.open_now():
        raise ctx.closed()
    if apb and is_inside(ctx.conn, m.id, ctx.ts, pol.presence_expiry_hours):
        raise ctx.deny("passback", "Already checked in")
    out = pay(ctx, "gate", pol.gate_order, pol.gate_price_fen, count_direction=True)
    set_presence(ctx.conn, m.id, 1, ctx.tap.device_id, ctx.ts)
    out.relay_ms = pol.gate_relay_ms
    out.text = f"Welcome {m.name} · {out.text}"
    return out


def is_inside(conn: sqlite3.Connection, member_id: int, ts: int, expiry_hours: int) -> bool:
    """Whether the member counts as inside at ``ts``: entered, not left, and (with
    ``expiry_hours``) entered less than that many hours ago (a member who never taps out is
    not refused for ever)."""
    pres = conn.execute("SELECT inside, ts FROM presence WHERE member_id = ?",
                        (member_id,)).fetchone()
    if not pres or not pres[0]:
        return False
    return not expiry_hours or ts - pres[1] < expiry_hours * 3600


def set_presence(conn: sqlite3.Connection, member_id: int, inside: int, device_id: str,
                 ts: int) -> None:
    """Record the member inside (1) or outside (0), by ``device_id`` at ``ts``."""
    conn.execute("INSERT INTO presence (member_id, inside, device_id, ts) VALUES (?,?,?,?) "
                 "ON CONFLICT (member_id) DO UPDATE SET inside = excluded.inside, "
                 "device_id = excluded.device_id, ts = excluded.ts",
                 (member_id, inside, device_id, ts))
