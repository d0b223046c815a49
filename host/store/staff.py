# Runs on CPython (host): staff accounts of the web console — roles, scrypt password hashes.
"""Staff accounts (table ``staff``, migration 8).

A password is kept only as an scrypt hash (memory-hard, standard library):
``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>``. Every write records an audit row in its own
transaction (``host.store.audit``). What a role may do is decided in
``host.web.console.permissions``, not here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Any

import sqlite_utils

from host.errors import Conflict, InputError, NotFound
from host.store import audit, stores
from host.store.db import transaction

#: Staff roles, as ``tapkiosk staff add --role`` takes them.
ROLES = ("cashier", "manager", "technician")
#: Shortest password accepted.
MIN_PASSWORD = 8
#: scrypt cost: 2**14 * 8 * 128 bytes = 16 MiB of memory per hash.
_N, _R, _P = 2 ** 14, 8, 1
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def check_name(name: str) -> str:
    """``name`` if it is 1-32 of ``[A-Za-z0-9_.-]``; InputError otherwise."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InputError(f"bad staff name {name!r}: 1-32 letters, digits, '_', '.', '-'")
    return name


def check_role(role: str) -> str:
    """``role`` if it is one of :data:`ROLES`; InputError otherwise."""
    if role not in ROLES:
        raise InputError(f"unknown role {role!r}: use {', '.join(ROLES)}")
    return role


def hash_password(password: str) -> str:
    """The stored form of ``password`` (InputError when shorter than :data:`MIN_PASSWORD`)."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD or len(password) > 256:
        raise InputError(f"a password needs {MIN_PASSWORD} to 256 characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P,
                            maxmem=64 * 1024 * 1024, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(stored: str, password: str) -> bool:
    """True when ``password`` matches the stored hash (constant-time comparison)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n),
                             r=int(r), p=int(p), maxmem=64 * 1024 * 1024,
                             dklen=len(digest) // 2)
    except (ValueError, AttributeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


#: Verified against when the name is unknown, so a login takes as long either way.
_DUMMY = hash_password("not-a-password")


def add_staff(db: sqlite_utils.Database, name: str, role: str, password: str, *,
              actor: str, client: str | None = None, store: str | None = None
              ) -> dict[str, Any]:
    """Create an account; Conflict when the name is taken. ``store``: the one store the
    account sees and acts on (None: every store of the chain); NotFound when unknown."""
    check_name(name)
    check_role(role)
    pw = hash_password(password)
    ts = int(time.time())
    with transaction(db) as conn:
        if conn.execute("SELECT 1 FROM staff WHERE name = ?", (name,)).fetchone():
            raise Conflict(f"staff {name!r} already exists")
        sid = stores.store_id(conn, store)
        cur = conn.execute("INSERT INTO staff (name, role, pw_hash, created_at, store_id) "
                           "VALUES (?,?,?,?,?)", (name, role, pw, ts, sid))
        after = {"name": name, "role": role, "active": True}
        if store is not None:
            after["store"] = store
        audit.record(conn, ts, actor, "staff.add", after=after, client=client)
    return {"id": cur.lastrowid, **after}


def _change(db: sqlite_utils.Database, name: str, action: str, sets: dict[str, Any], *,
            actor: str, client: str | None) -> dict[str, Any]:
    ts = int(time.time())
    with transaction(db) as conn:
        row = conn.execute("SELECT role, active FROM staff WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"unknown staff {name!r}")
        for col, val in sets.items():
            conn.execute(f"UPDATE staff SET {col} = ? WHERE name = ?", (val, name))
        before = {"name": name, "role": row[0], "active": bool(row[1])}
        after = {**before, **{k: (bool(v) if k == "active" else v) for k, v in sets.items()
                              if k != "pw_hash"}}
        audit.record(conn, ts, actor, action, before=before, after=after, client=client)
    return after


def set_active(db: sqlite_utils.Database, name: str, active: bool, *, actor: str,
               client: str | None = None) -> dict[str, Any]:
    """Enable or disable an account (a disabled one cannot log in)."""
    return _change(db, check_name(name), "staff.enable" if active else "staff.disable",
                   {"active": 1 if active else 0}, actor=actor, client=client)


def set_role(db: sqlite_utils.Database, name: str, role: str, *, actor: str,
             client: str | None = None) -> dict[str, Any]:
    """Change an account's role."""
    return _change(db, check_name(name), "staff.role", {"role": check_role(role)},
                   actor=actor, client=client)


def set_password(db: sqlite_utils.Database, name: str, password: str, *, actor: str,
                 client: str | None = None) -> dict[str, Any]:
    """Set a new password (the hash is never logged)."""
    return _change(db, check_name(name), "staff.password",
                   {"pw_hash": hash_password(password)}, actor=actor, client=client)


def set_store(db: sqlite_utils.Database, name: str, store: str | None, *, actor: str,
              client: str | None = None) -> dict[str, Any]:
    """Scope an account to one store (None: every store); NotFound for an unknown store."""
    check_name(name)
    with transaction(db) as conn:
        sid = stores.store_id(conn, store)
    return _change(db, name, "staff.store", {"store_id": sid}, actor=actor, client=client)


def list_staff(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every account without its hash, by name; ``store`` empty = every store."""
    return [{**dict(r), "active": bool(r["active"]), "store": r["store"] or ""}
            for r in db.query(
        "SELECT f.id, f.name, f.role, f.active, s.name AS store, f.created_at FROM staff f "
        "LEFT JOIN stores s ON s.id = f.store_id ORDER BY f.name")]


def authenticate(db: sqlite_utils.Database, name: str, password: str) -> dict[str, Any] | None:
    """``{"name", "role", "store"}`` of an active account whose password matches, else None
    (``store`` None: every store). Takes a hash's time whether or not the name exists."""
    rows = list(db.query("SELECT f.name, f.role, f.pw_hash, f.active, s.name AS store "
                         "FROM staff f LEFT JOIN stores s ON s.id = f.store_id "
                         "WHERE f.name = ?", [name])) if isinstance(name, str) else []
    if not rows:
        verify_password(_DUMMY, password or "")
        return None
    row = rows[0]
    if not verify_password(row["pw_hash"], password or "") or not row["active"]:
        return None
    return {"name": row["name"], "role": row["role"], "store": row["store"]}
