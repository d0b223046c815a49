# Runs on CPython (host): the append-only audit log — who changed what, when, before and after.
"""The audit log (table ``audit_log``, migration 8).

Every staff (console) and CLI write records one row: ``actor`` (a staff name, or
``cli:<os user>``), ``action`` (the admin command, e.g. ``topup``), the member or device it
touched, JSON of the values before and after, the client address and the idempotency key.
:func:`record` takes the connection of the write's own transaction, so the row commits or
rolls back with the change. Triggers refuse UPDATE and DELETE of a row.
"""

from __future__ import annotations

import getpass
import json
import sqlite3
from typing import Any

import sqlite_utils

from host.errors import InputError

#: Rows a listing returns at most.
MAX_ROWS = 1000


def cli_actor() -> str:
    """The actor name of a CLI command: ``cli:<os user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}"


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False,
                                                 separators=(",", ":"))


def record(conn: sqlite3.Connection, ts: int, actor: str, action: str, *,
           member_id: int | None = None, device_id: str | None = None,
           before: Any = None, after: Any = None, client: str | None = None,
           op_key: str | None = None) -> int:
    """Append one row inside the caller's transaction; returns its id."""
    if not actor or not action:
        raise InputError("an audit row needs an actor and an action")
    cur = conn.execute(
        "INSERT INTO audit_log (ts, actor, action, member_id, device_id, before, after, client,"
        " op_key) VALUES (?,?,?,?,?,?,?,?,?)",
        (ts, actor, action, member_id, device_id, _json(before), _json(after), client, op_key))
    return cur.lastrowid


def snapshot(conn: sqlite3.Connection, args: dict[str, Any]) -> dict[str, Any] | None:
    """The state an admin command with ``args`` is about to change: the member's tier, status
    and balances, the card's status when a card is named, the device's kind and settings when
    a device is named (never its key). None when nothing exists yet."""
    out: dict[str, Any] = {}
    mid = args.get("member_id")
    if isinstance(mid, int):
        row = conn.execute("SELECT name, tier, status, principal_fen, bonus_fen, points "
                           "FROM members WHERE id = ?", (mid,)).fetchone()
        if row is not None:
            out.update(zip(("name", "tier", "status", "principal_fen", "bonus_fen", "points"),
                           row))
    for field in ("uid", "old"):
        uid = args.get(field)
        if isinstance(uid, str):
            row = conn.execute("SELECT member_id, status FROM cards WHERE uid = ?",
                               (uid,)).fetchone()
            if row is not None:
                out[f"card_{uid}"] = {"member_id": row[0], "status": row[1]}
    device = args.get("device_id")
    if isinstance(device, str):
        row = conn.execute("SELECT kind, settings FROM devices WHERE device_id = ?",
                           (device,)).fetchone()
        if row is not None:     # never the key
            out["device"] = {"kind": row[0], "settings": json.loads(row[1])}
    return out or None


def device_of(args: dict[str, Any]) -> str | None:
    """The device an admin command touched, from its arguments."""
    device = args.get("device_id")
    return device if isinstance(device, str) else None


def member_of(args: dict[str, Any], result: dict[str, Any]) -> int | None:
    """The member an admin command touched, from its arguments or its result."""
    for source in (args, result):
        mid = source.get("member_id")
        if isinstance(mid, int) and not isinstance(mid, bool):
            return mid
    return None


def rows(db: sqlite_utils.Database, *, actor: str | None = None, action: str | None = None,
         member_id: int | None = None, since: int | None = None,
         limit: int = 200) -> list[dict[str, Any]]:
    """Log rows, newest first, filtered by actor, action (a prefix: ``card`` matches
    ``card.enroll``), member and time; ``before``/``after`` decoded."""
    where, params = [], []
    if actor:
        where.append("actor = ?")
        params.append(actor)
    if action:
        where.append("(action = ? OR action LIKE ? ESCAPE '\\')")
        params += [action, action.replace("%", "\\%").replace("_", "\\_") + ".%"]
    if member_id is not None:
        where.append("member_id = ?")
        params.append(member_id)
    if since is not None:
        where.append("ts >= ?")
        params.append(since)
    sql = ("SELECT id, ts, actor, action, member_id, device_id, before, after, client, op_key "
           f"FROM audit_log {'WHERE ' + ' AND '.join(where) if where else ''} "
           "ORDER BY id DESC LIMIT ?")
    out = []
    for r in db.query(sql, [*params, max(1, min(int(limit), MAX_ROWS))]):
        r = dict(r)
        r["before"] = json.loads(r["before"]) if r["before"] else None
        r["after"] = json.loads(r["after"]) if r["after"] else None
        out.append(r)
    return out


def actors(db: sqlite_utils.Database) -> list[str]:
    """Every actor name that appears in the log (for the console's filter)."""
    return [r[0] for r in db.execute("SELECT DISTINCT actor FROM audit_log ORDER BY actor")]
