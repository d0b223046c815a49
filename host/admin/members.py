# Runs on CPython (host): operator writes on members — enrol, edit, tier overrides.
"""Member writes: ``add_member`` and ``edit_member`` (fields, status, manual tier)."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from host.admin.coupons import issue_for_event
from host.admin.core import AdminCore, check_int, check_name, check_phone, parse_birthday
from host.errors import InputError
from host.ledger import rewards

_TIER_LOG = ("INSERT INTO tier_changes (ts, member_id, old_tier, new_tier, manual, reason, "
             "op_key) VALUES (?,?,?,?,?,?,?)")


class MemberWrites(AdminCore):
    """Enrol and edit members."""

    def _check_tier(self, tier: str | None, allow_auto: bool = False) -> None:
        if tier is None or tier in self.policy.tiers or (allow_auto and tier == "auto"):
            return
        names = ", ".join((["auto"] if allow_auto else []) + list(self.policy.tiers))
        raise InputError(f"unknown tier {tier!r} (tiers: {names})")

    def add_member(self, name: str = "", *, phone: str | None = None,
                   birthday: str | None = None, tier: str | None = None,
                   referrer_id: int | None = None, key: str | None = None) -> dict[str, Any]:
        """Create a member (tier default from policy; an explicit tier is a logged manual
        override). Returns ``{"member_id": ..., "tier": ...}``."""
        check_name(name)
        bday = parse_birthday(birthday) if birthday else None
        if phone is not None:
            check_phone(phone)
        self._check_tier(tier)
        if referrer_id is not None:
            check_int(referrer_id, "referrer member id")
        args = dict(name=name, phone=phone, birthday=bday, tier=tier, referrer_id=referrer_id)

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            if referrer_id is not None:
                self.member(conn, referrer_id)
            t = tier or self.policy.default_tier
            manual = 1 if tier else 0
            cur = conn.execute(
                "INSERT INTO members (name, phone, birthday, tier, tier_manual, referrer_id, "
                "created_at) VALUES (?,?,?,?,?,?,?)",
                (name, phone, bday, t, manual, referrer_id, ts))
            mid = cur.lastrowid
            conn.execute(_TIER_LOG, (ts, mid, None, t, manual, "enrolled", key))
            issue_for_event(conn, self.policy, mid, "signup", ts, "signup", key)
            return {"member_id": mid, "tier": t}
        return self.write("member.add", args, key, fn)

    def edit_member(self, member_id: int, *, name: str | None = None,
                    phone: str | None = None, birthday: str | None = None,
                    tier: str | None = None, status: str | None = None,
                    key: str | None = None) -> dict[str, Any]:
        """Change member fields. ``tier`` = a tier name (manual override, logged) or
        ``"auto"`` (back to automatic upgrades)."""
        check_int(member_id, "member id")
        if name is not None:
            check_name(name)
        if phone is not None:
            check_phone(phone)
        bday = parse_birthday(birthday) if birthday else None
        self._check_tier(tier, allow_auto=True)
        if status is not None and status not in ("active", "suspended"):
            raise InputError(f"bad status {status!r}: use active or suspended")
        args = dict(member_id=member_id, name=name, phone=phone, birthday=bday, tier=tier,
                    status=status)
        if all(v is None for k, v in args.items() if k != "member_id"):
            raise InputError("nothing to change: give --name, --phone, --birthday, --tier or --status")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            row = self.member(conn, member_id)
            for col, val in (("name", name), ("phone", phone), ("birthday", bday),
                             ("status", status)):
                if val is not None:
                    conn.execute(f"UPDATE members SET {col} = ? WHERE id = ?", (val, member_id))
            if tier == "auto":
                conn.execute("UPDATE members SET tier_manual = 0 WHERE id = ?", (member_id,))
                conn.execute(_TIER_LOG, (ts, member_id, row.tier, row.tier, 1,
                                         "manual override cleared", key))
                rewards.maybe_upgrade(conn, self.policy, member_id, ts)
            elif tier is not None:
                conn.execute("UPDATE members SET tier = ?, tier_manual = 1 WHERE id = ?",
                             (tier, member_id))
                conn.execute(_TIER_LOG, (ts, member_id, row.tier, tier, 1, "manual override",
                                         key))
            return {"member_id": member_id, "tier": self.member(conn, member_id).tier}
        return self.write("member.edit", args, key, fn)
