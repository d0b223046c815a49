# Runs on CPython (host): points earning, qualifying purchases and tier upgrades, in one place.
"""Rewards of a purchase, the same for a tap and for a counter sale:

- points: ``paid_fen // 100 * points_per_yuan`` times the day's multiplier (birthday month,
  member day; policy ``points.combine`` says "max" or "multiply" when both apply), credited as
  a lot that expires ``points_expiry_months`` after the month it was earned in;
- one qualifying purchase (at least ``tier_rules.min_purchase``), after which the member moves
  up to the highest tier whose upgrade rule is met (``host.ledger.tiers``).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from host.ledger import book as ledger
from host.ledger.periods import months_later_start
from host.ledger.tiers import maybe_upgrade
from host.rules import campaigns
from host.rules.policy import Policy

__all__ = ["earn", "maybe_upgrade", "points_expiry", "points_multiplier", "qualify"]


def points_multiplier(policy: Policy, now: datetime, birthday: str | None) -> int:
    """Points multiplier at ``now`` for a member born on ``birthday`` ("MM-DD")."""
    mults = []
    if birthday and int(birthday[:2]) == now.month:
        mults.append(policy.birthday_multiplier)
    if policy.member_day and now.day == policy.member_day:
        mults.append(policy.member_day_multiplier)
    if not mults:
        return 1
    if policy.combine == "multiply":
        out = 1
        for x in mults:
            out *= x
        return out
    return max(mults)


def points_expiry(policy: Policy, now: datetime) -> int:
    """When points earned at ``now`` expire (unix time; 0 = never). It depends only on the
    month of ``now`` and its time zone: computed once per month, not per tap."""
    months = policy.points_expiry_months
    if not months:
        return 0
    key = (now.year, now.month, now.tzinfo, now.fold, months)
    at = _EXPIRY.get(key)
    if at is None:
        if len(_EXPIRY) > 64:
            _EXPIRY.clear()
        at = _EXPIRY[key] = int(months_later_start(now, months).timestamp())
    return at


#: points_expiry by (year, month, tzinfo, fold, months).
_EXPIRY: dict[tuple, int] = {}


def earn(conn: sqlite3.Connection, policy: Policy, member_id: int, birthday: str | None,
         paid_fen: int, now: datetime, ts: int, *, pending: ledger.Pending | None = None,
         campaign_kind: str | None = None, **refs: Any) -> int:
    """Credit the points a payment of ``paid_fen`` earns (times a campaign's multiplier for
    ``campaign_kind``, ``host.rules.campaigns``); returns them (0: nothing written)."""
    mult = points_multiplier(policy, now, birthday)
    mult *= campaigns.points_multiplier(policy, now, campaign_kind)
    pts = paid_fen // 100 * policy.points_per_yuan * mult
    if pts > 0:
        ledger.credit(conn, ts, member_id, "points", pts, "earn",
                      expires_at=points_expiry(policy, now), pending=pending, **refs)
    return max(pts, 0)


def qualify(conn: sqlite3.Connection, policy: Policy, member_id: int, ts: int, *,
            paid_fen: int, now: datetime | None = None, pending: ledger.Pending | None = None,
            current: tuple[str, int] | None = None, **refs: Any) -> str | None:
    """Count one qualifying purchase of ``paid_fen`` (nothing below
    ``tier_rules.min_purchase``) and upgrade the tier when a rule is met (``host.ledger.tiers``);
    returns the new tier or None. ``current`` = (tier, tier_manual) and ``pending`` when the
    caller has them: with both, a member below every rule's count costs no window query."""
    if paid_fen < policy.tier_min_purchase_fen:
        return None
    ledger.credit(conn, ts, member_id, "qualifying", 1, "purchase", pending=pending, **refs)
    if current is not None and current[1]:
        return None
    if pending is not None and pending.have("qualifying") < policy.upgrade_purchases_above(
            current[0] if current is not None else None):
        return None   # fewer lifetime purchases than any rule of a tier above the member's
    return maybe_upgrade(conn, policy, member_id, ts, current=current, now=now, pending=pending,
                         key=refs.get("op_key"))
