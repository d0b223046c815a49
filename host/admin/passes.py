# Runs on CPython (host): operator writes on passes — selling a plan (time, punch card, discount).
"""Pass sales and cancellations.

A pass is paid in cash at the counter (a ``pass_sale`` payment) or from stored value. A time
or discount pass bought while the member still holds one of the same plan starts where that
one ends (renewal keeps the days left). ``cancel_pass`` stops a pass at once and refunds the
unused part pro rata (time left of its period, uses left of a punch card) the way it was
paid: to stored value (principal and bonus in the parts taken) or as a cash ``refund``
payment; the points it earned are taken back in the same proportion (as far as the member
still has them)."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from host.admin.core import AdminCore, MemberRow, check_int
from host.admin.referral import pay_referral
from host.errors import Conflict, InputError, InsufficientFunds
from host.ledger import book as ledger
from host.ledger import rewards
from host.ledger.periods import add_duration
from host.messages import outbox
from host.money import format_fen
from host.rules import campaigns
from host.rules.policy import Plan


class PassWrites(AdminCore):
    """Sell passes."""

    def sell_pass(self, member_id: int, plan: str, *, from_balance: bool = False,
                  key: str | None = None) -> dict[str, Any]:
        """Sell a plan: paid in cash at the counter (a ``pass_sale`` payment) or from stored
        value. Counts as a qualifying purchase and earns points on the price."""
        check_int(member_id, "member id")
        pl = self.policy.plans.get(plan)
        if pl is None:
            raise InputError(f"unknown plan {plan!r} (plans: {', '.join(sorted(self.policy.plans))})")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            m = self.member(conn, member_id)
            if m.status != "active":
                raise Conflict(f"member {member_id} is suspended")
            ledger.sweep_expired(conn, ts, member_id)
            if from_balance and pl.price_fen:
                bal = ledger.balances(conn, member_id)
                have = bal["principal_fen"] + bal["bonus_fen"]
                if have < pl.price_fen:
                    raise InsufficientFunds(f"member {member_id} has a balance of "
                                            f"{format_fen(have)}, the plan costs "
                                            f"{format_fen(pl.price_fen)}")
            pid, ends, uses = self._insert_pass(conn, member_id, pl, ts, now, key)
            if pl.price_fen:
                self._charge(conn, m, pl, pid, from_balance, ts, now, key)
            pay_referral(conn, self.policy, m, pl.price_fen, ts, now, self.bonus_expiry(now), key)
            outbox.receipt(conn, self.policy, member_id, f"Pass {plan}", pl.price_fen, ts,
                           f"pass:{pid}")
            conn.execute("UPDATE members SET last_active_at = ? WHERE id = ?", (ts, member_id))
            return {**self.state(conn, member_id), "pass_id": pid, "plan": plan,
                    "kind": pl.kind, "ends_at": ends, "uses_left": uses if uses else -1}
        return self.write("pass.sell", dict(member_id=member_id, plan=plan,
                                            from_balance=from_balance), key, fn)

    @staticmethod
    def _insert_pass(conn: sqlite3.Connection, member_id: int, pl: Plan, ts: int,
                     now: datetime, key: str | None) -> tuple[int, int, int | None]:
        """The new pass row (and its punch-card uses): (pass id, ends_at, uses or None).
        A time or discount pass starts at the end of the member's current pass of the same
        plan, if any (a renewal), else now."""
        starts = ts
        if pl.kind == "punch":
            ends = ts + pl.expiry_days * 86400 if pl.expiry_days else 0
            uses = pl.uses
        else:
            row = conn.execute("SELECT max(ends_at) FROM passes WHERE member_id = ? AND plan = ?"
                               " AND ends_at > ? AND cancelled_at IS NULL",
                               (member_id, pl.name, ts)).fetchone()
            if row[0]:
                starts = row[0]
                now = datetime.fromtimestamp(starts, now.tzinfo)
            ends = int(add_duration(now, pl.duration).timestamp())
            uses = None
        cur = conn.execute(
            "INSERT INTO passes (member_id, plan, kind, covers, starts_at, ends_at, uses_left,"
            " daily_cap, discount_pct, price_fen, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (member_id, pl.name, pl.kind, json.dumps(list(pl.covers)), starts, ends,
             0 if uses else None, pl.daily_cap, pl.discount_pct, pl.price_fen, ts))
        pid = cur.lastrowid
        if uses:
            ledger.credit_uses(conn, ts, member_id, pid, uses, "pass_sale", op_key=key)
        return pid, ends, uses

    def _charge(self, conn: sqlite3.Connection, m: MemberRow, pl: Plan, pid: int,
                from_balance: bool, ts: int, now: datetime, key: str | None) -> None:
        """Take the price (stored value or a cash record), earn points, count the purchase."""
        pol = self.policy
        if from_balance:
            ledger.spend(conn, ts, m.id, pl.price_fen, pol.spend_order, "pass_sale",
                         pass_id=pid, op_key=key)
        else:
            conn.execute("INSERT INTO payments (ts, member_id, kind, amount_fen, pass_id,"
                         " op_key, store_id) VALUES (?,?,?,?,?,?,?)",
                         (ts, m.id, "pass_sale", pl.price_fen, pid, key,
                          self.counter_store(conn)))
        rewards.earn(conn, pol, m.id, m.birthday, pl.price_fen, now, ts, pass_id=pid, op_key=key,
                     campaign_kind="pass")
        campaigns.issue_coupons(conn, pol, m.id, now, ts, "pass", key)
        rewards.qualify(conn, pol, m.id, ts, paid_fen=pl.price_fen, now=now, pass_id=pid,
                        op_key=key)

    def cancel_pass(self, pass_id: int, *, key: str | None = None) -> dict[str, Any]:
        """Stop pass ``pass_id`` now and refund its unused part pro rata (see the module
        doc). Conflict for a pass cancelled already or used up / ended."""
        check_int(pass_id, "pass id")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            row = conn.execute("SELECT member_id, kind, starts_at, ends_at, uses_left, "
                               "price_fen, cancelled_at FROM passes WHERE id = ?",
                               (pass_id,)).fetchone()
            if row is None:
                raise InputError(f"unknown pass {pass_id}")
            mid, kind, starts, ends, left, price, cancelled = row
            if cancelled is not None:
                raise Conflict(f"pass {pass_id} was cancelled already")
            if (ends and ends <= ts) or (kind == "punch" and not left):
                raise Conflict(f"pass {pass_id} has ended: nothing to refund")
            refund = _unused_part(conn, pass_id, kind, price, starts, ends, left, ts)
            if left:
                ledger.debit_use(conn, ts, mid, pass_id, "pass_cancel", uses=left, op_key=key)
            conn.execute("UPDATE passes SET ends_at = ?, cancelled_at = ? WHERE id = ?",
                         (ts, ts, pass_id))
            to_balance = self._pay_back(conn, mid, pass_id, price, refund, ts, now, key)
            clawed = self._claw_back_points(conn, mid, pass_id, price, refund, ts, key)
            return {**self.state(conn, mid), "pass_id": pass_id, "refunded_fen": refund,
                    "refunded_to": "balance" if to_balance else "cash",
                    "points_taken_back": clawed}
        return self.write("pass.cancel", dict(pass_id=pass_id), key, fn)

    def _pay_back(self, conn: sqlite3.Connection, mid: int, pid: int, price: int, refund: int,
                  ts: int, now: datetime, key: str | None) -> bool:
        """Refund ``refund`` of a pass the way it was paid; True when to stored value."""
        taken = dict(conn.execute(
            "SELECT currency, -sum(delta) FROM ledger WHERE pass_id = ? AND kind = 'pass_sale'"
            " AND currency IN ('principal', 'bonus') GROUP BY currency", (pid,)).fetchall())
        if not taken:
            if refund:
                conn.execute("INSERT INTO payments (ts, member_id, kind, amount_fen, pass_id, "
                             "op_key, store_id) VALUES (?,?,?,?,?,?,?)",
                             (ts, mid, "refund", -refund, pid, key, self.counter_store(conn)))
            return False
        p_back = taken.get("principal", 0) * refund // price if price else 0
        if p_back:
            ledger.credit(conn, ts, mid, "principal", p_back, "pass_refund", pass_id=pid,
                          op_key=key)
        if refund - p_back:
            ledger.credit(conn, ts, mid, "bonus", refund - p_back, "pass_refund", pass_id=pid,
                          expires_at=self.bonus_expiry(now), op_key=key)
        return True

    @staticmethod
    def _claw_back_points(conn: sqlite3.Connection, mid: int, pid: int, price: int,
                          refund: int, ts: int, key: str | None) -> int:
        earned = conn.execute("SELECT coalesce(sum(delta), 0) FROM ledger WHERE pass_id = ? "
                              "AND currency = 'points' AND kind = 'earn'", (pid,)).fetchone()[0]
        have = ledger.balances(conn, mid)["points"]
        claw = min(have, earned * refund // price) if price else 0
        if claw > 0:
            ledger.debit(conn, ts, mid, "points", claw, "pass_refund", pass_id=pid, op_key=key)
        return max(claw, 0)


def _unused_part(conn: sqlite3.Connection, pid: int, kind: str, price: int, starts: int,
                 ends: int, left: int | None, ts: int) -> int:
    """The pro-rata value of what is left of a pass at ``ts`` (rounded down, in fen)."""
    if kind == "punch":
        total = conn.execute("SELECT coalesce(sum(delta), 0) FROM ledger WHERE pass_id = ? "
                             "AND currency = 'uses' AND delta > 0", (pid,)).fetchone()[0]
        return price * (left or 0) // total if total else 0
    if ends <= starts:
        return 0
    return price * (ends - max(ts, starts)) // (ends - starts)
