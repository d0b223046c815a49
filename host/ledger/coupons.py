# Runs on CPython (host): coupon primitives — issue from a template, find the best one for a price, redeem, give back.
"""Coupons in the store: ``coupons`` (one row per issued coupon, append-only) and
``coupon_events`` (``redeem`` / ``unredeem``, append-only). A coupon is *open* while it is
valid (``valid_from <= ts < valid_until``) and has no more redeems than unredeems.

Priority at a tap (``best``): among the member's open coupons that cover the service and
whose threshold (``min_spend_fen``, compared with the price after the tier discount) is met,
the one saving the most; on a tie the one expiring first, then the oldest. Gift-item coupons
are never used by a tap (they are handed over at the counter, ``redeem``).
"""

from __future__ import annotations

import json
import sqlite3
from typing import NamedTuple

from host.errors import Conflict, NotFound
from host.rules.policy_programme import CouponTemplate


class Coupon(NamedTuple):
    """An issued coupon as the rules read it."""

    id: int
    member_id: int
    template: str
    kind: str
    value: int
    min_spend_fen: int
    covers: str
    item: str
    valid_until: int


_COLS = "id, member_id, template, kind, value, min_spend_fen, covers, item, valid_until"
_OPEN = ("(SELECT count(*) FROM coupon_events e WHERE e.coupon_id = c.id AND e.event = 'redeem')"
         " <= (SELECT count(*) FROM coupon_events e WHERE e.coupon_id = c.id AND "
         "e.event = 'unredeem')")


def issue(conn: sqlite3.Connection, member_id: int, t: CouponTemplate, ts: int, source: str,
          source_ref: str | None = None, op_key: str | None = None) -> int | None:
    """Issue one coupon of template ``t`` valid ``t.valid_days`` from ``ts``. With a
    ``source_ref`` a second issue for the same (member, source, ref) is skipped: returns the
    new coupon id, or None when it was issued already."""
    cur = conn.execute(
        "INSERT INTO coupons (member_id, template, kind, value, min_spend_fen, covers, item, "
        "valid_from, valid_until, source, source_ref, issued_at, op_key) VALUES "
        "(?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (member_id, source, source_ref) DO NOTHING",
        (member_id, t.name, t.kind, t.value, t.min_spend_fen, json.dumps(list(t.covers)),
         t.item, ts, ts + t.valid_days * 86400, source, source_ref, ts, op_key))
    return cur.lastrowid if cur.rowcount == 1 else None


def covers(coupon_covers: str, cover: str) -> bool:
    """Whether a coupon's covers (JSON list; empty = all) include ``cover`` ("kiosk",
    "gate", "wash:1"; "wash" covers every program)."""
    names = json.loads(coupon_covers)
    return not names or cover in names or cover.split(":")[0] in names


def saving(c: Coupon, price_fen: int) -> int:
    """What ``c`` takes off ``price_fen`` (0 when its threshold is not met)."""
    if price_fen <= 0 or price_fen < c.min_spend_fen:
        return 0
    if c.kind == "amount_off":
        return min(c.value, price_fen)
    if c.kind == "percent_off":
        return price_fen * c.value // 100
    if c.kind == "free_service":
        return price_fen
    return 0


def open_coupons(conn: sqlite3.Connection, member_id: int, ts: int) -> list[Coupon]:
    """The member's open coupons, expiring first."""
    rows = conn.execute(f"SELECT {_COLS} FROM coupons c WHERE member_id = ? AND valid_from <= ?"
                        f" AND valid_until > ? AND {_OPEN} ORDER BY valid_until, id",
                        (member_id, ts, ts)).fetchall()
    return [Coupon(*r) for r in rows]


def best(conn: sqlite3.Connection, member_id: int, cover: str, price_fen: int, ts: int
         ) -> tuple[Coupon, int] | None:
    """(coupon, saving) of the best coupon for ``price_fen`` of ``cover`` (module doc)."""
    top: tuple[Coupon, int] | None = None
    for c in open_coupons(conn, member_id, ts):
        if c.kind == "gift_item" or not covers(c.covers, cover):
            continue
        s = saving(c, price_fen)
        if s > 0 and (top is None or s > top[1]):
            top = (c, s)
    return top


def redeem(conn: sqlite3.Connection, coupon_id: int, ts: int, *, saved_fen: int = 0,
           tap_id: int | None = None, note: str | None = None, op_key: str | None = None
           ) -> int:
    """Record the use of an open coupon; Conflict when it is used or not valid now."""
    row = conn.execute(f"SELECT valid_from, valid_until, {_OPEN} FROM coupons c WHERE id = ?",
                       (coupon_id,)).fetchone()
    if row is None:
        raise NotFound(f"unknown coupon {coupon_id}")
    if not row[2]:
        raise Conflict(f"coupon {coupon_id} was used already")
    if not row[0] <= ts < row[1]:
        raise Conflict(f"coupon {coupon_id} is not valid now")
    return conn.execute("INSERT INTO coupon_events (ts, coupon_id, event, tap_id, saved_fen, "
                        "note, op_key) VALUES (?,?,?,?,?,?,?)",
                        (ts, coupon_id, "redeem", tap_id, saved_fen, note, op_key)).lastrowid


def give_back_for_tap(conn: sqlite3.Connection, tap_id: int, ts: int, note: str) -> int:
    """Reopen every coupon tap ``tap_id`` used (a voided tap); returns how many."""
    rows = conn.execute("SELECT coupon_id, saved_fen FROM coupon_events e WHERE tap_id = ? AND "
                        "event = 'redeem' AND NOT EXISTS (SELECT 1 FROM coupon_events u WHERE "
                        "u.tap_id = e.tap_id AND u.coupon_id = e.coupon_id AND "
                        "u.event = 'unredeem')", (tap_id,)).fetchall()
    for cid, saved in rows:
        conn.execute("INSERT INTO coupon_events (ts, coupon_id, event, tap_id, saved_fen, note)"
                     " VALUES (?,?,?,?,?,?)", (ts, cid, "unredeem", tap_id, saved, note))
    return len(rows)
