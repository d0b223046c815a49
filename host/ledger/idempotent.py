# Runs on CPython (host): idempotency keys — one write per key, shared by admin writes and operator taps.
"""Every operator write takes an idempotency key, stored in ``ops`` in the same transaction
as the write itself. A repeat with the same key and the same request returns the first
result (``replayed``) and writes nothing; the same key for another request is a ``Conflict``.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

from host.errors import Conflict, InputError

#: Idempotency keys: 1-128 printable ASCII characters, no space.
KEY_RE = re.compile(r"[\x21-\x7e]{1,128}")


def check_key(key: str | None) -> None:
    """Raise ``InputError`` for a key that is not 1-128 printable ASCII characters."""
    if key is not None and not KEY_RE.fullmatch(key):
        raise InputError("idempotency key must be 1-128 printable ASCII characters")


def canonical(args: dict[str, Any]) -> str:
    """The request's arguments as stored and compared (sorted JSON)."""
    return json.dumps(args, sort_keys=True)


def recall(conn: sqlite3.Connection, key: str | None, command: str, canon: str
           ) -> dict[str, Any] | None:
    """The stored result of ``key`` (None when the key is new or None); ``Conflict`` when the
    key was used for another command or other arguments. Call inside the write's transaction."""
    if key is None:
        return None
    row = conn.execute("SELECT command, args, result FROM ops WHERE key = ?", (key,)).fetchone()
    if row is None:
        return None
    if row[0] != command or row[1] != canon:
        raise Conflict(f"idempotency key {key!r} was used for another request ({row[0]} {row[1]})")
    return json.loads(row[2])


def remember(conn: sqlite3.Connection, key: str | None, command: str, canon: str,
             result: dict[str, Any], ts: int) -> None:
    """Store ``result`` under ``key`` (nothing when key is None), in the write's transaction."""
    if key is not None:
        conn.execute("INSERT INTO ops (key, command, args, result, created_at) VALUES (?,?,?,?,?)",
                     (key, command, canon, json.dumps(result, sort_keys=True), ts))
