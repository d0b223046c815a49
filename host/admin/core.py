# Runs on CPython (host): operator writes (members, cards, top-ups, refunds, passes, points).
"""Operator writes, each in one ``BEGIN IMMEDIATE`` transaction, each idempotent by key.

Every method takes ``key`` (the CLI's ``--idempotency-key``). A repeat with the same key and
the same arguments returns the first result (with ``"replayed": True``) and writes nothing;
the same key with other arguments raises ``Conflict``. Results are JSON-able dicts.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlite_utils

from host.ledger import book as ledger
from host.ledger import idempotent, rewards
from host.ledger.periods import add_duration
from host.errors import Conflict, InputError, InsufficientFunds, NotFound
from host.money import format_fen
from host.rules.policy import Policy, policy_and_clock
from host.store.db import transaction

_UID_RE = re.compile(r"(?:[0-9A-F]{8}|[0-9A-F]{14}|[0-9A-F]{20})")
_BIRTHDAY_RE = re.compile(r"(?:(\d{4})-)?(\d{2})-(\d{2})", re.ASCII)


def canonical_uid(text: str) -> str:
    """Upper-case hex UID of 4, 7 or 10 bytes (8, 14 or 20 hex digits); InputError otherwise."""
    uid = text.strip().upper().replace(":", "") if isinstance(text, str) else ""
    if not _UID_RE.fullmatch(uid):
        raise InputError(f"bad card UID {text!r}: use 8, 14 or 20 hex digits, e.g. 04A1B2C3D4E5F6")
    return uid


def parse_birthday(text: str) -> str:
    """``"MM-DD"`` or ``"YYYY-MM-DD"`` -> ``"MM-DD"`` (only month and day are kept)."""
    m = _BIRTHDAY_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise InputError(f"bad birthday {text!r}: use MM-DD or YYYY-MM-DD")
    month, day = int(m.group(2)), int(m.group(3))
    try:
        datetime(2000, month, day)  # a leap year: 02-29 is valid
    except ValueError:
        raise InputError(f"bad birthday {text!r}: no such date") from None
    return f"{month:02d}-{day:02d}"


def _positive(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"{what} must be a positive integer, got {value!r}")
    return value


class Admin:
    """Operator writes against one store, under one policy and clock."""

    def __init__(self, db: sqlite_utils.Database, policy: Policy | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.db = db
        self.policy, self.clock = policy_and_clock(policy, clock)

    # ------------------------------------------------------------------ plumbing
    def _write(self, command: str, args: dict[str, Any], key: str | None,
               fn: Callable[[sqlite3.Connection, int, datetime], dict[str, Any]]
               ) -> dict[str, Any]:
        idempotent.check_key(key)
        canon = idempotent.canonical(args)
        with transaction(self.db) as conn:
            first = idempotent.recall(conn, key, command, canon)
            if first is not None:
                return {**first, "replayed": True}
            now = self.clock()
            ts = int(now.timestamp())
            result = fn(conn, ts, now)
            idempotent.remember(conn, key, command, canon, result, ts)
        return {**result, "replayed": False}

    def _member(self, conn: sqlite3.Connection, member_id: int) -> tuple:
        row = conn.execute("SELECT id, name, status, tier, birthday, referrer_id, referral_paid "
                           "FROM members WHERE id = ?", (member_id,)).fetchone()
        if row is None:
            raise NotFound(f"unknown member {member_id}")
        return row

    def _state(self, conn: sqlite3.Connection, member_id: int) -> dict[str, Any]:
        b = ledger.balances(conn, member_id)
        return {"member_id": member_id, "principal_fen": b["principal_fen"],
                "bonus_fen": b["bonus_fen"], "balance_fen": b["principal_fen"] + b["bonus_fen"],
                "points": b["points"]}

    def _bonus_expiry(self, now: datetime) -> int:
        days = self.policy.bonus_expiry_days
        if not days:
            return 0
        end = (now + timedelta(days=days + 1)).replace(hour=0, minute=0, second=0,
                                                       microsecond=0)
        return int(end.timestamp())

    # ------------------------------------------------------------------ members
    def add_member(self, name: str = "", *, phone: str | None = None,
                   birthday: str | None = None, tier: str | None = None,
                   referrer_id: int | None = None, key: str | None = None) -> dict[str, Any]:
        """Create a member (tier default from policy; an explicit tier is a logged manual
        override). Returns ``{"member_id": ...}``."""
        if not isinstance(name, str) or len(name) > 64:
            raise InputError("name must be at most 64 characters")
        bday = parse_birthday(birthday) if birthday else None
        if phone is not None and not re.fullmatch(r"\+?[0-9 -]{3,20}", phone):
            raise InputError(f"bad phone {phone!r}: digits, spaces, dashes, optional +")
        if tier is not None and tier not in self.policy.tiers:
            raise InputError(f"unknown tier {tier!r} (tiers: {', '.join(self.policy.tiers)})")
        args = dict(name=name, phone=phone, birthday=bday, tier=tier, referrer_id=referrer_id)

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            if referrer_id is not None:
                self._member(conn, referrer_id)
            t = tier or self.policy.default_tier
            cur = conn.execute(
                "INSERT INTO members (name, phone, birthday, tier, tier_manual, referrer_id, "
                "created_at) VALUES (?,?,?,?,?,?,?)",
                (name, phone, bday, t, 1 if tier else 0, referrer_id, ts))
            mid = cur.lastrowid
            conn.execute("INSERT INTO tier_changes (ts, member_id, old_tier, new_tier, manual, "
                         "reason, op_key) VALUES (?,?,NULL,?,?,?,?)",
                         (ts, mid, t, 1 if tier else 0, "enrolled", key))
            return {"member_id": mid, "tier": t}
        return self._write("member.add", args, key, fn)

    def edit_member(self, member_id: int, *, name: str | None = None,
                    phone: str | None = None, birthday: str | None = None,
                    tier: str | None = None, status: str | None = None,
                    key: str | None = None) -> dict[str, Any]:
        """Change member fields. ``tier`` = a tier name (manual override, logged) or
        ``"auto"`` (back to automatic upgrades)."""
        if name is not None and len(name) > 64:
            raise InputError("name must be at most 64 characters")
        if phone is not None and not re.fullmatch(r"\+?[0-9 -]{3,20}", phone):
            raise InputError(f"bad phone {phone!r}: digits, spaces, dashes, optional +")
        bday = parse_birthday(birthday) if birthday else None
        if tier is not None and tier != "auto" and tier not in self.policy.tiers:
            raise InputError(f"unknown tier {tier!r} (tiers: auto, {', '.join(self.policy.tiers)})")
        if status is not None and status not in ("active", "suspended"):
            raise InputError(f"bad status {status!r}: use active or suspended")
        args = dict(member_id=member_id, name=name, phone=phone, birthday=bday, tier=tier,
                    status=status)
        if all(v is None for k, v in args.items() if k != "member_id"):
            raise InputError("nothing to change: give --name, --phone, --birthday, --tier or --status")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            row = self._member(conn, member_id)
            for col, val in (("name", name), ("phone", phone), ("birthday", bday),
                             ("status", status)):
                if val is not None:
                    conn.execute(f"UPDATE members SET {col} = ? WHERE id = ?", (val, member_id))
            if tier == "auto":
                conn.execute("UPDATE members SET tier_manual = 0 WHERE id = ?", (member_id,))
                conn.execute("INSERT INTO tier_changes (ts, member_id, old_tier, new_tier, "
                             "manual, reason, op_key) VALUES (?,?,?,?,1,?,?)",
                             (ts, member_id, row[3], row[3], "manual override cleared", key))
                rewards.maybe_upgrade(conn, self.policy, member_id, ts)
            elif tier is not None:
                conn.execute("UPDATE members SET tier = ?, tier_manual = 1 WHERE id = ?",
                             (tier, member_id))
                conn.execute("INSERT INTO tier_changes (ts, member_id, old_tier, new_tier, "
                             "manual, reason, op_key) VALUES (?,?,?,?,1,?,?)",
                             (ts, member_id, row[3], tier, "manual override", key))
            new_tier = conn.execute("SELECT tier FROM members WHERE id = ?",
                                    (member_id,)).fetchone()[0]
            return {"member_id": member_id, "tier": new_tier}
        return self._write("member.edit", args, key, fn)

    # ------------------------------------------------------------------ cards
    def enroll_card(self, member_id: int, uid: str, *, expires_at: int = 0,
                    key: str | None = None) -> dict[str, Any]:
        """Give ``member_id`` a card. Enrolling the same UID to the same member again is a
        no-op; a UID that belongs to someone else raises Conflict."""
        uid = canonical_uid(uid)

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            self._member(conn, member_id)
            row = conn.execute("SELECT member_id, status FROM cards WHERE uid = ?",
                               (uid,)).fetchone()
            if row is not None:
                if row[0] == member_id and row[1] == "active":
                    return {"uid": uid, "member_id": member_id, "status": "active"}
                raise Conflict(f"card {uid} is already enrolled (member {row[0]}, {row[1]})")
            conn.execute("INSERT INTO cards (uid, member_id, expires_at, created_at, updated_at) "
                         "VALUES (?,?,?,?,?)", (uid, member_id, expires_at, ts, ts))
            return {"uid": uid, "member_id": member_id, "status": "active"}
        return self._write("card.enroll", dict(member_id=member_id, uid=uid,
                                               expires_at=expires_at), key, fn)

    def set_card_status(self, uid: str, status: str, *, key: str | None = None
                        ) -> dict[str, Any]:
        """Block (``blocked``), unblock (``active``) or expire a card."""
        uid = canonical_uid(uid)
        if status not in ("active", "blocked", "expired"):
            raise InputError(f"bad card status {status!r}")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            row = conn.execute("SELECT member_id, status FROM cards WHERE uid = ?",
                               (uid,)).fetchone()
            if row is None:
                raise NotFound(f"unknown card {uid}")
            if row[1] == "lost":
                raise Conflict(f"card {uid} was reported lost and replaced; it stays lost")
            conn.execute("UPDATE cards SET status = ?, updated_at = ? WHERE uid = ?",
                         (status, ts, uid))
            return {"uid": uid, "member_id": row[0], "status": status}
        return self._write("card.status", dict(uid=uid, status=status), key, fn)

    def replace_card(self, old_uid: str, new_uid: str, *, key: str | None = None
                     ) -> dict[str, Any]:
        """Lost-card replacement: the old card becomes ``lost`` (refused at every reader),
        the new card is enrolled to the same member. Value lives on the member account, so
        balance, points, passes and presence move with it in the same transaction."""
        old, new = canonical_uid(old_uid), canonical_uid(new_uid)
        if old == new:
            raise InputError("old and new card UID are the same")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            row = conn.execute("SELECT member_id, status, replaced_by FROM cards WHERE uid = ?",
                               (old,)).fetchone()
            if row is None:
                raise NotFound(f"unknown card {old}")
            if row[1] == "lost":
                raise Conflict(f"card {old} was already replaced by {row[2]}")
            if conn.execute("SELECT 1 FROM cards WHERE uid = ?", (new,)).fetchone():
                raise Conflict(f"card {new} is already enrolled")
            conn.execute("INSERT INTO cards (uid, member_id, created_at, updated_at) "
                         "VALUES (?,?,?,?)", (new, row[0], ts, ts))
            conn.execute("UPDATE cards SET status = 'lost', replaced_by = ?, updated_at = ? "
                         "WHERE uid = ?", (new, ts, old))
            return {"old_uid": old, "new_uid": new, **self._state(conn, row[0])}
        return self._write("card.replace", dict(old=old, new=new), key, fn)

    # ------------------------------------------------------------------ stored value
    def topup(self, member_id: int, amount_fen: int, *, key: str | None = None
              ) -> dict[str, Any]:
        """Top up principal; add the ladder bonus (highest rung with ``min <= amount``) as a
        bonus lot; pay the referral bonus on the member's first top-up."""
        _positive(amount_fen, "top-up amount")
        pol = self.policy

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            m = self._member(conn, member_id)
            if m[2] != "active":
                raise Conflict(f"member {member_id} is suspended")
            ledger.sweep_expired(conn, ts, member_id)
            bonus = 0
            for mn, b in pol.ladder:
                if amount_fen >= mn:
                    bonus = b
            bal = ledger.balances(conn, member_id)
            if bal["principal_fen"] + bal["bonus_fen"] + amount_fen + bonus > pol.max_balance_fen:
                raise InputError(f"top-up would take the balance above the site maximum "
                                 f"{format_fen(pol.max_balance_fen)}")
            ledger.credit(conn, ts, member_id, "principal", amount_fen, "topup", op_key=key)
            if bonus:
                ledger.credit(conn, ts, member_id, "bonus", bonus, "topup_bonus",
                              expires_at=self._bonus_expiry(now), op_key=key)
            conn.execute("INSERT INTO payments (ts, member_id, kind, amount_fen, op_key) "
                         "VALUES (?,?,?,?,?)", (ts, member_id, "topup", amount_fen, key))
            referral = 0
            if m[5] is not None and not m[6] and pol.referral_bonus:
                referral = pol.referral_bonus
                ledger.credit(conn, ts, m[5], "points", referral, "referral",
                              expires_at=rewards.points_expiry(self.policy, now), op_key=key,
                              note=f"referred member {member_id}")
                conn.execute("UPDATE members SET referral_paid = 1 WHERE id = ?", (member_id,))
            conn.execute("UPDATE members SET last_active_at = ? WHERE id = ?", (ts, member_id))
            return {**self._state(conn, member_id), "topup_fen": amount_fen, "bonus_added_fen": bonus,
                    "referral_points": referral}
        return self._write("topup", dict(member_id=member_id, amount_fen=amount_fen), key, fn)

    def refund(self, member_id: int, amount_fen: int | None = None, *,
               key: str | None = None) -> dict[str, Any]:
        """Refund principal only (``None`` = all of it). Bonus is never paid out: refunding
        R of principal P forfeits ``bonus * R // P`` of the bonus (prorated), all of it on a
        full refund."""
        if amount_fen is not None:
            _positive(amount_fen, "refund amount")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            self._member(conn, member_id)
            ledger.sweep_expired(conn, ts, member_id)
            bal = ledger.balances(conn, member_id)
            p, b = bal["principal_fen"], bal["bonus_fen"]
            r = p if amount_fen is None else amount_fen
            if r <= 0:
                raise InsufficientFunds(f"member {member_id} has no refundable principal")
            if r > p:
                raise InsufficientFunds(f"member {member_id} has {format_fen(p)} refundable "
                                        f"principal, asked {format_fen(r)}")
            forfeit = b if r == p else b * r // p
            ledger.debit(conn, ts, member_id, "principal", r, "refund", op_key=key)
            if forfeit:
                ledger.debit(conn, ts, member_id, "bonus", forfeit, "refund_forfeit", op_key=key)
            conn.execute("INSERT INTO payments (ts, member_id, kind, amount_fen, op_key) "
                         "VALUES (?,?,?,?,?)", (ts, member_id, "refund", -r, key))
            return {**self._state(conn, member_id), "refunded_fen": r, "bonus_forfeited_fen": forfeit}
        return self._write("refund", dict(member_id=member_id, amount_fen=amount_fen), key, fn)

    # ------------------------------------------------------------------ passes
    def sell_pass(self, member_id: int, plan: str, *, from_balance: bool = False,
                  key: str | None = None) -> dict[str, Any]:
        """Sell a plan: paid in cash at the counter (a ``pass_sale`` payment) or from stored
        value. Counts as a qualifying purchase and earns points on the price."""
        pol = self.policy
        pl = pol.plans.get(plan)
        if pl is None:
            raise InputError(f"unknown plan {plan!r} (plans: {', '.join(sorted(pol.plans))})")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            m = self._member(conn, member_id)
            if m[2] != "active":
                raise Conflict(f"member {member_id} is suspended")
            ledger.sweep_expired(conn, ts, member_id)
            if pl.kind == "punch":
                ends = ts + pl.expiry_days * 86400 if pl.expiry_days else 0
                uses = pl.uses
            else:
                ends = int(add_duration(now, pl.duration).timestamp())
                uses = None
            cur = conn.execute(
                "INSERT INTO passes (member_id, plan, kind, covers, starts_at, ends_at, uses_left,"
                " daily_cap, discount_pct, price_fen, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (member_id, plan, pl.kind, json.dumps(list(pl.covers)), ts, ends,
                 0 if uses else None, pl.daily_cap, pl.discount_pct, pl.price_fen, ts))
            pid = cur.lastrowid
            if uses:
                ledger.credit_uses(conn, ts, member_id, pid, uses, "pass_sale", op_key=key)
            if pl.price_fen:
                if from_balance:
                    ledger.spend(conn, ts, member_id, pl.price_fen, pol.spend_order,
                                 "pass_sale", pass_id=pid, op_key=key)
                else:
                    conn.execute("INSERT INTO payments (ts, member_id, kind, amount_fen, pass_id,"
                                 " op_key) VALUES (?,?,?,?,?,?)",
                                 (ts, member_id, "pass_sale", pl.price_fen, pid, key))
                rewards.earn(conn, pol, member_id, m[4], pl.price_fen, now, ts,
                             pass_id=pid, op_key=key)
                rewards.qualify(conn, pol, member_id, ts, pass_id=pid, op_key=key)
            conn.execute("UPDATE members SET last_active_at = ? WHERE id = ?", (ts, member_id))
            return {**self._state(conn, member_id), "pass_id": pid, "plan": plan,
                    "kind": pl.kind, "ends_at": ends, "uses_left": uses if uses else -1}
        return self._write("pass.sell", dict(member_id=member_id, plan=plan,
                                             from_balance=from_balance), key, fn)

    # ------------------------------------------------------------------ points
    def redeem_points(self, member_id: int, points: int, *, item: str | None = None,
                      to_balance: bool = False, key: str | None = None) -> dict[str, Any]:
        """Spend points on goods (``item``) or convert them to bonus balance at the policy
        rate (``points.convert_points_per_yuan``; must be a whole multiple of it)."""
        _positive(points, "points")
        rate = self.policy.convert_points_per_yuan
        if to_balance and (points * 100) % rate:
            raise InputError(f"points to convert must make whole fen: a multiple of "
                             f"{rate // math.gcd(rate, 100)}")
        if not to_balance and not item:
            raise InputError("say what the points buy (--item) or use --to-balance")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            self._member(conn, member_id)
            ledger.sweep_expired(conn, ts, member_id)
            ledger.debit(conn, ts, member_id, "points", points,
                         "convert" if to_balance else "redeem", op_key=key, note=item)
            credited = 0
            if to_balance:
                credited = points * 100 // rate
                ledger.credit(conn, ts, member_id, "bonus", credited, "convert",
                              expires_at=self._bonus_expiry(now), op_key=key)
            return {**self._state(conn, member_id), "redeemed_points": points,
                    "credited_fen": credited}
        return self._write("points.redeem", dict(member_id=member_id, points=points, item=item,
                                                 to_balance=to_balance), key, fn)

    def gift_points(self, from_id: int, to_id: int, points: int, *, key: str | None = None
                    ) -> dict[str, Any]:
        """Move points between members; each part keeps the expiry of the lot it came from."""
        _positive(points, "points")
        if points < self.policy.gift_min:
            raise InputError(f"a gift must be at least {self.policy.gift_min} points")
        if from_id == to_id:
            raise InputError("cannot gift points to the same member")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            self._member(conn, from_id)
            self._member(conn, to_id)
            ledger.sweep_expired(conn, ts, from_id)
            taken = ledger.debit(conn, ts, from_id, "points", points, "gift_out", op_key=key,
                                 note=f"to member {to_id}")
            for part in taken:
                ledger.credit(conn, ts, to_id, "points", part.amount, "gift_in",
                              expires_at=part.expires_at, op_key=key,
                              note=f"from member {from_id}")
            return {"from": self._state(conn, from_id), "to": self._state(conn, to_id),
                    "points": points}
        return self._write("points.gift", dict(from_id=from_id, to_id=to_id, points=points),
                           key, fn)

    def reverse(self, entry_id: int, *, reason: str = "", key: str | None = None
                ) -> dict[str, Any]:
        """Correct a ledger entry with a reversing entry (the ledger itself never changes).
        Cash records (``payments``) are not touched: a wrongly keyed top-up whose cash was
        never received is reversed here and shows in the ledger, not as a refund."""
        _positive(entry_id, "ledger entry id")
        if len(reason) > 200:
            raise InputError("reason must be at most 200 characters")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            new_id = ledger.reverse(conn, ts, entry_id, op_key=key, note=reason or None)
            mid = conn.execute("SELECT member_id FROM ledger WHERE id = ?",
                               (new_id,)).fetchone()[0]
            return {**self._state(conn, mid), "reversed": entry_id, "entry_id": new_id}
        return self._write("ledger.reverse", dict(entry_id=entry_id, reason=reason), key, fn)

    def expire(self, *, key: str | None = None) -> dict[str, Any]:
        """Write off every expired lot of every member now."""
        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            return {"expired_lots": ledger.sweep_expired(conn, ts)}
        return self._write("expire", {}, key, fn)
