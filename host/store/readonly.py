# Runs on CPython (host): read-only connections to the site database (for the HTTP API's reads).
"""Read-only connections.

Writes go through the daemon's single writer; readers (HTTP API requests) open their own
connection with SQLite's ``mode=ro``, so a read path can never write by mistake and never
takes the write lock. In WAL mode such a reader sees the last committed state.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from host.errors import InputError
from host.store import pg
from host.store.db import BUSY_TIMEOUT_MS, is_postgres


def open_readonly(path: str | os.PathLike) -> sqlite_utils.Database:
    """Open the existing site database at ``path`` read-only (InputError if it cannot be)."""
    if is_postgres(path):
        return pg.open_readonly(path)
    uri = Path(path).expanduser().absolute().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                               timeout=BUSY_TIMEOUT_MS / 1000)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as e:
        raise InputError(f"cannot open database {path} read-only: {e}") from None
    return sqlite_utils.Database(conn)


def readonly_factory(path: str | os.PathLike) -> Callable[[], sqlite_utils.Database]:
    """A function that opens a new read-only connection to ``path`` each time it is called."""
    return lambda: open_readonly(path)
