# Runs on CPython (host): dated backup generations of the site database (SQLite's backup API).
"""Backups of the site database.

``backup_db(path, folder)`` copies a consistent snapshot with SQLite's online backup API
(``sqlite3.Connection.backup``: safe while the daemon writes) to
``folder/STEM-YYYY-MM-DDTHHMMSS.db``, mode ``0660`` (it holds the device keys and the site key). ``prune(folder, stem, keep)`` keeps
the newest ``keep`` generations. ``upgrade_needed(path)`` tells whether an existing database
has migrations pending (``tapkiosk upgrade`` backs it up before migrating).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from datetime import datetime
from pathlib import Path

import sqlite_utils

from host.errors import InputError
from host.store.db import BUSY_TIMEOUT_MS, is_empty, is_postgres, pending_migrations

#: The date and time in the name of a backup generation.
STAMP = "%Y-%m-%dT%H%M%S"
_GEN_RE = r"-(\d{4}-\d{2}-\d{2}T\d{6})(?:-(\d+))?"


def stem(path: str | os.PathLike) -> str:
    """The name backups of ``path`` start with: ``site`` for ``site.db``."""
    return Path(path).stem


def new_generation(folder: Path, name: str, suffix: str) -> Path:
    """Create ``folder/NAME SUFFIX`` (``NAME-2 SUFFIX`` ... when taken), empty, mode ``0660``,
    ``folder`` made ``0770`` if missing; returns its path. Raises OSError."""
    folder.mkdir(mode=0o770, parents=True, exist_ok=True)
    dest, n = folder / f"{name}{suffix}", 1
    while True:
        try:
            os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660))
            break
        except FileExistsError:
            n += 1
            dest = folder / f"{name}-{n}{suffix}"
    os.chmod(dest, 0o660)
    return dest


def backup_db(path: str | os.PathLike, folder: str | os.PathLike,
              now: datetime | None = None) -> Path:
    """A dated snapshot of the database at ``path`` in ``folder`` (created ``0770`` if
    missing), mode ``0660``; returns its path. Raises InputError when either side fails."""
    if is_postgres(path):
        raise InputError("a PostgreSQL store is backed up with pg_dump (tapkiosk backup runs "
                         "it) or pgBackRest, not copied as a file")
    src_path = Path(path)
    if not src_path.is_file():
        raise InputError(f"no database at {src_path}")
    out_dir = Path(folder)
    name = f"{stem(src_path)}-{(now or datetime.now()).strftime(STAMP)}"
    try:
        dest = new_generation(out_dir, name, ".db")
        src = sqlite3.connect(src_path, timeout=BUSY_TIMEOUT_MS / 1000)
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            dst.close()
            src.close()
    except (OSError, sqlite3.Error) as e:
        raise InputError(f"cannot back up {src_path} to {out_dir}: {e}") from None
    return dest


def generations(folder: str | os.PathLike, name: str, suffix: str = ".db") -> list[Path]:
    """Backups of database ``name`` (a stem) in ``folder``, oldest first (``suffix``
    ``.dump``: PostgreSQL dumps, host/store/pg_backup.py)."""
    d = Path(folder)
    if not d.is_dir():
        return []
    pat = re.compile(re.escape(name) + _GEN_RE + re.escape(suffix))
    found = [(m, p) for p in d.iterdir() if (m := pat.fullmatch(p.name))]
    found.sort(key=lambda mp: (mp[0].group(1), int(mp[0].group(2) or 1)))
    return [p for _, p in found]


def prune(folder: str | os.PathLike, name: str, keep: int, suffix: str = ".db") -> list[Path]:
    """Delete all but the newest ``keep`` generations of ``name``; returns the deleted ones."""
    if keep < 1:
        raise InputError("keep at least one backup generation")
    old = generations(folder, name, suffix)[:-keep]
    for p in old:
        for extra in (p, Path(f"{p}-wal"), Path(f"{p}-shm")):
            with contextlib.suppress(FileNotFoundError):
                extra.unlink()
    return old


def upgrade_needed(path: str | os.PathLike) -> int | None:
    """The schema version of the existing database at ``path`` when migrations are pending
    (None: new, empty, in memory or current). Opens it without writing anything."""
    if str(path) == ":memory:" or not Path(path).is_file():
        return None
    conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    try:
        db = sqlite_utils.Database(conn)
        if is_empty(db) or not pending_migrations(db):
            return None
        row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return row[0] or 0
    except sqlite3.Error as e:
        raise InputError(f"cannot read database {path}: {e}") from None
    finally:
        conn.close()
