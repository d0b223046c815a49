# Runs on CPython (host): drain the message outbox — claim due messages, deliver, retry or give up.
"""``send_due``: every message whose time has come is claimed (``sending``) in a short
transaction, delivered outside any transaction, then marked ``sent``, or retried after
``retry_minutes * attempts`` until ``max_attempts`` (then ``failed``). A member who opted out
since the message was queued gets nothing (``skipped``). A message left ``sending`` by a
crash is taken again after the retry delay, so a crash can at worst send one twice."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

import sqlite_utils

from host.messages.channels import Channel, ChannelError, Message
from host.rules.policy import Policy
from host.store.db import transaction


def _claim(db: sqlite_utils.Database, ts: int, retry_s: int, limit: int) -> list[Message]:
    with transaction(db) as conn:
        conn.execute("UPDATE messages SET status = 'pending' WHERE status = 'sending' AND "
                     "next_attempt_at <= ?", (ts - retry_s,))
        rows = conn.execute("SELECT id, member_id, kind, recipient, subject, body FROM messages "
                            "WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY id "
                            "LIMIT ?", (ts, limit)).fetchall()
        conn.executemany("UPDATE messages SET status = 'sending', next_attempt_at = ? "
                         "WHERE id = ?", [(ts, r[0]) for r in rows])
    return [Message(*r) for r in rows]


def _opted_out(conn: sqlite3.Connection, member_id: int) -> bool:
    row = conn.execute("SELECT opt_out FROM member_contacts WHERE member_id = ?",
                       (member_id,)).fetchone()
    return bool(row and row[0])


def send_due(db: sqlite_utils.Database, policy: Policy, channels: Mapping[str, Channel],
             clock: Callable[[], int], limit: int = 500) -> dict[str, Any]:
    """Deliver the due messages; counts of sent, retried, failed and skipped."""
    m = policy.messages
    counts = {"sent": 0, "retried": 0, "failed": 0, "skipped": 0}
    for msg in _claim(db, clock(), m.retry_minutes * 60, limit):
        channel = db.execute("SELECT channel FROM messages WHERE id = ?", (msg.id,)).fetchone()[0]
        status, error = "sent", None
        if _opted_out(db.conn, msg.member_id):
            status = "skipped"
        elif channel not in channels:
            status, error = "retry", f"no {channel} channel configured"
        else:
            try:
                channels[channel].send(msg)
            except ChannelError as e:
                status, error = "retry", str(e)
        counts[_finish(db, msg.id, status, error, clock(), m.max_attempts,
                       m.retry_minutes * 60)] += 1
    return counts


def _finish(db: sqlite_utils.Database, mid: int, status: str, error: str | None, ts: int,
            max_attempts: int, retry_s: int) -> str:
    with transaction(db) as conn:
        attempts = conn.execute("SELECT attempts + 1 FROM messages WHERE id = ?",
                                (mid,)).fetchone()[0]
        if status == "retry":
            status = "failed" if attempts >= max_attempts else "pending"
        conn.execute("UPDATE messages SET status = ?, attempts = ?, last_error = ?, "
                     "next_attempt_at = ?, sent_at = ? WHERE id = ?",
                     (status, attempts, error, ts + retry_s * attempts,
                      ts if status == "sent" else None, mid))
    return {"pending": "retried"}.get(status, status)
