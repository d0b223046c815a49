# Runs on CPython (host): `tapkiosk backup` of a chain's PostgreSQL database — a dated pg_dump, verified in its snapshot.
"""Backups of a PostgreSQL store (issue 17).

:func:`dump` writes ``FOLDER/NAME-YYYY-MM-DDTHHMMSS.dump`` (``NAME`` the database's name;
mode ``0660``) with ``pg_dump`` in its custom format (``pg_restore`` reads it; ``pg_restore
-d URL FILE`` into a new database). The ledger is verified (``host.ledger.book.verify``) in
one exported snapshot that ``pg_dump --snapshot`` then dumps, so the check is of exactly what
the file holds, while the daemons keep writing. ``pg_dump`` is the one on ``PATH``, else the
newest in ``/usr/lib/postgresql/*/bin`` (Debian's layout); none: one-line InputError.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from host.errors import InputError
from host.ledger.book import verify
from host.store.backup import STAMP, new_generation
from host.store.db import open_pg

#: The suffix of a PostgreSQL backup generation (``host.store.backup.generations``).
SUFFIX = ".dump"


def pg_tool(name: str) -> str:
    """The path of PostgreSQL client tool ``name`` (see the module doc); InputError when
    there is none."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                      key=lambda p: [int(x) for x in re.findall(r"\d+", p)])
    if versions:
        return versions[-1]
    raise InputError(f"{name} not found: install PostgreSQL's client tools "
                     "(Debian: postgresql-client) or put it on PATH")


def stem(url: str) -> str:
    """The name backups of database ``url`` start with: the database's name."""
    name = urlsplit(url).path.lstrip("/") or "postgres"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def dump(url: str, folder: str | os.PathLike, now: datetime | None = None
         ) -> tuple[Path, list[str]]:
    """A dated ``pg_dump`` of ``url`` in ``folder`` and ``verify``'s problems in the same
    snapshot (empty: consistent). Raises InputError (nothing is left behind) when
    ``pg_dump`` is missing or fails."""
    exe = pg_tool("pg_dump")
    name = f"{stem(url)}-{(now or datetime.now()).strftime(STAMP)}"
    db = open_pg(url, readonly=True)      # first: a server that does not answer leaves no file
    try:
        dest = new_generation(Path(folder), name, SUFFIX)
    except OSError as e:
        db.close()
        raise InputError(f"cannot write a backup to {folder}: {e}") from None
    try:
        db.execute("BEGIN")
        snapshot = db.execute("SELECT pg_export_snapshot()").fetchone()[0]
        problems = verify(db)
        _run(exe, url, snapshot, dest)
        db.execute("ROLLBACK")
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    finally:
        db.close()
    return dest, problems


def _run(exe: str, url: str, snapshot: str, dest: Path) -> None:
    argv = [exe, "--format=custom", f"--snapshot={snapshot}", "--no-owner",
            f"--file={dest}", f"--dbname={url}"]
    try:
        out: Any = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InputError(f"pg_dump failed: {e}") from None
    if out.returncode != 0:
        lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
        raise InputError(f"pg_dump failed: {lines[-1] if lines else out.returncode}")
