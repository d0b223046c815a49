# Runs on CPython (host): offline taps — granted by a device from its allow-list, or by a store's daemon in a WAN outage.
"""Offline taps.

:func:`record`: a tap with the flag offline (a gate opened from its allow-list, the member
went through) is recorded as ``grant``/``offline``; a time pass or, failing that, a
punch-card use covering the service is applied to an entry; a gate's presence follows the
direction. Stored value is never charged and the tap is never refused after the fact.

:func:`decide_outage`: a store's daemon cut off from the chain's database (issue 17)
decides a tap from its local snapshot of the member (``host.site.journal``) and the
policy's ``[offline]`` allowance, with no database at all. A gate exit is always granted;
an entry or a wash needs a time pass (``offline.passes``) or a punch card with uses left
(``offline.punch``) covering it; else a wash or kiosk tap is paid from stored value at the
tier price (discount cards, coupons and campaigns are left to the replay, so the estimate
is never below what the replay charges) while the member's offline spending in this
outage stays within both ``offline.allowance`` and the snapshot balance. Pass daily caps,
anti-passback and opening hours are not checked offline. The journal replays the tap
through the engine when the database is back; what the engine then refuses is reported,
never dropped.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, NamedTuple

from host.ledger import book as ledger
from host.money import format_fen
from host.rules.context import CardRow, Outcome
from host.rules.policy import Policy
from host.rules.gate import set_presence
from host.rules.payment import passes
from protocol import codes


def record(conn: sqlite3.Connection, tap: Any, kind: str, card: CardRow | None, ts: int,
           tap_id: int) -> Outcome:
    """The Outcome of an offline tap (see the module doc); writes its pass use and presence."""
    out = Outcome("grant", "offline", "Granted offline", kind=kind,
                  pattern=codes.PAT_OFFLINE_GRANT)
    if card is None:
        return out
    mid = out.member_id = card.member_id
    direction = tap.direction or "in"
    cover = "gate" if kind == "gate" else f"wash:{int(tap.service)}"
    if direction == "in":
        time_passes = passes(conn, mid, cover, ts, "time")
        if time_passes:
            out.pass_id = time_passes[0].id
        else:
            for p in passes(conn, mid, cover, ts, "punch"):
                if p.uses_left:
                    ledger.debit_use(conn, ts, mid, p.id, "use_offline", tap_id=tap_id)
                    out.pass_id, out.uses_left = p.id, p.uses_left - 1
                    break
    if kind == "gate":
        set_presence(conn, mid, 1 if direction == "in" else 0, tap.device_id, ts)
    conn.execute("UPDATE members SET last_active_at = ? WHERE id = ?", (ts, mid))
    return out


class SnapPass(NamedTuple):
    """A pass as the local snapshot keeps it."""

    id: int
    kind: str
    covers: str          # JSON list
    starts_at: int
    ends_at: int
    uses_left: int | None


class SnapCard(NamedTuple):
    """A card and its member as the local snapshot keeps them."""

    uid: str
    member_id: int
    status: str
    expires_at: int | None
    member_status: str
    tier: str
    balance_fen: int
    passes: tuple[SnapPass, ...] = ()


class OutageDecision(NamedTuple):
    """What :func:`decide_outage` answers (the journal keeps it with the tap)."""

    verdict: str
    reason: str
    text: str
    member_id: int | None = None
    charged_fen: int = 0
    pass_id: int | None = None
    uses_left: int = -1
    balance_fen: int = 0


def _covers(p: SnapPass, cover: str, ts: int) -> bool:
    return p.starts_at <= ts and (p.ends_at == 0 or p.ends_at > ts) and cover in json.loads(
        p.covers)


def decide_outage(card: SnapCard | None, tap: Any, kind: str, policy: Policy, ts: int,
                  spent_fen: int, uses_taken: dict[int, int]) -> OutageDecision:
    """Decide ``tap`` from the snapshot (see the module doc). ``spent_fen``: what the
    member already spent offline in this outage; ``uses_taken``: punch uses already taken
    offline, by pass id. ``policy`` is the store's (``Policy.for_store``)."""
    if card is None:
        return OutageDecision("deny", "unknown_card", "Unknown card")
    status = card.status
    if status == "active" and card.expires_at and ts >= card.expires_at:
        status = "expired"
    if status != "active":
        return OutageDecision("deny", status, "Card not valid", card.member_id)
    if card.member_status != "active":
        return OutageDecision("deny", "member_inactive", "Membership suspended", card.member_id)
    balance = card.balance_fen - spent_fen
    base = dict(member_id=card.member_id, balance_fen=balance)
    if kind == "gate" and (tap.direction or "in") == "out":
        return OutageDecision("grant", "ok", "Goodbye (offline)", **base)
    if kind == "gate":
        cover, price = "gate", 0
    elif kind == "wash":
        prog = policy.programs.get(int(tap.service))
        if prog is None:
            return OutageDecision("deny", "bad_service", f"Unknown program {tap.service}", **base)
        cover, price = f"wash:{prog.code}", prog.price_fen
    else:
        cover, price = "kiosk", int(tap.amount_fen)
        if not 0 < price <= policy.kiosk_max_fen:
            return OutageDecision("deny", "invalid_amount", "Invalid amount", **base)
    off = policy.offline
    for p in card.passes:
        if not _covers(p, cover, ts):
            continue
        if p.kind == "time" and off.passes:
            return OutageDecision("grant", "ok", "Pass (offline)", pass_id=p.id, **base)
        left = (p.uses_left or 0) - uses_taken.get(p.id, 0)
        if p.kind == "punch" and off.punch and left > 0:
            return OutageDecision("grant", "ok", f"{left - 1} left (offline)", pass_id=p.id,
                                  uses_left=left - 1, **base)
    if kind == "gate" or price <= 0:
        return OutageDecision("deny", "no_pass", "No valid pass", **base)
    tier = policy.tiers.get(card.tier) or policy.tiers[policy.default_tier]
    pay = price * tier.discount_pct // 100
    if pay > balance or spent_fen + pay > off.allowance_fen:
        return OutageDecision("deny", "insufficient_balance",
                              f"Offline limit, balance {format_fen(max(balance, 0))}", **base)
    return OutageDecision("grant", "ok", f"paid {format_fen(pay)} (offline)",
                          card.member_id, pay, None, -1, balance - pay)
