# Runs on CPython (host): operator writes on members — enrol, edit, tier overrides; personal fields sealed.
"""Member writes: ``add_member`` and ``edit_member`` (fields, status, manual tier).

Personal fields (name, phone, birthday, note) are sealed under the site data key before they
reach the store (``host.privacy``); the row keeps their masks, the phone's blind index (one
member per phone) and the birth month. Personal data needs the member's consent: the terms
version they accepted (``consent_terms``) is recorded with the time.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime
from typing import Any

from host.admin.coupons import issue_for_event
from host.admin.core import AdminCore, check_int, check_name, parse_birthday
from host.errors import Conflict, InputError
from host.ledger import rewards
from host.privacy.mask import mask_phone, normalise_phone
from host.privacy.record import personal_fields, sealed_columns
from host.privacy.vault import Vault, register, vault_for

_TIER_LOG = ("INSERT INTO tier_changes (ts, member_id, old_tier, new_tier, manual, reason, "
             "op_key) VALUES (?,?,?,?,?,?,?)")
_TERMS_RE = re.compile(r"[A-Za-z0-9._-]{1,32}", re.ASCII)


def check_terms(terms: str | None) -> str | None:
    """A terms version: 1-32 letters, digits, dot, dash or underscore."""
    if terms is not None and (not isinstance(terms, str) or not _TERMS_RE.fullmatch(terms)):
        raise InputError(f"bad terms version {terms!r}: 1-32 letters, digits, '.', '-', '_'")
    return terms


def check_personal(name: str | None, phone: str | None, birthday: str | None,
                   note: str | None) -> dict[str, Any]:
    """The given personal fields checked and normalised (absent ones left out)."""
    fields: dict[str, Any] = {}
    if name is not None:
        fields["name"] = check_name(name)
    if phone is not None:
        fields["phone"] = normalise_phone(phone) if phone else ""
    if birthday is not None:
        fields["birthday"] = parse_birthday(birthday) if birthday else ""
    if note is not None:
        if not isinstance(note, str) or len(note) > 200:
            raise InputError("note must be at most 200 characters")
        fields["note"] = note
    return fields


def store_personal(conn: sqlite3.Connection, vault: Vault, member_id: int,
                   fields: dict[str, Any], ts: int) -> None:
    """Seal ``fields`` into member ``member_id``'s row; Conflict when the phone belongs to
    another member."""
    phone = fields.get("phone")
    if phone:
        marks = ",".join("?" * len(vault.keys))
        other = conn.execute(f"SELECT id FROM members WHERE phone_index IN ({marks}) "
                             "AND id <> ?", (*vault.phone_indexes(phone), member_id)).fetchone()
        if other is not None:
            raise Conflict(f"phone {mask_phone(phone)} already belongs to member {other[0]}")
    register(conn, vault, ts)
    cols = sealed_columns(vault, member_id, fields)
    conn.execute(f"UPDATE members SET {', '.join(f'{c} = ?' for c in cols)} WHERE id = ?",
                 (*cols.values(), member_id))


class MemberWrites(AdminCore):
    """Enrol and edit members."""

    def _check_tier(self, tier: str | None, allow_auto: bool = False) -> None:
        if tier is None or tier in self.policy.tiers or (allow_auto and tier == "auto"):
            return
        names = ", ".join((["auto"] if allow_auto else []) + list(self.policy.tiers))
        raise InputError(f"unknown tier {tier!r} (tiers: {names})")

    def add_member(self, name: str = "", *, phone: str | None = None,
                   birthday: str | None = None, note: str | None = None,
                   consent_terms: str | None = None, tier: str | None = None,
                   referrer_id: int | None = None, key: str | None = None) -> dict[str, Any]:
        """Create a member (tier default from policy; an explicit tier is a logged manual
        override). Personal fields need ``consent_terms``. Returns ``{"member_id": ...,
        "tier": ...}``."""
        fields = {k: v for k, v in check_personal(name, phone, birthday, note).items() if v}
        check_terms(consent_terms)
        if fields and consent_terms is None:
            raise InputError("personal data needs the member's consent: give the terms "
                             "version they accepted (--consent-terms)")
        self._check_tier(tier)
        if referrer_id is not None:
            check_int(referrer_id, "referrer member id")
        vault = vault_for(self.db) if fields else None
        args = dict(personal=vault.digest(fields) if vault else None, tier=tier,
                    referrer_id=referrer_id, consent_terms=consent_terms)

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            if referrer_id is not None:
                self.member(conn, referrer_id)
            t = tier or self.policy.default_tier
            manual = 1 if tier else 0
            cur = conn.execute(
                "INSERT INTO members (tier, tier_manual, referrer_id, created_at, "
                "consent_terms, consent_at) VALUES (?,?,?,?,?,?)",
                (t, manual, referrer_id, ts, consent_terms, ts if consent_terms else None))
            mid = cur.lastrowid
            if vault is not None:
                store_personal(conn, vault, mid, fields, ts)
            conn.execute(_TIER_LOG, (ts, mid, None, t, manual, "enrolled", key))
            issue_for_event(conn, self.policy, mid, "signup", ts, "signup", key)
            return {"member_id": mid, "tier": t}
        return self.write("member.add", args, key, fn)

    def _edit_personal(self, conn: sqlite3.Connection, vault: Vault, member_id: int,
                       changes: dict[str, Any], terms: str | None, ts: int) -> None:
        row = dict(zip(("personal", "name", "phone", "birthday", "consent_terms", "erased_at"),
                       conn.execute("SELECT personal, name, phone, birthday, consent_terms, "
                                    "erased_at FROM members WHERE id = ?",
                                    (member_id,)).fetchone()))
        if row["erased_at"] is not None:
            raise Conflict(f"member {member_id} was erased: enrol them again")
        if terms is None and row["consent_terms"] is None:
            raise InputError(f"member {member_id} has no consent on record: give the terms "
                             "version they accepted (--consent-terms)")
        if terms is not None:
            conn.execute("UPDATE members SET consent_terms = ?, consent_at = ? WHERE id = ?",
                         (terms, ts, member_id))
        store_personal(conn, vault, member_id,
                       {**personal_fields(vault, member_id, row), **changes}, ts)

    def edit_member(self, member_id: int, *, name: str | None = None,
                    phone: str | None = None, birthday: str | None = None,
                    note: str | None = None, consent_terms: str | None = None,
                    tier: str | None = None, status: str | None = None,
                    key: str | None = None) -> dict[str, Any]:
        """Change member fields (an empty string clears a personal field). ``tier`` = a tier
        name (manual override, logged) or ``"auto"`` (back to automatic upgrades)."""
        check_int(member_id, "member id")
        changes = check_personal(name, phone, birthday, note)
        check_terms(consent_terms)
        self._check_tier(tier, allow_auto=True)
        if status is not None and status not in ("active", "suspended"):
            raise InputError(f"bad status {status!r}: use active or suspended")
        if not changes and all(v is None for v in (tier, status, consent_terms)):
            raise InputError("nothing to change: give --name, --phone, --birthday, --note, "
                             "--consent-terms, --tier or --status")
        vault = vault_for(self.db) if changes or consent_terms else None
        args = dict(member_id=member_id, personal=vault.digest(changes) if vault else None,
                    consent_terms=consent_terms, tier=tier, status=status)

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            row = self.member(conn, member_id)
            if vault is not None:
                self._edit_personal(conn, vault, member_id, changes, consent_terms, ts)
            if status is not None:
                conn.execute("UPDATE members SET status = ? WHERE id = ?", (status, member_id))
            if tier == "auto":
                conn.execute("UPDATE members SET tier_manual = 0 WHERE id = ?", (member_id,))
                conn.execute(_TIER_LOG, (ts, member_id, row.tier, row.tier, 1,
                                         "manual override cleared", key))
                rewards.maybe_upgrade(conn, self.policy, member_id, ts)
            elif tier is not None:
                conn.execute("UPDATE members SET tier = ?, tier_manual = 1 WHERE id = ?",
                             (tier, member_id))
                conn.execute(_TIER_LOG, (ts, member_id, row.tier, tier, 1, "manual override",
                                         key))
            return {"member_id": member_id, "tier": self.member(conn, member_id).tier}
        return self.write("member.edit", args, key, fn)
