# Runs on CPython (host): the referral reward — both sides paid once, after a qualifying first purchase.
"""Referral rewards (policy ``[referral]``).

A member added with a referrer earns the reward for both sides once, at their first top-up or
pass sale of at least ``referral.min_purchase``: the referrer gets ``referrer_points`` and
``referrer_bonus``, the new member ``referee_points`` and ``referee_bonus`` (points as a lot
expiring like earned points, bonus as a bonus lot). Smaller purchases pay nothing and leave
the reward for a later one. ``[coupon_rules].referral`` adds a coupon to each side. Every
credit is a ledger row of kind ``referral``; the member's
``referral_paid`` flag makes it once only."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from host.admin import coupons
from host.admin.core import MemberRow
from host.ledger import book as ledger
from host.ledger import rewards
from host.rules.policy import Policy


def pay_referral(conn: sqlite3.Connection, policy: Policy, m: MemberRow, amount_fen: int,
                 ts: int, now: datetime, bonus_expires_at: int, key: str | None) -> int:
    """Pay the referral reward if ``m``'s purchase of ``amount_fen`` qualifies; returns the
    points the referrer got (0: nothing paid)."""
    r = policy.referral
    if m.referrer_id is None or m.referral_paid or amount_fen < r.min_purchase_fen:
        return 0
    if not (r.referrer_points or r.referrer_bonus_fen or r.referee_points or r.referee_bonus_fen):
        return 0
    expiry = rewards.points_expiry(policy, now)
    for who, points, bonus, note in (
            (m.referrer_id, r.referrer_points, r.referrer_bonus_fen, f"referred member {m.id}"),
            (m.id, r.referee_points, r.referee_bonus_fen, f"referred by member {m.referrer_id}")):
        if points:
            ledger.credit(conn, ts, who, "points", points, "referral", expires_at=expiry,
                          op_key=key, note=note)
        if bonus:
            ledger.credit(conn, ts, who, "bonus", bonus, "referral",
                          expires_at=bonus_expires_at, op_key=key, note=note)
        coupons.issue_for_event(conn, policy, who, "referral", ts, f"referral:{m.id}", key)
    conn.execute("UPDATE members SET referral_paid = 1 WHERE id = ?", (m.id,))
    return r.referrer_points
