# Runs on CPython (host): offline taps — granted by a device from its allow-list, or by a store's daemon in a WAN outage.
"""Offline taps.

:func:`record`: a tap with the flag offline (a gate opened from its allow-list, the member
went through) is recorded as ``grant``/``offline``; a time pass or, failing that, a
punch-card use covering the service is applied to an entry; a gate's presence follows the
direction. Stored value is never charged and the tap is never refused after the fact.

:func:`decide_outage`: a store's daemon cut off from the chain's database (issue 17)
decides a tap from its local snapshot of the member (``host.site.journal``) and the
policy's ``[offline]`` allowance, with no database at all. A gate exit is always granted;
the other taps go through the same checks as online, from what the store knows locally
(:class:`Local`: the snapshot plus the taps it decided offline): the reader's opening hours
and its store's (``[stores.NAME]``), the duplicate window, a kiosk's ``fixed_price``, the
gate's anti-passback on entry, then the methods of ``wash.order`` / ``gate.order`` in turn: a time pass
(``offline.passes``) or a punch card with uses left (``offline.punch``) covering the
service, each within its daily cap (the snapshot's count of the day plus the offline
grants since), and stored value at the tier price (discount cards, coupons and campaigns
are left to the replay, so the estimate is never below what the replay charges) while the
member's offline spending in this outage stays within both ``offline.allowance`` and the
snapshot balance. Deny reasons and their priority are the online ones (``daily_cap``,
``insufficient_balance``, ``no_pass``). A gate exit is granted offline even when the
member does not count as inside (the snapshot can miss an entry decided online since its
last refresh or at another store, and a refused exit locks somebody in). The journal
replays the tap through the engine when the database is back; what the engine then
refuses is reported, never dropped.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any, NamedTuple

from host.ledger import book as ledger
from host.money import format_fen
from host.rules.context import CardRow, Outcome, within
from host.rules.policy import OfflineAllowance, Policy
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
    daily_cap: int | None = None


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


class SnapDevice(NamedTuple):
    """A reader as the local snapshot keeps it: kind, store name, device settings."""

    kind: str
    store: str | None
    settings: dict[str, Any]


class Local(NamedTuple):
    """What the store's daemon knows of a member beyond the snapshot's card: its offline
    spending in this outage, punch uses taken offline (by pass id), grants of the day per
    pass id (the snapshot's count plus the offline ones), whether it counts as inside (the
    snapshot's presence, then its offline gate taps) and its last offline grant on this
    reader (unix seconds, None: none)."""

    spent_fen: int = 0
    uses_taken: dict[int, int] = {}
    day_uses: dict[int, int] = {}
    inside_since: int | None = None
    last_here: int | None = None


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
    #: A gate's direction as decided (the reader's fixed one, else the tap's).
    direction: str | None = None


def _covers(p: SnapPass, cover: str, ts: int) -> bool:
    return p.starts_at <= ts and (p.ends_at == 0 or p.ends_at > ts) and cover in json.loads(
        p.covers)


def _card_refusal(card: SnapCard, ts: int) -> OutageDecision | None:
    status = card.status
    if status == "active" and card.expires_at and ts >= card.expires_at:
        status = "expired"
    if status != "active":
        return OutageDecision("deny", status, "Card not valid", card.member_id)
    if card.member_status != "active":
        return OutageDecision("deny", "member_inactive", "Membership suspended", card.member_id)
    return None


def decide_outage(card: SnapCard | None, tap: Any, dev: SnapDevice, chain: Policy,
                  now: datetime, local: Local) -> OutageDecision:
    """Decide ``tap`` on reader ``dev`` from the snapshot and what the store knows locally
    (see the module doc). ``chain`` is the chain's policy (the store's is taken from it)."""
    ts = int(now.timestamp())
    if card is None:
        return OutageDecision("deny", "unknown_card", "Unknown card")
    refused = _card_refusal(card, ts)
    if refused is not None:
        return refused
    policy = chain.for_store(dev.store)
    sp = chain.stores.get(dev.store) if dev.store is not None else None
    store_hours = sp.hours_for(dev.kind) if sp is not None else None
    balance = card.balance_fen - local.spent_fen
    base = dict(member_id=card.member_id, balance_fen=balance)
    window = int(dev.settings.get("duplicate_window_s", 0) or 0)
    if window and local.last_here is not None and local.last_here > ts - window:
        return OutageDecision("deny", "duplicate", "Already done, wait a moment", **base)
    hours = dev.settings.get("hours") or "00:00-24:00"
    store_open = store_hours is None or within(store_hours, now)
    closed = OutageDecision("deny", "closed",
                            f"Closed, hours {hours if store_open else store_hours}", **base)
    if dev.kind == "gate":
        fixed = dev.settings.get("direction", "both")
        direction = fixed if fixed in ("in", "out") else (tap.direction or "in")
        if direction == "out":
            return OutageDecision("grant", "ok", "Goodbye (offline)", direction="out", **base)
        if not (store_open and within(hours, now)):
            return closed._replace(direction="in")
        expiry = policy.presence_expiry_hours
        if dev.settings.get("anti_passback", True) and local.inside_since is not None and (
                not expiry or ts - local.inside_since < expiry * 3600):
            return OutageDecision("deny", "passback", "Already checked in", direction="in",
                                  **base)
        out = _pay(card, "gate", policy.gate_order, policy.gate_price_fen, policy, local, ts)
        return out._replace(direction="in")
    if dev.kind == "wash":
        prog = policy.programs.get(int(tap.service))
        if prog is None:
            return OutageDecision("deny", "bad_service", f"Unknown program {tap.service}", **base)
        if not (store_open and within(hours, now)):
            return closed
        return _pay(card, f"wash:{prog.code}", policy.wash_order, prog.price_fen, policy,
                    local, ts)
    if not store_open:
        return closed
    if not getattr(tap, "sale_id", 0) and not dev.settings.get("fixed_price", True):
        return OutageDecision("deny", "no_sale", "No sale - choose first 请先选择", **base)
    price = int(tap.amount_fen)
    if not 0 < price <= policy.kiosk_max_fen:
        return OutageDecision("deny", "invalid_amount", "Invalid amount", **base)
    return _pay(card, "kiosk", ("balance",), price, policy, local, ts)


def _pay(card: SnapCard, cover: str, order: tuple[str, ...], price: int, policy: Policy,
         local: Local, ts: int) -> OutageDecision:
    """The first method of ``order`` that pays ``cover`` offline (as host.rules.payment.pay
    online), else the online deny reason of the highest priority."""
    off = policy.offline
    balance = card.balance_fen - local.spent_fen
    base = dict(member_id=card.member_id, balance_fen=balance)
    capped = short = False
    for method in order:
        if method in ("pass", "punch"):
            out, was_capped = _by_pass(card, cover, method, off, local, ts)
            capped = capped or was_capped
            if out is not None:
                return out._replace(**base)
        elif method == "balance" and price > 0:
            tier = policy.tiers.get(card.tier) or policy.tiers[policy.default_tier]
            pay = price * tier.discount_pct // 100
            if pay <= balance and local.spent_fen + pay <= off.allowance_fen:
                text = f"paid {format_fen(pay)} (offline)" if pay else "free (offline)"
                return OutageDecision("grant", "ok", text, card.member_id, pay, None, -1,
                                      balance - pay)
            short = True
    if capped:
        return OutageDecision("deny", "daily_cap", "Pass used up for today", **base)
    if short:
        return OutageDecision("deny", "insufficient_balance",
                              f"Offline limit, balance {format_fen(max(balance, 0))}", **base)
    return OutageDecision("deny", "no_pass", "No valid pass", **base)


def _by_pass(card: SnapCard, cover: str, method: str, off: OfflineAllowance, local: Local,
             ts: int) -> tuple[OutageDecision | None, bool]:
    """A time pass (``method`` "pass") or punch card ("punch") the offline allowance honours
    and its daily cap leaves: (grant or None, whether a cap refused one)."""
    kind = "time" if method == "pass" else "punch"
    if not (off.passes if kind == "time" else off.punch):
        return None, False
    capped = False
    for p in card.passes:
        if p.kind != kind or not _covers(p, cover, ts):
            continue
        left = (p.uses_left or 0) - local.uses_taken.get(p.id, 0)
        if kind == "punch" and left <= 0:
            continue
        if p.daily_cap and local.day_uses.get(p.id, 0) >= p.daily_cap:
            capped = True
            continue
        if kind == "time":
            return OutageDecision("grant", "ok", "Pass (offline)", pass_id=p.id), capped
        return OutageDecision("grant", "ok", f"{left - 1} left (offline)", pass_id=p.id,
                              uses_left=left - 1), capped
    return None, capped
