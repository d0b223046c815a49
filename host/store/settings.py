# Runs on CPython (host): site settings kept in the database (the site's policy file path).
"""Site settings: ``site_settings`` rows (key, value). The one setting so far is ``policy``,
the path of the site's policy TOML file, so that every command and the daemon use the same
policy without ``--policy`` on each.

Where the policy comes from (``policy_location``), first that applies: ``--policy PATH``,
the environment variable ``TAPKIOSK_POLICY``, the stored path, else the shipped defaults
(``source`` = ``"defaults"``: front ends warn)."""

from __future__ import annotations

import os
import sqlite3

import sqlite_utils

from host.errors import InputError
from host.store.outage import is_unavailable
from host.store.db import is_postgres

#: The environment variable naming the site policy file.
POLICY_ENV = "TAPKIOSK_POLICY"


def get(db: sqlite_utils.Database | sqlite3.Connection, key: str) -> str | None:
    """The value of setting ``key`` (None when unset or before the table exists)."""
    try:
        row = db.execute("SELECT value FROM site_settings WHERE key = ?", (key,)).fetchone()
    except sqlite3.OperationalError as e:   # a database older than the settings table
        if is_unavailable(e):                # not a missing table: no database at all
            raise
        return None
    return None if row is None else row[0]


def put(conn: sqlite3.Connection, key: str, value: str, ts: int) -> None:
    """Set ``key`` to ``value`` (inside the caller's transaction)."""
    conn.execute("INSERT INTO site_settings (key, value, updated_at) VALUES (?,?,?) "
                 "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                 "updated_at = excluded.updated_at", (key, value, ts))


def policy_location(db: sqlite_utils.Database | sqlite3.Connection | None,
                    explicit: str | None) -> tuple[str | None, str]:
    """(path or None, source): source is ``option``, ``env``, ``site`` or ``defaults``."""
    if explicit:
        return explicit, "option"
    env = os.environ.get(POLICY_ENV)
    if env:
        return env, "env"
    stored = get(db, "policy") if db is not None else None
    if stored:
        return stored, "site"
    return None, "defaults"


def stored_policy_path(db_path: str, explicit: str | None) -> str | None:
    """``policy_location`` for a process that only has the database's path (the daemon):
    reads the stored setting read-only. InputError when the file cannot be opened."""
    if explicit or os.environ.get(POLICY_ENV) or db_path == ":memory:":
        return policy_location(None, explicit)[0]
    if is_postgres(db_path):
        from host.store.pg import open_readonly
        db = open_readonly(db_path, lazy=True)   # unreachable: the read's error says so
        try:
            return policy_location(db, None)[0]
        finally:
            db.close()
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as e:
        raise InputError(f"cannot open database {db_path}: {e}") from None
    try:
        return policy_location(conn, None)[0]
    finally:
        conn.close()
