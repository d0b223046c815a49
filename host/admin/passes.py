# Runs on CPython (host): operator writes on passes — selling a plan (time, punch card, discount).
"""Pass sales: paid in cash at the counter or from stored value."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from host.admin.core import AdminCore, MemberRow, check_int
from host.errors import Conflict, InputError
from host.ledger import book as ledger
from host.ledger import rewards
from host.ledger.periods import add_duration
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
            pid, ends, uses = self._insert_pass(conn, member_id, pl, ts, now, key)
            if pl.price_fen:
                self._charge(conn, m, pl, pid, from_balance, ts, now, key)
            conn.execute("UPDATE members SET last_active_at = ? WHERE id = ?", (ts, member_id))
            return {**self.state(conn, member_id), "pass_id": pid, "plan": plan,
                    "kind": pl.kind, "ends_at": ends, "uses_left": uses if uses else -1}
        return self.write("pass.sell", dict(member_id=member_id, plan=plan,
                                            from_balance=from_balance), key, fn)

    @staticmethod
    def _insert_pass(conn: sqlite3.Connection, member_id: int, pl: Plan, ts: int,
                     now: datetime, key: str | None) -> tuple[int, int, int | None]:
        """The new pass row (and its punch-card uses): (pass id, ends_at, uses or None)."""
        if pl.kind == "punch":
            ends = ts + pl.expiry_days * 86400 if pl.expiry_days else 0
            uses = pl.uses
        else:
            ends = int(add_duration(now, pl.duration).timestamp())
            uses = None
        cur = conn.execute(
            "INSERT INTO passes (member_id, plan, kind, covers, starts_at, ends_at, uses_left,"
            " daily_cap, discount_pct, price_fen, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (member_id, pl.name, pl.kind, json.dumps(list(pl.covers)), ts, ends,
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
                         " op_key) VALUES (?,?,?,?,?,?)",
                         (ts, m.id, "pass_sale", pl.price_fen, pid, key))
        rewards.earn(conn, pol, m.id, m.birthday, pl.price_fen, now, ts, pass_id=pid, op_key=key)
        rewards.qualify(conn, pol, m.id, ts, pass_id=pid, op_key=key)
