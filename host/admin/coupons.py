# Runs on CPython (host): coupon writes — issued by the policy's rules or by a manager, handed over at the counter.
"""Coupon issuing and counter redemption.

Rules (policy ``[coupon_rules]``), each issuing at most once per occasion (the coupon's
``source_ref``): ``signup`` (a new member), ``first_card`` (their first card), ``topup``
(the highest rung met by a top-up), ``referral`` (both sides when the referral pays),
``birthday`` (by the birth month, the one birthday field kept in clear: from
``birthday_days_before`` days before the month starts to its end, once a year; the sealed
day is not needed, so the daily run opens no member data) and ``winback`` (回归礼,
members idle ``winback_days`` days, once per idle stretch); the last two by the daily
``run_coupon_rules`` (``tapkiosk coupon run``). A manager issues any template with
``issue_coupon`` (``tapkiosk coupon issue``) and hands over gift items (or takes any coupon
at the counter) with ``redeem_coupon``.
"""

from __future__ import annotations

import sqlite3
from datetime import date, datetime, timedelta
from typing import Any

from host.admin.core import AdminCore, check_int
from host.errors import InputError, NotFound
from host.ledger import coupons
from host.rules.policy import Policy


def issue_for_event(conn: sqlite3.Connection, policy: Policy, member_id: int, event: str,
                    ts: int, ref: str, key: str | None = None) -> int | None:
    """Issue the coupon ``[coupon_rules].<event>`` names (if any) once per ``ref``; returns
    the coupon id or None."""
    name = getattr(policy.coupon_rules, event)
    if not name:
        return None
    return coupons.issue(conn, member_id, policy.coupon_templates[name], ts, event, ref, key)


def issue_for_topup(conn: sqlite3.Connection, policy: Policy, member_id: int, amount_fen: int,
                    ts: int, ref: str, key: str | None = None) -> int | None:
    """The coupon of the highest ``coupon_rules.topup`` rung that ``amount_fen`` reaches."""
    name = next((n for mn, n in reversed(policy.coupon_rules.topup) if amount_fen >= mn), "")
    if not name:
        return None
    return coupons.issue(conn, member_id, policy.coupon_templates[name], ts, "topup", ref, key)


def _next_birth_month(month: int, today: date) -> date:
    """The first day of the member's birth month now under way or next to come."""
    if month == today.month:
        return date(today.year, month, 1)
    return date(today.year + (month < today.month), month, 1)


class CouponWrites(AdminCore):
    """Issue and redeem coupons."""

    def issue_coupon(self, member_id: int, template: str, *, key: str | None = None
                     ) -> dict[str, Any]:
        """A manager issues one coupon of ``template`` to a member."""
        check_int(member_id, "member id")
        t = self.policy.coupon_templates.get(template)
        if t is None:
            names = ", ".join(sorted(self.policy.coupon_templates)) or "none in the policy"
            raise InputError(f"unknown coupon template {template!r} (templates: {names})")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            self.active_member(conn, member_id)
            cid = coupons.issue(conn, member_id, t, ts, "manual", None, key)
            return {"coupon_id": cid, "member_id": member_id, "template": template,
                    "kind": t.kind, "expires_at": ts + t.valid_days * 86400}
        return self.write("coupon.issue", dict(member_id=member_id, template=template), key, fn)

    def redeem_coupon(self, coupon_id: int, *, key: str | None = None) -> dict[str, Any]:
        """Use a coupon at the counter (a gift item handed over)."""
        check_int(coupon_id, "coupon id")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            row = conn.execute("SELECT member_id, template, kind, item FROM coupons WHERE id = ?",
                               (coupon_id,)).fetchone()
            if row is None:
                raise NotFound(f"unknown coupon {coupon_id}")
            self.active_member(conn, row[0])
            coupons.redeem(conn, coupon_id, ts, note="counter", op_key=key)
            return {"coupon_id": coupon_id, "member_id": row[0], "template": row[1],
                    "kind": row[2], "item": row[3]}
        return self.write("coupon.redeem", dict(coupon_id=coupon_id), key, fn)

    def run_coupon_rules(self, *, key: str | None = None) -> dict[str, Any]:
        """The daily rules: birthday coupons and win-back coupons (module doc)."""
        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            return {"issued": self._birthdays(conn, ts, now, key) + self._winback(conn, ts, key)}
        return self.write("coupon.run", {}, key, fn)

    def _birthdays(self, conn: sqlite3.Connection, ts: int, now: datetime,
                   key: str | None) -> list[dict[str, Any]]:
        rules = self.policy.coupon_rules
        if not rules.birthday:
            return []
        today, out = now.date(), []
        horizon = today + timedelta(days=rules.birthday_days_before)
        for mid, month in conn.execute("SELECT id, birth_month FROM members WHERE status = "
                                       "'active' AND birth_month IS NOT NULL ORDER BY id"
                                       ).fetchall():
            nxt = _next_birth_month(month, today)
            if nxt <= horizon:
                cid = issue_for_event(conn, self.policy, mid, "birthday", ts, str(nxt.year), key)
                if cid is not None:
                    out.append({"member_id": mid, "coupon_id": cid, "rule": "birthday"})
        return out

    def _winback(self, conn: sqlite3.Connection, ts: int, key: str | None
                 ) -> list[dict[str, Any]]:
        rules = self.policy.coupon_rules
        if not rules.winback:
            return []
        out = []
        for mid, last in conn.execute(
                "SELECT id, coalesce(last_active_at, created_at) FROM members WHERE status = "
                "'active' AND coalesce(last_active_at, created_at) < ? ORDER BY id",
                (ts - rules.winback_days * 86400,)).fetchall():
            cid = issue_for_event(conn, self.policy, mid, "winback", ts, f"idle-since:{last}",
                                  key)
            if cid is not None:
                out.append({"member_id": mid, "coupon_id": cid, "rule": "winback"})
        return out
