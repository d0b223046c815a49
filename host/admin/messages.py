# Runs on CPython (host): operator writes for member messages — contact and opt-out, the daily queue.
"""How a member is reached and the daily queueing of messages (``host.messages.outbox.queue_due``).

The e-mail is personal data: it is sealed with the member's other personal fields
(``host.privacy.record``; it needs their consent on record), so erasure, retention, export and
key rotation treat it like them; ``member_contacts`` keeps only its mask (``l*@e*``: the
outbox's "can be mailed") and the opt-out. The phone is the member's own field.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime
from typing import Any

from host.admin.core import AdminCore, check_int
from host.admin.members import store_personal
from host.errors import Conflict, InputError
from host.messages import outbox
from host.privacy.mask import mask_email
from host.privacy.record import personal_fields
from host.privacy.vault import Vault, vault_for

_EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]{1,190}\.[A-Za-z]{2,63}")


def _store_email(conn: sqlite3.Connection, vault: Vault, member_id: int, email: str,
                 ts: int) -> None:
    """Seal ``email`` ("" clears it) into the member's personal record; its mask into
    ``member_contacts``. Conflict for an erased member, InputError without consent."""
    row = dict(zip(("personal", "name", "phone", "birthday", "consent_terms", "erased_at"),
                   conn.execute("SELECT personal, name, phone, birthday, consent_terms, "
                                "erased_at FROM members WHERE id = ?", (member_id,)).fetchone()))
    if row["erased_at"] is not None:
        raise Conflict(f"member {member_id} was erased: enrol them again")
    if email and row["consent_terms"] is None:
        raise InputError(f"member {member_id} has no consent on record: an e-mail is personal "
                         "data (member edit --consent-terms first)")
    store_personal(conn, vault, member_id,
                   {**personal_fields(vault, member_id, row), "email": email}, ts)
    conn.execute("UPDATE member_contacts SET email = ?, updated_at = ? WHERE member_id = ?",
                 (mask_email(email) or None, ts, member_id))


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

        vault = vault_for(self.db) if email is not None else None

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            self.member(conn, member_id)
            conn.execute("INSERT INTO member_contacts (member_id, updated_at) VALUES (?, ?) "
                         "ON CONFLICT (member_id) DO NOTHING", (member_id, ts))
            if vault is not None:
                _store_email(conn, vault, member_id, email or "", ts)
            if opt_out is not None:
                conn.execute("UPDATE member_contacts SET opt_out = ?, updated_at = ? WHERE "
                             "member_id = ?", (int(opt_out), ts, member_id))
            row = conn.execute("SELECT email, opt_out FROM member_contacts WHERE member_id = ?",
                               (member_id,)).fetchone()
            return {"member_id": member_id, "email": row[0] or "", "opt_out": bool(row[1])}
        digest = vault.digest({"email": email}) if vault is not None else None
        return self.write("messages.contact", dict(member_id=member_id, email=digest,
                                                   opt_out=opt_out), key, fn)

    def queue_messages(self, *, key: str | None = None) -> dict[str, Any]:
        """Queue today's birthday greetings, win-back coupons and expiry notices."""
        sealed = self.db.execute("SELECT 1 FROM members WHERE personal IS NOT NULL "
                                 "LIMIT 1").fetchone()
        vault = vault_for(self.db) if sealed and self.policy.messages.channels else None

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            return {"queued": outbox.queue_due(conn, self.policy, ts, now, vault)}
        return self.write("messages.queue", {}, key, fn)
