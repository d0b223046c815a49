# Runs on CPython (host): read models of the store for front ends — member view, lists, ledger, export, taps.
"""Read-only views the operator CLI (and the simulator, the API) show. No writes here; every
function returns plain dicts, so a front end only renders them."""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

import sqlite_utils

from host.errors import InputError, NotFound
from host.store import member_taps

#: Tables whose ``key`` column is secret: left out of an export unless asked for.
_KEYED_TABLES = ("devices", "site_keys")

#: Member columns that hold sealed personal data or its blind index: never shown as such.
_SEALED_COLUMNS = ("personal", "personal_version", "phone_index", "birthday")

#: The tap columns a simulator prints after a tap.
TAP_COLUMNS = ("id, device_id, uid, member_id, verdict, reason, text, charged_fen, "
               "points_earned, balance_fen, points, uses_left, relay_ms, latency_ms")


#: A ledger or lot amount in two labelled columns: ``{v}_fen`` for money (principal,
#: bonus), ``{v}_count`` for counts (points, qualifying purchases, pass uses); the other None.
_BY_UNIT = ("CASE WHEN currency IN ('principal', 'bonus') THEN {v} END AS {v}_fen, "
            "CASE WHEN currency IN ('principal', 'bonus') THEN NULL ELSE {v} END AS {v}_count")


def _rows(db: sqlite_utils.Database, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    return [dict(r) for r in db.query(sql, params)]


def member_id_of_card(db: sqlite_utils.Database, uid: str) -> int:
    """The member a card (canonical UID) belongs to; NotFound for an unknown card."""
    row = db.execute("SELECT member_id FROM cards WHERE uid = ?", (uid,)).fetchone()
    if row is None:
        raise NotFound(f"unknown card {uid}")
    return row[0]


def _member_row(db: sqlite_utils.Database, member_id: int) -> dict[str, Any]:
    """The member's row without its sealed columns (name and phone are the masks)."""
    try:
        m = db.table("members").get(member_id)
    except sqlite_utils.db.NotFoundError:
        raise NotFound(f"unknown member {member_id}") from None
    for col in _SEALED_COLUMNS:
        m.pop(col, None)
    return m


def member(db: sqlite_utils.Database, member_id: int) -> dict[str, Any]:
    """A member with balance, cards, passes, open lots and the last ten taps; personal
    fields masked (``host.admin`` ``reveal`` opens them)."""
    m = _member_row(db, member_id)
    m["balance_fen"] = m["principal_fen"] + m["bonus_fen"]
    m["cards"] = _rows(db, "SELECT uid, status, replaced_by FROM cards WHERE member_id = ? "
                           "ORDER BY created_at", [member_id])
    m["passes"] = _rows(db, "SELECT id, plan, kind, starts_at, ends_at, uses_left, daily_cap "
                            "FROM passes WHERE member_id = ? ORDER BY id", [member_id])
    m["lots"] = _rows(db, f"SELECT currency, expires_at, {_BY_UNIT.format(v='remaining')} "
                          "FROM lots WHERE member_id = ? AND remaining > 0 "
                          "ORDER BY currency, expires_at = 0, expires_at", [member_id])
    m["recent_taps"] = _rows(db, member_taps.select(
        "ts, device_id, verdict, reason, charged_fen, text", "ORDER BY id DESC LIMIT 10"),
        [*member_taps.params(member_id), member_id])
    return m


def members(db: sqlite_utils.Database, tier: str | None, limit: int) -> list[dict[str, Any]]:
    """Members by id (of ``tier`` when given): id, masked name and phone, tier, status,
    balance, points."""
    where, params = ("WHERE tier = ?", [tier]) if tier else ("", [])
    return _rows(db, f"SELECT id, name, phone, tier, status, principal_fen + bonus_fen AS "
                     f"balance_fen, points FROM members {where} ORDER BY id LIMIT ?",
                 params + [limit])


def member_data(db: sqlite_utils.Database, member_id: int) -> dict[str, Any]:
    """Everything stored about a member (for their data export): the row (sealed columns as
    stored, for the caller to open), cards, passes, lots, ledger, payments and taps."""
    try:
        row = db.table("members").get(member_id)
    except sqlite_utils.db.NotFoundError:
        raise NotFound(f"unknown member {member_id}") from None
    q = lambda sql: _rows(db, sql, [member_id])  # noqa: E731
    return {
        "row": row,
        "cards": q("SELECT uid, status, replaced_by, expires_at, created_at FROM cards "
                   "WHERE member_id = ? ORDER BY created_at, uid"),
        "passes": q("SELECT id, plan, kind, starts_at, ends_at, uses_left, daily_cap, "
                    "price_fen, created_at FROM passes WHERE member_id = ? ORDER BY id"),
        "lots": q("SELECT currency, expires_at, amount, remaining FROM lots "
                  "WHERE member_id = ? ORDER BY id"),
        "ledger": q("SELECT id, ts, currency, delta, kind, pass_id, tap_id, reverses, note "
                    "FROM ledger WHERE member_id = ? ORDER BY id"),
        "payments": q("SELECT id, ts, kind, amount_fen, pass_id FROM payments "
                      "WHERE member_id = ? ORDER BY id"),
        "taps": _rows(db, member_taps.select("id, ts, device_id, uid, verdict, reason, "
                                             "charged_fen, points_earned, text"),
                      [*member_taps.params(member_id), member_id]),
    }


def sealed_members(db: sqlite_utils.Database) -> list[tuple[int, bytes]]:
    """(id, sealed personal data) of every member that has some."""
    return [(r[0], bytes(r[1])) for r in db.execute(
        "SELECT id, personal FROM members WHERE personal IS NOT NULL ORDER BY id")]


def retention_candidates(db: sqlite_utils.Database, cutoff: int) -> list[dict[str, Any]]:
    """Members not erased, holding personal data, idle (no tap, top-up or purchase) since
    before ``cutoff``: id, masked name, last activity, principal."""
    return _rows(db, "SELECT id AS member_id, name, coalesce(last_active_at, created_at) AS "
                     "last_active_at, principal_fen FROM members WHERE erased_at IS NULL AND "
                     "(personal IS NOT NULL OR name <> '' OR phone IS NOT NULL OR birthday IS "
                     "NOT NULL) AND coalesce(last_active_at, created_at) < ? ORDER BY id",
                 [cutoff])


def ledger(db: sqlite_utils.Database, member_id: int, limit: int) -> list[dict[str, Any]]:
    """A member's ledger entries, newest first; NotFound for an unknown member."""
    if db.execute("SELECT 1 FROM members WHERE id = ?", (member_id,)).fetchone() is None:
        raise NotFound(f"unknown member {member_id}")
    return _rows(db, f"SELECT id, ts, currency, {_BY_UNIT.format(v='delta')}, kind, lot_id, "
                     "pass_id, tap_id, reverses, note FROM ledger WHERE member_id = ? "
                     "ORDER BY id DESC LIMIT ?", [member_id, limit])


def ledger_rows(db: sqlite_utils.Database) -> int:
    """How many ledger entries there are."""
    return db.execute("SELECT count(*) FROM ledger").fetchone()[0]


def export(db: sqlite_utils.Database, with_keys: bool) -> dict[str, list[dict[str, Any]]]:
    """Every table as rows (bytes as hex); device and site keys only ``with_keys``; members
    without their sealed columns (``host.privacy.upgrade.export_personal`` adds them back
    opened when asked)."""
    data: dict[str, list[dict[str, Any]]] = {}
    for table in db.table_names():
        rows = []
        for r in db.query(f"SELECT * FROM [{table}] ORDER BY rowid"):
            if table in _KEYED_TABLES and not with_keys:
                r.pop("key", None)
            if table == "members":
                for col in _SEALED_COLUMNS:
                    r.pop(col, None)
            rows.append({k: (v.hex() if isinstance(v, bytes) else v) for k, v in r.items()})
        data[table] = rows
    return data


# ---------------------------------------------------------------------- read-only file access
def open_readonly(path: str) -> sqlite3.Connection:
    """The site database at ``path`` opened read-only (rows by name), for a process that is
    not the site's writer (the simulator). InputError when there is no file."""
    if not os.path.exists(path):
        raise InputError(f"no database at {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    return conn


def device_kind_key(conn: sqlite3.Connection, device_id: str) -> tuple[str, bytes] | None:
    """(kind, key) of a registered device, None when it is not registered."""
    row = conn.execute("SELECT kind, key FROM devices WHERE device_id = ?",
                       (device_id,)).fetchone()
    return None if row is None else (row[0], bytes(row[1]))


def last_tap_id(conn: sqlite3.Connection) -> int:
    """The id of the newest tap (0 when there is none)."""
    return conn.execute("SELECT coalesce(max(id), 0) FROM taps").fetchone()[0]


def tap_after(conn: sqlite3.Connection, device_id: str, after_id: int) -> dict[str, Any] | None:
    """The first tap of ``device_id`` with id above ``after_id`` (``TAP_COLUMNS`` and the
    member's name as ``member``), None when there is none yet."""
    row = conn.execute(f"SELECT {TAP_COLUMNS}, (SELECT name FROM members m WHERE "
                       "m.id = taps.member_id) AS member FROM taps WHERE device_id = ? "
                       "AND id > ? ORDER BY id LIMIT 1", (device_id, after_id)).fetchone()
    return None if row is None else dict(row)


def tier_changes(db: sqlite_utils.Database, member_id: int | None, limit: int
                 ) -> list[dict[str, Any]]:
    """Tier history, newest first (of one member when given; NotFound for an unknown one)."""
    if member_id is not None and db.execute("SELECT 1 FROM members WHERE id = ?",
                                            (member_id,)).fetchone() is None:
        raise NotFound(f"unknown member {member_id}")
    where, params = ("WHERE member_id = ?", [member_id]) if member_id is not None else ("", [])
    return _rows(db, f"SELECT id, ts, member_id, old_tier, new_tier, manual, reason FROM "
                     f"tier_changes {where} ORDER BY id DESC LIMIT ?", params + [limit])


def coupons(db: sqlite_utils.Database, member_id: int, ts: int, include_closed: bool
            ) -> list[dict[str, Any]]:
    """A member's coupons, expiring first, each with its ``state`` (open, used, expired);
    only open ones unless ``include_closed``. NotFound for an unknown member."""
    if db.execute("SELECT 1 FROM members WHERE id = ?", (member_id,)).fetchone() is None:
        raise NotFound(f"unknown member {member_id}")
    rows = _rows(db, "SELECT id, template, kind, value, min_spend_fen, covers, item, valid_until, "
                     "source, (SELECT coalesce(sum(CASE event WHEN 'redeem' THEN 1 ELSE -1 END), 0)"
                     " FROM coupon_events e WHERE e.coupon_id = c.id) AS used FROM coupons c "
                     "WHERE member_id = ? ORDER BY valid_until, id", [member_id])
    out = []
    for r in rows:
        value, kind = r.pop("value"), r["kind"]
        state = "used" if r.pop("used") > 0 else "expired" if r["valid_until"] <= ts else "open"
        if include_closed or state == "open":
            out.append({"id": r["id"], "template": r["template"], "kind": kind,
                        "off_fen": value if kind == "amount_off" else None,
                        "off_pct": value if kind == "percent_off" else None,
                        "min_spend_fen": r["min_spend_fen"],
                        "covers": " ".join(json.loads(r["covers"])) or "all",
                        "item": r["item"], "expires_at": r["valid_until"],
                        "source": r["source"], "state": state})
    return out


def messages(db: sqlite_utils.Database, status: str | None, limit: int) -> list[dict[str, Any]]:
    """The message outbox, newest first (of ``status`` when given)."""
    where, params = ("WHERE status = ?", [status]) if status else ("", [])
    return _rows(db, f"SELECT id, created_at, member_id, kind, channel, recipient, subject, "
                     f"status, attempts, last_error FROM messages {where} ORDER BY id DESC "
                     f"LIMIT ?", params + [limit])


def catalogue(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Active catalogue items: name, points, stock (-1 = unlimited), redeemed so far."""
    return _rows(db, "SELECT name AS item, points, CASE WHEN limited = 1 THEN (SELECT "
                     "coalesce(sum(delta), 0) FROM catalogue_moves m WHERE m.item_id = i.id) "
                     "ELSE -1 END AS stock, (SELECT coalesce(-sum(delta), 0) FROM catalogue_moves"
                     " m WHERE m.item_id = i.id AND m.note IN ('redeemed', 'reversed')) AS "
                     "redeemed FROM catalogue_items i WHERE active = 1 ORDER BY name", [])
