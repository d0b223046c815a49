# Runs on CPython (host): operator writes on a member's value — top-up, refund, points, reversals, expiry.
"""Stored value and points: top-ups (ladder bonus, referral), refunds (principal only),
points redemption and gifts, reversing entries, and writing off expired lots."""

from __future__ import annotations

import math
import sqlite3
from datetime import datetime
from typing import Any

from host.admin.core import AdminCore, check_int
from host.admin import catalogue
from host.admin.coupons import issue_for_topup
from host.admin.referral import pay_referral
from host.errors import Conflict, InputError, InsufficientFunds
from host.ledger import book as ledger
from host.ledger import rewards
from host.messages import outbox
from host.money import format_fen
from host.rules import campaigns


class WalletWrites(AdminCore):
    """Move value in and out of member accounts."""

    def topup(self, member_id: int, amount_fen: int, *, key: str | None = None
              ) -> dict[str, Any]:
        """Top up principal; add the ladder bonus (highest rung with ``min <= amount``; a
        top-up campaign's ladder while one is on) as a bonus lot; issue the coupons of the
        top-up rules and campaigns; pay the referral reward when this is the member's first
        qualifying purchase (``host.admin.referral``)."""
        check_int(member_id, "member id")
        check_int(amount_fen, "top-up amount")
        pol = self.policy

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            m = self.member(conn, member_id)
            if m.status != "active":
                raise Conflict(f"member {member_id} is suspended")
            ledger.sweep_expired(conn, ts, member_id)
            rungs = campaigns.ladder(pol, now)
            bonus = next((b for mn, b in reversed(rungs) if amount_fen >= mn), 0)
            bal = ledger.balances(conn, member_id)
            if bal["principal_fen"] + bal["bonus_fen"] + amount_fen + bonus > pol.max_balance_fen:
                raise InputError(f"top-up would take the balance above the site maximum "
                                 f"{format_fen(pol.max_balance_fen)}")
            ledger.credit(conn, ts, member_id, "principal", amount_fen, "topup", op_key=key)
            if bonus:
                ledger.credit(conn, ts, member_id, "bonus", bonus, "topup_bonus",
                              expires_at=self.bonus_expiry(now), op_key=key)
            pay_id = conn.execute("INSERT INTO payments (ts, member_id, kind, amount_fen, op_key,"
                                  " store_id) VALUES (?,?,?,?,?,?)",
                                  (ts, member_id, "topup", amount_fen, key,
                                   self.counter_store(conn))).lastrowid
            coupon = issue_for_topup(conn, pol, member_id, amount_fen, ts, f"payment:{pay_id}",
                                     key)
            campaigns.issue_coupons(conn, pol, member_id, now, ts, "topup", key)
            outbox.receipt(conn, pol, member_id, "Top-up", amount_fen + bonus, ts,
                           f"payment:{pay_id}")
            referral = pay_referral(conn, pol, m, amount_fen, ts, now, self.bonus_expiry(now),
                                    key)
            conn.execute("UPDATE members SET last_active_at = ? WHERE id = ?", (ts, member_id))
            return {**self.state(conn, member_id), "topup_fen": amount_fen,
                    "bonus_added_fen": bonus, "referral_points": referral,
                    "coupon_id": coupon}
        return self.write("topup", dict(member_id=member_id, amount_fen=amount_fen), key, fn)

    def refund(self, member_id: int, amount_fen: int | None = None, *,
               key: str | None = None) -> dict[str, Any]:
        """Refund principal only (``None`` = all of it). Bonus is never paid out: refunding
        R of principal P forfeits ``bonus * R // P`` of the bonus (prorated), all of it on a
        full refund."""
        check_int(member_id, "member id")
        if amount_fen is not None:
            check_int(amount_fen, "refund amount")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            self.member(conn, member_id)
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
            pay_id = conn.execute("INSERT INTO payments (ts, member_id, kind, amount_fen, op_key,"
                                  " store_id) VALUES (?,?,?,?,?,?)",
                                  (ts, member_id, "refund", -r, key,
                                   self.counter_store(conn))).lastrowid
            outbox.receipt(conn, self.policy, member_id, "Refund", r, ts, f"payment:{pay_id}")
            return {**self.state(conn, member_id), "refunded_fen": r,
                    "bonus_forfeited_fen": forfeit}
        return self.write("refund", dict(member_id=member_id, amount_fen=amount_fen), key, fn)

    def redeem_points(self, member_id: int, points: int | None = None, *,
                      item: str | None = None, qty: int = 1, to_balance: bool = False,
                      key: str | None = None) -> dict[str, Any]:
        """Spend points on ``qty`` of a catalogue ``item`` (its price; ``points``, when
        given, must match; ``host.admin.catalogue``) or convert them to bonus balance at the
        policy rate (``points.convert_points_per_yuan``; a whole multiple of it)."""
        check_int(member_id, "member id")
        check_int(qty, "quantity")
        if points is not None:
            check_int(points, "points")
        rate = self.policy.convert_points_per_yuan
        if to_balance and (points is None or (points * 100) % rate):
            raise InputError(f"points to convert must make whole fen: a multiple of "
                             f"{rate // math.gcd(rate, 100)}")
        if not to_balance and not item:
            raise InputError("say what the points buy (--item) or use --to-balance")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            self.active_member(conn, member_id)
            pts = points
            if not to_balance:
                price = catalogue.price_of(conn, item, qty)
                if price is None and points is None:
                    raise InputError("give the points (the catalogue is empty)")
                if price is not None and points not in (None, price):
                    raise InputError(f"{qty} x {item!r} costs {price} points, not {points}")
                pts = price if price is not None else points
            ledger.sweep_expired(conn, ts, member_id)
            first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM ledger").fetchone()[0]
            ledger.debit(conn, ts, member_id, "points", pts,
                         "convert" if to_balance else "redeem", op_key=key, note=item)
            credited = 0
            if to_balance:
                credited = pts * 100 // rate
                ledger.credit(conn, ts, member_id, "bonus", credited, "convert",
                              expires_at=self.bonus_expiry(now), op_key=key)
            else:
                catalogue.take(conn, item, qty, member_id, first, ts, key)
            return {**self.state(conn, member_id), "redeemed_points": pts,
                    "credited_fen": credited}
        return self.write("points.redeem", dict(member_id=member_id, points=points, item=item,
                                                qty=qty, to_balance=to_balance), key, fn)

    def grant_points(self, member_id: int, points: int, reason: str, *,
                     key: str | None = None) -> dict[str, Any]:
        """A manager's grant of points, with the reason (kept as the ledger row's note);
        they expire like earned points."""
        check_int(member_id, "member id")
        check_int(points, "points")
        if not isinstance(reason, str) or not 1 <= len(reason.strip()) <= 200:
            raise InputError("a grant needs a reason (at most 200 characters)")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            self.active_member(conn, member_id)
            ledger.credit(conn, ts, member_id, "points", points, "grant",
                          expires_at=rewards.points_expiry(self.policy, now), op_key=key,
                          note=reason.strip())
            return {**self.state(conn, member_id), "granted_points": points}
        return self.write("points.grant", dict(member_id=member_id, points=points,
                                               reason=reason), key, fn)

    def gift_points(self, from_id: int, to_id: int, points: int, *, key: str | None = None
                    ) -> dict[str, Any]:
        """Move points between members; each part keeps the expiry of the lot it came from.
        With ``points.gift_pooling = false`` a member receives gifts from one member only
        (points of several accounts cannot be pooled into one)."""
        check_int(from_id, "member id")
        check_int(to_id, "member id")
        check_int(points, "points")
        if points < self.policy.gift_min:
            raise InputError(f"a gift must be at least {self.policy.gift_min} points")
        if from_id == to_id:
            raise InputError("cannot gift points to the same member")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            self.active_member(conn, from_id)
            self.active_member(conn, to_id)
            if not self.policy.gift_pooling:
                other = conn.execute("SELECT 1 FROM ledger WHERE member_id = ? AND kind = "
                                     "'gift_in' AND note <> ? LIMIT 1",
                                     (to_id, f"from member {from_id}")).fetchone()
                if other is not None:
                    raise Conflict(f"member {to_id} already receives points from another "
                                   "member (points.gift_pooling = false)")
            ledger.sweep_expired(conn, ts, from_id)
            taken = ledger.debit(conn, ts, from_id, "points", points, "gift_out", op_key=key,
                                 note=f"to member {to_id}")
            for part in taken:
                ledger.credit(conn, ts, to_id, "points", part.amount, "gift_in",
                              expires_at=part.expires_at, op_key=key,
                              note=f"from member {from_id}")
            return {"from": self.state(conn, from_id), "to": self.state(conn, to_id),
                    "points": points}
        return self.write("points.gift", dict(from_id=from_id, to_id=to_id, points=points),
                          key, fn)

    def reverse(self, entry_id: int, *, reason: str = "", key: str | None = None
                ) -> dict[str, Any]:
        """Correct a ledger entry with a reversing entry (the ledger itself never changes).
        Cash records (``payments``) of top-ups are not touched: a wrongly keyed top-up whose
        cash was never received is reversed here and shows in the ledger, not as a refund. A
        reversed refund gets an opposite ``refund`` record (the cash did not go out). The
        payment of a pass is not reversed here: ``cancel_pass`` stops the pass and refunds."""
        check_int(entry_id, "ledger entry id")
        if not isinstance(reason, str) or len(reason) > 200:
            raise InputError("reason must be at most 200 characters")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            row = conn.execute("SELECT kind, currency, delta, pass_id FROM ledger WHERE id = ?",
                               (entry_id,)).fetchone()
            if row is not None and row[0] == "pass_sale" and row[3] is not None:
                raise Conflict(f"ledger entry {entry_id} paid for pass {row[3]}: use "
                               f"'tapkiosk pass cancel {row[3]}' (stops the pass, refunds "
                               "pro rata)")
            new_id = ledger.reverse(conn, ts, entry_id, op_key=key, note=reason or None)
            mid = conn.execute("SELECT member_id FROM ledger WHERE id = ?",
                               (new_id,)).fetchone()[0]
            catalogue.give_back(conn, entry_id, ts, key)
            if row[0] == "refund" and row[1] == "principal":
                # The refund did not happen: its cash out is cancelled by an opposite record.
                # It belongs to the store whose counter recorded the refund.
                was = conn.execute(
                    "SELECT p.store_id FROM payments p JOIN ledger l ON l.id = ? WHERE "
                    "p.member_id = l.member_id AND p.ts = l.ts AND p.kind = 'refund' AND "
                    "p.amount_fen = l.delta ORDER BY p.id LIMIT 1", (entry_id,)).fetchone()
                conn.execute("INSERT INTO payments (ts, member_id, kind, amount_fen, op_key, "
                             "store_id) VALUES (?,?,?,?,?,?)",
                             (ts, mid, "refund", -row[2], key,
                              was[0] if was else self.counter_store(conn)))
            return {**self.state(conn, mid), "reversed": entry_id, "entry_id": new_id}
        return self.write("ledger.reverse", dict(entry_id=entry_id, reason=reason), key, fn)

    def expire(self, *, key: str | None = None) -> dict[str, Any]:
        """Write off every expired lot of every member now."""
        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            return {"expired_lots": ledger.sweep_expired(conn, ts)}
        return self.write("expire", {}, key, fn)
