# Runs on CPython (host): the stores of a chain — names, and which store a reader belongs to.
"""Stores of a chain (table ``stores``, migration 19).

A site with no store rows is a single-store site: its devices have ``store_id`` NULL and
nothing about it changes. A chain names its stores (``tapkiosk store add NAME``) and puts
each reader in one (``device add ... --store NAME``, ``device set ID --store NAME``); taps
and ledger rows belong to a store through the device that made them. Members are
chain-wide. Every write here is idempotent: adding a store that exists, or putting a device
in the store it is already in, changes nothing and says so (``created``/``changed`` False).
The queries are plain SQL that SQLite and PostgreSQL both run.
"""

from __future__ import annotations

import re
import time
from typing import Any

import sqlite_utils

from host.errors import InputError, NotFound
from host.store import audit
from host.store.db import transaction

_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")


def check_name(name: str) -> str:
    """``name`` if it is 1-32 of ``[A-Za-z0-9_-]`` (a bare TOML key, for ``[stores.NAME]``
    in the policy); InputError otherwise."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InputError(f"bad store name {name!r}: 1-32 letters, digits, '_' or '-'")
    return name


def add_store(db: sqlite_utils.Database, name: str, *, actor: str) -> dict[str, Any]:
    """Create store ``name`` (idempotent: an existing one is returned with created False)."""
    check_name(name)
    ts = int(time.time())
    with transaction(db) as conn:
        row = conn.execute("SELECT id FROM stores WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return {"id": row[0], "name": name, "created": False}
        cur = conn.execute("INSERT INTO stores (name, created_at) VALUES (?, ?)", (name, ts))
        audit.record(conn, ts, actor, "store.add", after={"name": name})
    return {"id": cur.lastrowid, "name": name, "created": True}


def list_stores(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every store by name, with how many devices and staff accounts it has."""
    return [dict(r) for r in db.query(
        "SELECT s.id, s.name, "
        "(SELECT count(*) FROM devices d WHERE d.store_id = s.id) AS devices, "
        "(SELECT count(*) FROM staff f WHERE f.store_id = s.id) AS staff, "
        "s.created_at FROM stores s ORDER BY s.name")]


def store_names(db: sqlite_utils.Database | Any) -> list[str]:
    """The names of every store (``db``: a Database or a connection)."""
    return [r[0] for r in db.execute("SELECT name FROM stores ORDER BY name")]


def store_id(conn: Any, name: str | None) -> int | None:
    """The id of store ``name`` (None for None); NotFound for an unknown store."""
    if name is None:
        return None
    row = conn.execute("SELECT id FROM stores WHERE name = ?", (check_name(name),)).fetchone()
    if row is None:
        raise NotFound(f"unknown store {name!r} (add it with: tapkiosk store add {name})")
    return row[0]


def device_store(conn: Any, device_id: str) -> str | None:
    """The store name of ``device_id`` (None: no store, or no such device)."""
    row = conn.execute("SELECT s.name FROM devices d JOIN stores s ON s.id = d.store_id "
                       "WHERE d.device_id = ?", (device_id,)).fetchone()
    return row[0] if row is not None else None


def set_device_store(db: sqlite_utils.Database, device_id: str, name: str | None, *,
                     actor: str) -> dict[str, Any]:
    """Put ``device_id`` in store ``name`` (None: no store). NotFound for an unknown device
    or store; ``changed`` False when it was already there."""
    ts = int(time.time())
    with transaction(db) as conn:
        sid = store_id(conn, name)
        row = conn.execute("SELECT store_id FROM devices WHERE device_id = ?",
                           (device_id,)).fetchone()
        if row is None:
            raise NotFound(f"unknown device {device_id!r}")
        if row[0] == sid:
            return {"device_id": device_id, "store": name, "changed": False}
        before = device_store(conn, device_id)
        conn.execute("UPDATE devices SET store_id = ? WHERE device_id = ?", (sid, device_id))
        audit.record(conn, ts, actor, "device.store", device_id=device_id,
                     before={"store": before}, after={"store": name})
    return {"device_id": device_id, "store": name, "changed": True}


def staff_store(conn: Any, staff_name: str) -> str | None:
    """The store a staff account is scoped to (None: every store, or no such account)."""
    row = conn.execute("SELECT s.name FROM staff f JOIN stores s ON s.id = f.store_id "
                       "WHERE f.name = ?", (staff_name,)).fetchone()
    return row[0] if row is not None else None
