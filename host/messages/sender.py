# Runs on CPython (host): drain the message outbox — claim due messages, deliver, retry or give up.
"""``send_due``: every message whose time has come is claimed (``sending``) in a short
transaction, delivered outside any transaction, then marked ``sent``, or retried after
``retry_minutes * attempts`` until ``max_attempts`` (then ``failed``). A member who opted out
since the message was queued gets nothing (``skipped``). A message left ``sending`` by a
crash is taken again after the retry delay, so a crash can at worst send one twice.

The outbox keeps only masked recipients: each message is completed here, in memory, from the
member's sealed record (the real phone or e-mail, the name for a ``{name}`` greeting) opened
through the vault; a member erased since (or whose address was cleared) gets nothing
(``skipped``). The clear values are never written back."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

import sqlite_utils

from host.messages.channels import Channel, ChannelError, Message
from host.messages.outbox import NAME
from host.privacy.record import personal_fields
from host.privacy.vault import Vault, vault_for
from host.rules.policy import Policy
from host.store.db import transaction

#: Which personal field a channel delivers to.
_ADDRESS = {"email": "email", "sms": "phone"}


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


def _complete(db: sqlite_utils.Database, vault: Vault, msg: Message, channel: str
              ) -> Message | None:
    """``msg`` with the member's real address and name, or None when there is none now."""
    row = db.execute("SELECT personal, name, phone, birthday, erased_at FROM members WHERE "
                     "id = ?", (msg.member_id,)).fetchone()
    if row is None or row[4] is not None:
        return None
    fields = personal_fields(vault, msg.member_id, dict(zip(
        ("personal", "name", "phone", "birthday"), row)))
    to = fields.get(_ADDRESS.get(channel, ""))
    if not to:
        return None
    return msg._replace(recipient=to, body=msg.body.replace(NAME, fields["name"] or "member"))


def _opted_out(conn: sqlite3.Connection, member_id: int) -> bool:
    row = conn.execute("SELECT opt_out FROM member_contacts WHERE member_id = ?",
                       (member_id,)).fetchone()
    return bool(row and row[0])


def send_due(db: sqlite_utils.Database, policy: Policy, channels: Mapping[str, Channel],
             clock: Callable[[], int], limit: int = 500) -> dict[str, Any]:
    """Deliver the due messages; counts of sent, retried, failed and skipped."""
    m = policy.messages
    counts = {"sent": 0, "retried": 0, "failed": 0, "skipped": 0}
    claimed = _claim(db, clock(), m.retry_minutes * 60, limit)
    vault = vault_for(db) if claimed else None
    for msg in claimed:
        channel = db.execute("SELECT channel FROM messages WHERE id = ?", (msg.id,)).fetchone()[0]
        status, error = "sent", None
        full = _complete(db, vault, msg, channel) if vault is not None else None
        if full is None or _opted_out(db.conn, msg.member_id):
            status = "skipped"
        elif channel not in channels:
            status, error = "retry", f"no {channel} channel configured"
        else:
            try:
                channels[channel].send(full)
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
