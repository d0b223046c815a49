# Runs on CPython (host): operator writes for member messages — contact and opt-out, the daily queue.
"""How a member is reached (``member_contacts``: e-mail, opt-out; the phone is the member's)
and the daily queueing of messages (``host.messages.outbox.queue_due``)."""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime
from typing import Any

from host.admin.core import AdminCore, check_int
from host.errors import InputError
from host.messages import outbox

_EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]{1,190}\.[A-Za-z]{2,63}")


class MessageWrites(AdminCore):
    """Member contacts and the message queue."""

    def set_contact(self, member_id: int, *, email: str | None = None,
                    opt_out: bool | None = None, key: str | None = None) -> dict[str, Any]:
        """Set a member's e-mail ("" clears it) and/or opt-out."""
        check_int(member_id, "member id")
        if email is None and opt_out is None:
            raise InputError("nothing to change: give --email, --opt-out or --opt-in")
        if email and not _EMAIL_RE.fullmatch(email):
            raise InputError(f"bad e-mail address {email!r}")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            self.member(conn, member_id)
            conn.execute("INSERT INTO member_contacts (member_id, updated_at) VALUES (?, ?) "
                         "ON CONFLICT (member_id) DO NOTHING", (member_id, ts))
            if email is not None:
                conn.execute("UPDATE member_contacts SET email = ?, updated_at = ? WHERE "
                             "member_id = ?", (email or None, ts, member_id))
            if opt_out is not None:
                conn.execute("UPDATE member_contacts SET opt_out = ?, updated_at = ? WHERE "
                             "member_id = ?", (int(opt_out), ts, member_id))
            row = conn.execute("SELECT email, opt_out FROM member_contacts WHERE member_id = ?",
                               (member_id,)).fetchone()
            return {"member_id": member_id, "email": row[0] or "", "opt_out": bool(row[1])}
        return self.write("messages.contact", dict(member_id=member_id, email=email,
                                                   opt_out=opt_out), key, fn)

    def queue_messages(self, *, key: str | None = None) -> dict[str, Any]:
        """Queue today's birthday greetings, win-back coupons and expiry notices."""
        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            return {"queued": outbox.queue_due(conn, self.policy, ts, now)}
        return self.write("messages.queue", {}, key, fn)
