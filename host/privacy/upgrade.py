# Runs on CPython (host): sealing the plain-text member rows of an older database, and data key rotation in batches.
"""Bulk work on sealed member data, in short transactions so the daemon keeps deciding taps.

- ``seal_plain_rows``: rows an older tapkiosk left in plain text (``personal`` NULL but a
  name, phone or birthday) are sealed; the gate greetings of their past taps get the masked
  name; the idempotency records of old member writes lose the personal values they kept;
  then the WAL is checkpointed and the file vacuumed, so no old page keeps the clear text
  (``secure_delete`` is on for every connection). Contact e-mails an older version kept in
  clear in ``member_contacts`` (and in the outbox and the ops records) move into the sealed
  record the same way, leaving their masks.
- ``rotate``: a new key version is added to the key file, every row is re-sealed under it in
  batches (each ciphertext names its version, so rows of both versions open meanwhile and
  phone look-ups try both), then the old versions are retired and dropped from the file.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import sqlite_utils

from host.errors import InputError
from host.privacy import keyfile
from host.privacy.mask import mask_email, mask_name, mask_phone, normalise_phone
from host.privacy.record import personal_fields, sealed_columns
from host.privacy.vault import Vault, db_file, register, set_ephemeral, vault_for
from host.rules.context import NAME_CHARS
from host.store import member_taps
from host.store.db import transaction

#: Rows re-sealed per transaction.
BATCH = 200

_PERSONAL_ARGS = ("name", "phone", "birthday")

#: Members whose personal fields an older version left in plain text.
_PLAIN_SQL = ("personal IS NULL AND erased_at IS NULL AND (name <> '' OR phone IS NOT NULL "
              "OR birthday IS NOT NULL)")


def _update(conn: Any, member_id: int, cols: dict[str, Any]) -> None:
    conn.execute(f"UPDATE members SET {', '.join(f'{c} = ?' for c in cols)} WHERE id = ?",
                 (*cols.values(), member_id))


def _legacy_phone(phone: str | None) -> str | None:
    if not phone:
        return None
    try:
        return normalise_phone(phone)
    except InputError:
        return phone  # not a mainland mobile: sealed as it was, not indexed twice


def _scrubbed(a: dict[str, Any]) -> bool:
    """Drop the personal values an ops record kept in clear; True when there were some."""
    changed = False
    if isinstance(a.get("email"), str) and "@" in a["email"]:
        a["email"] = "sealed by upgrade"
        changed = True
    if any(a.get(k) is not None for k in _PERSONAL_ARGS):
        for k in _PERSONAL_ARGS:
            a.pop(k, None)
        a["personal"] = "sealed by upgrade"
        changed = True
    return changed


def _scrub_ops(conn: Any) -> int:
    n = 0
    for key, args in conn.execute("SELECT key, args FROM ops WHERE command IN "
                                  "('member.add', 'member.edit', 'messages.contact')"
                                  ).fetchall():
        a = json.loads(args)
        if _scrubbed(a):
            conn.execute("UPDATE ops SET args = ? WHERE key = ?",
                         (json.dumps(a, sort_keys=True, separators=(",", ":")), key))
            n += 1
    return n


#: The greetings a gate tap shows (host/rules/gate.py), with the name the engine clipped.
_GREETINGS = ("Welcome ", "Goodbye ")
_TAP_TABLES = ("taps", "tap_voids")
#: The rows of one member whose text holds a greeting, by table. A member's taps are found
#: through ``member_taps`` (migration 24 indexes by member only the taps without a charge or
#: a pass): ``member_id = ?`` alone would scan every tap once per member. Arguments: the
#: member's ``member_taps.params``, then the member id and the greeting.
_GREETING_ROWS = {
    "taps": f"id IN {member_taps.tap_ids()} AND member_id = ? AND instr(text, ?) > 0",
    "tap_voids": "member_id = ? AND instr(text, ?) > 0",
}


def _scrub_greetings(conn: Any, member_id: int, name: str) -> int:
    """Replace a plain name in the gate greetings of the member's past taps with its mask.
    Their stored reply bytes carried the same text: they are dropped (a replay of a tap that
    old answers with no reply bytes). The tables are append-only; their guard triggers are
    lifted for this one transaction only."""
    clipped = name[:NAME_CHARS]
    n = 0
    for table in _TAP_TABLES:
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?",
                           (f"{table}_no_update",)).fetchone()
        conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
        for greet in _GREETINGS:
            ids = member_taps.params(member_id) if table == "taps" else ()
            n += conn.execute(
                f"UPDATE {table} SET text = replace(text, ?, ?), reply = x'' WHERE "
                f"{_GREETING_ROWS[table]}",
                (greet + clipped, greet + mask_name(name), *ids, member_id,
                 greet + clipped)).rowcount
        if sql is not None:
            conn.execute(sql[0])
    return n


#: Contact rows an older version left with the e-mail in clear (a mask has no '.').
_PLAIN_CONTACTS = ("SELECT c.member_id, c.email, m.personal, m.name, m.phone, m.birthday FROM "
                   "member_contacts c JOIN members m ON m.id = c.member_id WHERE c.email LIKE "
                   "'%@%.%'")


def _seal_plain_contacts(db: sqlite_utils.Database) -> int:
    """Move clear contact e-mails into the sealed records; masks in the contacts and the
    outbox."""
    if db.execute(_PLAIN_CONTACTS + " LIMIT 1").fetchone() is None:
        return 0
    vault = vault_for(db)
    with transaction(db) as conn:
        register(conn, vault, int(time.time()))
        rows = conn.execute(_PLAIN_CONTACTS).fetchall()
        for mid, email, blob, name, phone, bday in rows:
            row = {"personal": blob, "name": name, "phone": phone, "birthday": bday}
            _update(conn, mid, sealed_columns(vault, mid, {**personal_fields(vault, mid, row),
                                                           "email": email}))
            conn.execute("UPDATE member_contacts SET email = ? WHERE member_id = ?",
                         (mask_email(email), mid))
            conn.execute("UPDATE messages SET recipient = CASE channel WHEN 'email' THEN ? "
                         "ELSE ? END WHERE member_id = ?",
                         (mask_email(email), mask_phone(phone) or "", mid))
    return len(rows)


def seal_plain_rows(db: sqlite_utils.Database) -> dict[str, int]:
    """Seal every plain-text member row; returns how many rows and ops records changed. A
    phone several members shared (allowed before) stays sealed with them but indexed only
    for the first: the others are found by id or card until an operator edits them. The data
    key is needed only when there is something to seal."""
    sealed = shared = greetings = 0
    plain = db.execute(f"SELECT 1 FROM members WHERE {_PLAIN_SQL} LIMIT 1").fetchone()
    vault = vault_for(db) if plain else None
    while vault is not None:
        with transaction(db) as conn:
            register(conn, vault, int(time.time()))
            rows = conn.execute(f"SELECT id, name, phone, birthday FROM members WHERE "
                                f"{_PLAIN_SQL} LIMIT ?", (BATCH,)).fetchall()
            for mid, name, phone, bday in rows:
                fields = {"name": name, "phone": _legacy_phone(phone), "birthday": bday}
                cols = sealed_columns(vault, mid, fields)
                if cols["phone_index"] is not None and conn.execute(
                        "SELECT 1 FROM members WHERE phone_index = ?",
                        (cols["phone_index"],)).fetchone():
                    cols["phone_index"] = None  # a phone two members shared: found by neither
                    shared += 1
                _update(conn, mid, cols)
                if name:
                    greetings += _scrub_greetings(conn, mid, name)
            sealed += len(rows)
        if len(rows) < BATCH:
            break
    contacts = _seal_plain_contacts(db)
    with transaction(db) as conn:
        scrubbed = _scrub_ops(conn)
    if sealed or scrubbed or contacts:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if db_file(db):
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {"members_sealed": sealed, "phones_shared_unindexed": shared,
            "tap_greetings_masked": greetings, "ops_scrubbed": scrubbed,
            "contact_emails_sealed": contacts}


def _new_version(db: sqlite_utils.Database, vault: Vault) -> int:
    used = db.execute("SELECT coalesce(max(version), 0) FROM data_keys").fetchone()[0]
    v = max(used, *vault.keys) + 1
    if v > 255:
        raise InputError("data key versions exhausted (255)")
    return v


def reseal_batch(db: sqlite_utils.Database, vault: Vault) -> int:
    """Re-seal up to ``BATCH`` members under the current version, in one transaction."""
    with transaction(db) as conn:
        rows = conn.execute("SELECT id, personal, name, phone, birthday FROM members "
                            "WHERE personal_version IS NOT NULL AND personal_version <> ? "
                            "ORDER BY id LIMIT ?", (vault.current, BATCH)).fetchall()
        for mid, blob, name, phone, bday in rows:
            row = {"personal": blob, "name": name, "phone": phone, "birthday": bday}
            _update(conn, mid, sealed_columns(vault, mid, personal_fields(vault, mid, row)))
    return len(rows)


def reseal_all(db: sqlite_utils.Database, vault: Vault) -> int:
    """Re-seal every member not on the current version, batch after batch."""
    done = 0
    while True:
        n = reseal_batch(db, vault)
        done += n
        if n < BATCH:
            return done


def rotate(db: sqlite_utils.Database) -> dict[str, Any]:
    """Add a key version, re-seal every member under it in batches, retire the old ones."""
    vault = vault_for(db)
    path = keyfile.key_path(db_file(db))
    keys = {**vault.keys, _new_version(db, vault): secrets.token_bytes(32)}
    if path is None:
        set_ephemeral(db.conn, keys)
    else:
        keyfile.write_keys(path, keys)
    vault = vault_for(db)
    with transaction(db) as conn:
        register(conn, vault, int(time.time()))
    resealed = reseal_all(db, vault)
    old = sorted(v for v in vault.keys if v != vault.current)
    with transaction(db) as conn:
        conn.executemany("UPDATE data_keys SET retired_at = ? WHERE version = ? AND "
                         "retired_at IS NULL", [(int(time.time()), v) for v in old])
    current = {vault.current: vault.keys[vault.current]}
    if path is None:
        set_ephemeral(db.conn, current)
    else:
        keyfile.write_keys(path, current)
    return {"key_version": vault.current, "members_resealed": resealed,
            "retired_versions": " ".join(map(str, old))}


def status(db: sqlite_utils.Database) -> dict[str, Any]:
    """The key file, its versions, and how many members each version seals."""
    vault = vault_for(db)
    counts = dict(db.execute("SELECT personal_version, count(*) FROM members WHERE "
                             "personal_version IS NOT NULL GROUP BY 1").fetchall())
    plain = db.execute(f"SELECT count(*) FROM members WHERE {_PLAIN_SQL}").fetchone()[0]
    return {"key_file": vault.source, "current_version": vault.current,
            "versions": " ".join(str(v) for v in sorted(vault.keys)),
            "members_by_version": {str(v): n for v, n in sorted(counts.items())},
            "members_in_plain_text": plain}
