# Runs on CPython (host): reads of the staff console — member search and detail, device board.
"""Read queries of the front-desk console (any connection works; a read-only one is
expected): find members by name, the last 4 digits of a phone or a member id; a member with
expiry lots, tier history and ledger; the last tap of every device."""

from __future__ import annotations

import re
from typing import Any

import sqlite_utils

from host.store import lookup

#: Rows a search returns at most.
SEARCH_LIMIT = 50
_PHONE_DIGITS_SQL = "replace(replace(replace(phone, ' ', ''), '-', ''), '+', '')"


def search(db: sqlite_utils.Database, query: str) -> list[dict[str, Any]]:
    """Members matching ``query``: 4 digits = a phone's last 4 digits (or that member id);
    other digits = a member id or a whole phone; anything else = part of the name."""
    q = (query or "").strip()
    if not q:
        return []
    cols = ("SELECT id, name, phone, tier, status, principal_fen + bonus_fen AS balance_fen, "
            "points FROM members")
    digits = re.sub(r"[ +-]", "", q)
    if digits.isdigit():
        where, params = [f"{_PHONE_DIGITS_SQL} = ?"], [digits]
        if len(digits) == 4:
            where.append(f"substr({_PHONE_DIGITS_SQL}, -4) = ?")
            params.append(digits)
        if len(digits) <= 18:
            where.append("id = ?")
            params.append(int(digits))
        sql = f"{cols} WHERE {' OR '.join(where)} ORDER BY id LIMIT ?"
    else:
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        sql, params = f"{cols} WHERE name LIKE ? ESCAPE '\\' ORDER BY id LIMIT ?", [like]
    return [dict(r) for r in db.query(sql, [*params, SEARCH_LIMIT])]


def member_detail(db: sqlite_utils.Database, member_id: int, ledger_rows: int = 50
                  ) -> dict[str, Any]:
    """``lookup.member`` plus ``lots`` (bonus and points by expiry), ``tiers`` (history,
    newest first) and ``ledger`` (the last ``ledger_rows`` entries). NotFound."""
    m = lookup.member(db, member_id)
    m["lots"] = [dict(r) for r in db.query(
        "SELECT currency, expires_at, amount, remaining FROM lots WHERE member_id = ? AND "
        "remaining > 0 ORDER BY currency, expires_at = 0, expires_at", [member_id])]
    m["tiers"] = [dict(r) for r in db.query(
        "SELECT ts, old_tier, new_tier, manual, reason FROM tier_changes WHERE member_id = ? "
        "ORDER BY id DESC", [member_id])]
    m["ledger"] = [dict(r) for r in db.query(
        "SELECT id, ts, currency, delta, kind, reverses, note FROM ledger WHERE member_id = ? "
        "ORDER BY id DESC LIMIT ?", [member_id, ledger_rows])]
    return m


def last_taps(db: sqlite_utils.Database) -> dict[str, dict[str, Any]]:
    """device_id -> its latest tap (``ts``, ``uid``, ``verdict``, ``reason``)."""
    return {r["device_id"]: dict(r) for r in db.query(
        "SELECT t.device_id, t.ts, t.uid, t.verdict, t.reason FROM taps t JOIN "
        "(SELECT device_id, max(id) AS id FROM taps GROUP BY device_id) l ON l.id = t.id")}


def ledger_entry_member(db: sqlite_utils.Database, entry_id: int) -> int | None:
    """The member of ledger entry ``entry_id`` (None when there is no such entry)."""
    row = db.execute("SELECT member_id FROM ledger WHERE id = ?", [entry_id]).fetchone()
    return row[0] if row else None
