# Runs on CPython (host): member look-ups for front ends — by id, card UID or phone.
"""Read queries that front ends (the HTTP API) need: a member with balances, points, passes
and cards; the member a card belongs to; members by phone (through the blind index). Names
and phones are the masks the row keeps (``李*``, ``138****8000``). Reads only: any
connection works, a read-only one is expected.
"""

from __future__ import annotations

from typing import Any

import sqlite_utils

from host.errors import NotFound
from host.privacy.mask import normalise_phone
from host.privacy.vault import vault_for


def member(db: sqlite_utils.Database, member_id: int) -> dict[str, Any]:
    """Member ``member_id`` with ``balance_fen``, its ``cards`` and ``passes`` (NotFound)."""
    rows = list(db.query(
        "SELECT id, name, phone, tier, status, principal_fen, bonus_fen, "
        "principal_fen + bonus_fen AS balance_fen, points, created_at, last_active_at "
        "FROM members WHERE id = ?", [member_id]))
    if not rows:
        raise NotFound(f"unknown member {member_id}")
    m = dict(rows[0])
    m["cards"] = [dict(r) for r in db.query(
        "SELECT uid, status, replaced_by, expires_at FROM cards WHERE member_id = ? "
        "ORDER BY created_at, uid", [member_id])]
    m["passes"] = [dict(r) for r in db.query(
        "SELECT id, plan, kind, starts_at, ends_at, uses_left, daily_cap FROM passes "
        "WHERE member_id = ? ORDER BY id", [member_id])]
    return m


def member_by_card(db: sqlite_utils.Database, uid: str) -> dict[str, Any]:
    """The member card ``uid`` (canonical hex) belongs to, with the card's own ``card``
    fields; NotFound for an unknown card. A blocked or lost card still names its member."""
    rows = list(db.query("SELECT member_id, uid, status, replaced_by, expires_at FROM cards "
                         "WHERE uid = ?", [uid]))
    if not rows:
        raise NotFound(f"unknown card {uid}")
    card = dict(rows[0])
    return {**member(db, card.pop("member_id")), "card": card}


def members_by_phone(db: sqlite_utils.Database, phone: str) -> list[dict[str, Any]]:
    """The member (at most one: one member per phone) whose phone is ``phone``, a mainland
    mobile number (``+86``, spaces and dashes allowed; InputError otherwise). Found through
    the phone's keyed blind index, so nothing is decrypted; names and phones are masks."""
    digits = normalise_phone(phone)
    idx = vault_for(db).phone_indexes(digits)
    marks = ",".join("?" * len(idx))
    return [dict(r) for r in db.query(
        f"SELECT id, name, phone, tier, status, principal_fen + bonus_fen AS balance_fen, "
        f"points FROM members WHERE phone_index IN ({marks}) ORDER BY id", idx)]
