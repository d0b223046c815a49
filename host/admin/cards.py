# Runs on CPython (host): operator writes on cards — enrol, block/unblock, lost-card replacement.
"""Card writes. Value lives on the member account, not the card."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any, NamedTuple

from host.admin.coupons import issue_for_event
from host.admin.core import AdminCore, check_int
from host.store.uid import canonical_uid
from host.errors import Conflict, InputError, NotFound


class CardRow(NamedTuple):
    """The card fields the writes look at."""

    member_id: int
    status: str
    replaced_by: str | None


def _card(conn: sqlite3.Connection, uid: str) -> CardRow | None:
    row = conn.execute("SELECT member_id, status, replaced_by FROM cards WHERE uid = ?",
                       (uid,)).fetchone()
    return None if row is None else CardRow(*row)


class CardWrites(AdminCore):
    """Enrol, block, unblock and replace cards."""

    def enroll_card(self, member_id: int, uid: str, *, expires_at: int = 0,
                    key: str | None = None) -> dict[str, Any]:
        """Give ``member_id`` a card. Enrolling the same UID to the same member again is a
        no-op; a UID that belongs to someone else raises Conflict."""
        check_int(member_id, "member id")
        check_int(expires_at, "card expiry", lo=0)
        uid = canonical_uid(uid)

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            self.member(conn, member_id)
            card = _card(conn, uid)
            if card is not None:
                if card.member_id == member_id and card.status == "active":
                    return {"uid": uid, "member_id": member_id, "status": "active"}
                raise Conflict(f"card {uid} is already enrolled (member {card.member_id}, "
                               f"{card.status})")
            conn.execute("INSERT INTO cards (uid, member_id, expires_at, created_at, updated_at) "
                         "VALUES (?,?,?,?,?)", (uid, member_id, expires_at, ts, ts))
            issue_for_event(conn, self.policy, member_id, "first_card", ts, "first_card", key)
            return {"uid": uid, "member_id": member_id, "status": "active"}
        return self.write("card.enroll", dict(member_id=member_id, uid=uid,
                                              expires_at=expires_at), key, fn)

    def set_card_status(self, uid: str, status: str, *, key: str | None = None
                        ) -> dict[str, Any]:
        """Block (``blocked``), unblock (``active``) or expire a card."""
        uid = canonical_uid(uid)
        if status not in ("active", "blocked", "expired"):
            raise InputError(f"bad card status {status!r}")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            card = _card(conn, uid)
            if card is None:
                raise NotFound(f"unknown card {uid}")
            if card.status == "lost":
                raise Conflict(f"card {uid} was reported lost and replaced; it stays lost")
            conn.execute("UPDATE cards SET status = ?, updated_at = ? WHERE uid = ?",
                         (status, ts, uid))
            return {"uid": uid, "member_id": card.member_id, "status": status}
        return self.write("card.status", dict(uid=uid, status=status), key, fn)

    def replace_card(self, old_uid: str, new_uid: str, *, key: str | None = None
                     ) -> dict[str, Any]:
        """Lost-card replacement: the old card becomes ``lost`` (refused at every reader),
        the new card is enrolled to the same member. Value lives on the member account, so
        balance, points, passes and presence move with it in the same transaction."""
        old, new = canonical_uid(old_uid), canonical_uid(new_uid)
        if old == new:
            raise InputError("old and new card UID are the same")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            card = _card(conn, old)
            if card is None:
                raise NotFound(f"unknown card {old}")
            if card.status == "lost":
                raise Conflict(f"card {old} was already replaced by {card.replaced_by}")
            if _card(conn, new) is not None:
                raise Conflict(f"card {new} is already enrolled")
            conn.execute("INSERT INTO cards (uid, member_id, created_at, updated_at) "
                         "VALUES (?,?,?,?)", (new, card.member_id, ts, ts))
            conn.execute("UPDATE cards SET status = 'lost', replaced_by = ?, updated_at = ? "
                         "WHERE uid = ?", (new, ts, old))
            return {"old_uid": old, "new_uid": new, **self.state(conn, card.member_id)}
        return self.write("card.replace", dict(old=old, new=new), key, fn)
