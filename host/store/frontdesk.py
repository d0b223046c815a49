# Runs on CPython (host): reads of the staff console — member search and detail, device board.
"""Read queries of the front-desk console (any connection works; a read-only one is
expected): find members by phone (blind index), the last 4 digits of a phone, a member id
or the masked name; a member with expiry lots, tier history and ledger; the last tap of every
device."""

from __future__ import annotations

import re
from typing import Any

import sqlite_utils

from host.privacy.mask import mask_name
from host.store import lookup

#: Rows a search returns at most.
SEARCH_LIMIT = 50
#: A mainland mobile number, optionally with +86/0086 (host.privacy.mask normalises it).
_MOBILE_RE = re.compile(r"(?:\+?86|0086)?1[3-9][0-9]{9}", re.ASCII)


def search(db: sqlite_utils.Database, query: str) -> list[dict[str, Any]]:
    """Members matching ``query``: a mainland mobile number = its member (through the blind
    index, nothing decrypted); 4 digits = a phone's last 4 digits (the mask keeps them) or
    that member id; other digits = a member id; anything else = the masked name's first
    character (full names are sealed: they cannot be searched)."""
    q = (query or "").strip()
    if not q:
        return []
    cols = ("SELECT id, name, phone, tier, status, principal_fen + bonus_fen AS balance_fen, "
            "points FROM members")
    digits = re.sub(r"[ +-]", "", q)
    if _MOBILE_RE.fullmatch(digits):
        return lookup.members_by_phone(db, q)
    if digits.isdigit():
        where, params = ["id = ?"], [int(digits) if len(digits) <= 18 else 0]
        if len(digits) == 4:
            where.append("substr(phone, -4) = ?")
            params.append(digits)
        sql = f"{cols} WHERE {' OR '.join(where)} ORDER BY id LIMIT ?"
    else:
        sql, params = f"{cols} WHERE name LIKE ? ESCAPE '\\' ORDER BY id LIMIT ?", [
            _escape_like(mask_name(q))]
    return [dict(r) for r in db.query(sql, [*params, SEARCH_LIMIT])]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


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
