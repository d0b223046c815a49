# Runs on CPython (host): the message outbox — queue a member message once, and the daily messages due.
"""Queueing member messages in ``messages`` (one row per message, once per (member, dedup)).

A message is queued only when the policy has a channel the member can be reached on
(``email``: an e-mail address in ``member_contacts``; ``sms``: a phone number), the kind is
in ``messages.kinds`` and the member has not opted out; otherwise nothing is written.
``queue_due`` (daily) queues birthday greetings (on the day), win-back coupons (each one
issued) and notices of points expiring within ``messages.expiry_notice_days``.

Privacy: the outbox holds no personal data in clear. ``recipient`` is the mask (``138****8000``,
``l*@e*``); the sender opens the member's sealed record for the real address when it sends
(host/messages/sender.py). A body that greets the member by name holds the placeholder
``{name}``, which only the sender fills in. The birthday day is sealed: ``queue_due`` opens
the records of the members born this month (``birth_month``) through the vault to find
today's birthdays; this is a daily batch job, never a tap.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from host.money import format_fen
from host.privacy.record import personal_fields
from host.privacy.vault import Vault
from host.rules.policy import Policy

#: Placeholder in a body for the member's name, filled in by the sender only.
NAME = "{name}"


def _recipient(conn: sqlite3.Connection, policy: Policy, member_id: int
               ) -> tuple[str, str] | None:
    """(channel, recipient) of the first policy channel that reaches the member, or None
    (also when they opted out)."""
    row = conn.execute("SELECT m.phone, c.email, coalesce(c.opt_out, 0) FROM members m LEFT JOIN "
                       "member_contacts c ON c.member_id = m.id WHERE m.id = ?",
                       (member_id,)).fetchone()
    if row is None or row[2]:
        return None
    phone, email = row[0], row[1]
    for ch in policy.messages.channels:
        if ch == "email" and email:
            return ch, email
        if ch == "sms" and phone:
            return ch, phone
    return None


def enqueue(conn: sqlite3.Connection, policy: Policy, member_id: int, kind: str,
            subject: str, body: str, dedup: str, ts: int) -> int | None:
    """Queue one message (see the module doc); the new row id or None."""
    if kind not in policy.messages.kinds:
        return None
    to = _recipient(conn, policy, member_id)
    if to is None:
        return None
    cur = conn.execute(
        "INSERT INTO messages (member_id, kind, channel, recipient, subject, body, dedup, "
        "next_attempt_at, created_at) VALUES (?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT (member_id, dedup) DO NOTHING",
        (member_id, kind, to[0], to[1], subject, body, dedup, ts, ts))
    return cur.lastrowid if cur.rowcount == 1 else None


def receipt(conn: sqlite3.Connection, policy: Policy, member_id: int, what: str,
            amount_fen: int, ts: int, ref: str) -> int | None:
    """Queue a receipt for ``what`` (e.g. "Top-up") of ``amount_fen``, with the balance."""
    if not policy.messages.channels:
        return None
    bal, pts = conn.execute("SELECT principal_fen + bonus_fen, points FROM members WHERE id = ?",
                            (member_id,)).fetchone()
    body = (f"{what}: {format_fen(amount_fen)}. Balance {format_fen(bal)}, "
            f"{pts} points.")
    return enqueue(conn, policy, member_id, "receipt", f"Receipt: {what}", body,
                   f"receipt:{ref}", ts)


def birthdays_on(conn: sqlite3.Connection, vault: Vault | None, month: int, day: int
                 ) -> list[int]:
    """Active members born on ``month``-``day``: only those of the month (``birth_month`` in
    clear) are opened, for the sealed day."""
    mmdd = f"{month:02d}-{day:02d}"
    out = []
    for mid, blob, bday in conn.execute(
            "SELECT id, personal, birthday FROM members WHERE status = 'active' AND "
            "(birth_month = ? OR birthday IS NOT NULL) ORDER BY id", (month,)).fetchall():
        fields = personal_fields(vault, mid, {"personal": blob, "birthday": bday})
        if fields["birthday"] == mmdd:
            out.append(mid)
    return out


def queue_due(conn: sqlite3.Connection, policy: Policy, ts: int, now: datetime,
              vault: Vault | None) -> int:
    """Queue today's birthday greetings, win-back coupon messages and points-expiry notices;
    returns how many were queued. ``vault`` opens the birthdays (None: no sealed member)."""
    if not policy.messages.channels:
        return 0
    n = 0
    for mid in birthdays_on(conn, vault, now.month, now.day):
        n += enqueue(conn, policy, mid, "birthday", "Happy birthday!",
                     f"Happy birthday, {NAME}, from all of us! Your birthday-month points "
                     "count double.", f"birthday:{now.year}", ts) is not None
    for cid, mid, until in conn.execute(
            "SELECT id, member_id, valid_until FROM coupons WHERE source = 'winback' AND "
            "valid_until > ?", (ts,)).fetchall():
        day = datetime.fromtimestamp(until, policy.tz).date().isoformat()
        n += enqueue(conn, policy, mid, "winback", "We miss you",
                     f"We miss you! A coupon is waiting on your card until {day}.",
                     f"coupon:{cid}", ts) is not None
    horizon = ts + policy.messages.expiry_notice_days * 86400
    for mid, expires, pts in conn.execute(
            "SELECT member_id, expires_at, sum(remaining) FROM lots WHERE currency = 'points' "
            "AND remaining > 0 AND expires_at > ? AND expires_at <= ? GROUP BY member_id, "
            "expires_at", (ts, horizon)).fetchall():
        day = datetime.fromtimestamp(expires - 1, policy.tz).date().isoformat()
        n += enqueue(conn, policy, mid, "points_expiry", "Points about to expire",
                     f"{pts} of your points expire after {day}: use them before.",
                     f"expiry:{expires}", ts) is not None
    return n
