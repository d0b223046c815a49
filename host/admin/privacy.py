# Runs on CPython (host): member rights and retention — reveal (logged), data export, erasure, dormant-member erasure.
"""Privacy writes (issue #15, docs/operators.md "Privacy").

- ``reveal``: a member's personal fields in clear, each reveal written to the audit log
  (``host.store.audit``: action ``member.reveal``, who, when, what was shown; never the
  values).
- ``export_member``: everything stored about a member, personal fields opened (a reveal),
  with their contact settings (opt-out) and messages.
- ``erase_member``: personal fields destroyed (sealed data, blind index, masks, birth month,
  the contact e-mail and its mask), messages not sent yet dropped (``skipped``) and every
  outbox recipient mask blanked, cards blocked; ledger, payments and taps stay under the
  member id, so ``verify`` and the reports' totals are unchanged.
- ``retention``: members idle longer than the policy's ``[privacy] retention_days`` erased;
  members still holding principal (money of theirs a store must be able to refund) are
  listed as kept.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from host.admin.core import AdminCore, check_int
from host.errors import InputError
from host.privacy.record import ERASED, personal_fields
from host.privacy.vault import vault_for
from host.store import audit, views
from host.store.db import transaction


def _messages_data(db: Any, member_id: int) -> dict[str, Any]:
    """The member's contact settings and messages (the e-mail itself is in the profile)."""
    row = db.execute("SELECT opt_out, updated_at FROM member_contacts WHERE member_id = ?",
                     (member_id,)).fetchone()
    msgs = db.execute("SELECT id, kind, channel, subject, body, status, created_at, sent_at "
                      "FROM messages WHERE member_id = ? ORDER BY id", (member_id,)).fetchall()
    cols = ("id", "kind", "channel", "subject", "body", "status", "created_at", "sent_at")
    return {"contact": {"opt_out": bool(row[0]), "updated_at": row[1]} if row else None,
            "messages": [dict(zip(cols, r)) for r in msgs]}


class PrivacyWrites(AdminCore):
    """Reveal, export, erase, retention."""

    def _actor(self, actor: str | None) -> str:
        who = actor or self.actor
        if not isinstance(who, str) or not who:
            raise InputError("a reveal needs an actor (who asked)")
        return who

    def _log_reveals(self, member_ids: list[int], actor: str, what: str) -> None:
        ts = int(self.clock().timestamp())
        with transaction(self.db) as conn:
            for mid in member_ids:
                audit.record(conn, ts, actor, "member.reveal", member_id=mid,
                             after={"shown": what}, client=self.client)

    def reveal(self, member_id: int, actor: str | None = None, what: str = "profile"
               ) -> dict[str, Any]:
        """Member ``member_id``'s personal fields in clear, the reveal written to the audit log
        under ``actor`` (default: the Admin's own actor)."""
        check_int(member_id, "member id")
        actor = self._actor(actor)
        row = views.member_data(self.db, member_id)["row"]
        vault = vault_for(self.db) if row.get("personal") is not None else None
        fields = personal_fields(vault, member_id, row)
        self._log_reveals([member_id], actor, what)
        return fields

    def reveal_all(self, actor: str | None = None) -> list[dict[str, Any]]:
        """Every member's personal fields in clear (``tapkiosk export --include-personal``),
        one reveal logged per member."""
        actor = self._actor(actor)
        sealed = views.sealed_members(self.db)
        vault = vault_for(self.db) if sealed else None
        out = [{"member_id": mid, **personal_fields(vault, mid, {"personal": blob})}
               for mid, blob in sealed]
        self._log_reveals([r["member_id"] for r in out], actor, "site export")
        return out

    def export_member(self, member_id: int, actor: str | None = None) -> dict[str, Any]:
        """All of a member's data (profile opened, consent, balances, cards, passes, lots,
        ledger, payments, taps), logged as a reveal."""
        check_int(member_id, "member id")
        data = views.member_data(self.db, member_id)
        row = data.pop("row")
        profile = self.reveal(member_id, actor, "export")
        account = {k: row[k] for k in ("id", "tier", "status", "created_at", "last_active_at",
                                       "consent_terms", "consent_at", "erased_at",
                                       "principal_fen", "bonus_fen", "points")}
        return {"member_id": member_id, "profile": profile, "account": account,
                **data, **_messages_data(self.db, member_id)}

    def erase_member(self, member_id: int, *, reason: str = "request",
                     key: str | None = None) -> dict[str, Any]:
        """Destroy member ``member_id``'s personal fields and block their cards; the books
        stay under the member id."""
        check_int(member_id, "member id")
        if reason not in ("request", "retention"):
            raise InputError(f"bad erase reason {reason!r}: request or retention")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            return self._erase(conn, member_id, ts)
        return self.write("member.erase", dict(member_id=member_id, reason=reason), key, fn)

    def _erase(self, conn: sqlite3.Connection, member_id: int, ts: int) -> dict[str, Any]:
        self.member(conn, member_id)
        cols = {**ERASED, "status": "suspended", "erased_at": ts}
        conn.execute(f"UPDATE members SET {', '.join(f'{c} = ?' for c in cols)} WHERE id = ? "
                     "AND erased_at IS NULL", (*cols.values(), member_id))
        conn.execute("UPDATE member_contacts SET email = NULL, updated_at = ? WHERE "
                     "member_id = ?", (ts, member_id))
        conn.execute("UPDATE messages SET status = CASE WHEN status IN ('pending', 'sending') "
                     "THEN 'skipped' ELSE status END, recipient = '' WHERE member_id = ?",
                     (member_id,))
        blocked = conn.execute("UPDATE cards SET status = 'blocked', updated_at = ? WHERE "
                               "member_id = ? AND status = 'active'", (ts, member_id)).rowcount
        erased_at = conn.execute("SELECT erased_at FROM members WHERE id = ?",
                                 (member_id,)).fetchone()[0]
        return {"member_id": member_id, "erased_at": erased_at, "cards_blocked": blocked}

    def retention(self, *, dry_run: bool = False, key: str | None = None) -> dict[str, Any]:
        """Erase members idle for more than the policy's ``retention_days`` (``dry_run``:
        only list them). Members holding principal are kept and listed."""
        days = self.policy.retention_days
        now = self.clock()
        cutoff = int(now.timestamp()) - days * 86400
        due = views.retention_candidates(self.db, cutoff)
        erase = [r for r in due if r["principal_fen"] == 0]
        kept = [r for r in due if r["principal_fen"] > 0]
        erased = []
        if not dry_run:
            for r in erase:
                k = f"{key}-{r['member_id']}" if key else None
                erased.append(self.erase_member(r["member_id"], reason="retention", key=k))
        return {"retention_days": days, "dry_run": dry_run, "due": erase,
                "kept_holding_principal": kept,
                "erased": [e["member_id"] for e in erased]}
