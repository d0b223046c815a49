# Runs on CPython (host): a WAN outage seen from the store layer — the error a backend raises, the taps replay refused.
"""The chain's database unreachable (issue 17).

:class:`StoreUnavailable` is what any store backend raises when the database cannot be
reached (PostgreSQL: connection refused or lost, ``psycopg.OperationalError``); the daemon's
writer then decides taps from its local journal (``host.site.outage``). It is backend-
neutral: nothing here imports a driver.

``offline_unapplied`` (migration 20) keeps every tap a store granted offline that the chain's
database refused when the journal was replayed; :func:`record_unapplied` writes one inside
the replay's transaction (idempotent on (device, seq)), :func:`unapplied` lists them for
``tapkiosk report offline`` and ``doctor``. :func:`record_denied` stores a tap refused
offline as the refused tap its reader saw (idempotent on (device, seq) too).
"""

from __future__ import annotations

from typing import Any

import sqlite_utils

from host.errors import HostError


class StoreUnavailable(HostError):
    """The chain's database cannot be reached (a WAN outage); nothing was written."""

    exit_code = 1


def is_unavailable(e: BaseException) -> bool:
    """True when ``e`` means the database cannot be reached: :class:`StoreUnavailable`, or a
    backend error carrying a connection-level ``sqlstate`` (the PostgreSQL backend maps
    psycopg errors to sqlite3 ones and keeps the SQLSTATE: ``""`` for a connection that
    failed or dropped, class 08 connection exception, 57P admin shutdown / cannot connect
    now). A SQLite error has no ``sqlstate``: "database is locked" is not an outage."""
    if isinstance(e, StoreUnavailable):
        return True
    state = getattr(e, "sqlstate", None)
    return state is not None and (state == "" or state.startswith(("08", "57P")))


def record_unapplied(conn: Any, *, device_id: str, seq: int, uid: str,
                     member_id: int | None, tapped_at: int, granted_fen: int, reason: str,
                     text: str, recorded_at: int) -> None:
    """Keep one offline tap the database refused on replay (once per (device, seq))."""
    conn.execute("INSERT INTO offline_unapplied (device_id, seq, uid, member_id, tapped_at, "
                 "granted_fen, reason, text, recorded_at) VALUES (?,?,?,?,?,?,?,?,?) "
                 "ON CONFLICT (device_id, seq) DO NOTHING",
                 (device_id, seq, uid, member_id, tapped_at, granted_fen, reason, text,
                  recorded_at))


def record_denied(conn: Any, e: Any) -> None:
    """Store a tap the daemon refused during an outage (``e``: its journal entry) as the
    refused tap the reader saw, with its reply: nothing charged, once per (device, seq)."""
    conn.execute("INSERT INTO taps (ts, device_id, seq, uid, member_id, kind, service, "
                 "amount_fen, direction, device_time, verdict, reason, relay_ms, pattern, "
                 "text, balance_fen, points, uses_left, reply) "
                 "VALUES (?,?,?,?,?,?,?,?,?,?,'deny',?,0,?,?,?,0,?,?) "
                 "ON CONFLICT (device_id, seq) DO NOTHING",
                 (e.ts, e.device_id, e.seq, e.uid, e.member_id, e.kind, e.service,
                  e.amount_fen, e.direction, e.device_time, e.reason, e.pattern, e.text,
                  e.balance_fen, e.uses_left, e.reply))


def unapplied(db: sqlite_utils.Database, limit: int = 1000) -> list[dict[str, Any]]:
    """Offline taps refused on replay, newest first."""
    return [dict(r) for r in db.query(
        "SELECT device_id, seq, uid, member_id, tapped_at, granted_fen, reason, text, "
        "recorded_at FROM offline_unapplied ORDER BY tapped_at DESC, id DESC LIMIT ?",
        [limit])]
