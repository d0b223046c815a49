# Runs on CPython (host): `tapkiosk upgrade` and `backup` — schema upgrades and dated backups of the database.
"""Upkeep of the site database: ``upgrade`` (a dated backup, then the pending migrations) and
``backup`` (a dated generation, checked with ``verify``, the oldest beyond ``--keep`` removed).

Every other command refuses a database at an older schema (``host.store.db.SchemaOutdated``,
exit 2); only ``init`` and ``upgrade`` migrate, after ``before_upgrade`` made the backup.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from host.cli.args import Parents, whole
from host.cli.context import Ctx, Handler
from host.ledger import book as ledger
from host.privacy import upgrade as privacy_upgrade
from host.store import backup as backups
from host.store import pg_backup
from host.store.db import is_postgres, open_db, schema_version

#: Commands that may migrate the database they open.
MIGRATING = ("init", "upgrade")


def add_parsers(sub: Any, p: Parents) -> None:
    """``upgrade`` and ``backup``."""
    u = sub.add_parser("upgrade", help="back the database up, apply the schema migrations of "
                       "this version, seal plain-text member data", **p.read)
    u.add_argument("--backup-dir", help="where the dated backup goes (default: the database's "
                   "folder)")
    b = sub.add_parser("backup", help="a dated backup generation, checked with verify; the "
                       "oldest beyond --keep are removed", **p.read)
    b.add_argument("dir", help="backup folder")
    b.add_argument("--keep", type=whole("generations to keep", 1, 10_000), default=14,
                   help="generations to keep (default 14)")


def before_upgrade(path: str, a: argparse.Namespace) -> None:
    """Before ``init``/``upgrade`` open (and so migrate) an existing database with migrations
    pending: a dated backup beside it (or in ``--backup-dir``), noted in ``a.backup``."""
    a.backup, a.from_schema = None, backups.upgrade_needed(path)
    if a.from_schema is not None:
        folder = getattr(a, "backup_dir", None) or os.path.dirname(os.path.abspath(path))
        a.backup = str(backups.backup_db(path, folder))


def upgrade(ctx: Ctx, a: argparse.Namespace) -> None:
    """Migrated already (``before_upgrade``, then ``open_db(upgrade=True)``); members' personal
    data an older version left in plain text is sealed (host/privacy)."""
    ctx.show({"db": ctx.path, "schema_version": schema_version(ctx.db),
              "from_schema": a.from_schema, "backup": a.backup or "none (nothing to migrate)",
              **privacy_upgrade.seal_plain_rows(ctx.db)})


def backup(ctx: Ctx, a: argparse.Namespace) -> int:
    """Exit 1 when the new generation does not verify (it is kept, for a look). A
    PostgreSQL database is dumped with pg_dump (host/store/pg_backup.py)."""
    if is_postgres(ctx.path):
        gen, problems = pg_backup.dump(ctx.path, a.dir, ctx.now.replace(tzinfo=None))
        name, suffix = pg_backup.stem(ctx.path), pg_backup.SUFFIX
    else:
        gen, problems = _sqlite_generation(ctx.path, a.dir, ctx.now.replace(tzinfo=None))
        name, suffix = backups.stem(ctx.path), ".db"
    removed = [] if problems else backups.prune(a.dir, name, a.keep, suffix)
    ctx.show({"backup": str(gen), "verify": "ok" if not problems else "FAILED",
              "problems": problems, "removed": [str(p) for p in removed],
              "generations": len(backups.generations(a.dir, name, suffix))})
    return 1 if problems else 0


def _sqlite_generation(path: str, folder: str, now: Any) -> tuple[Path, list[str]]:
    gen = backups.backup_db(path, folder, now)
    db = open_db(gen)
    try:
        problems = ledger.verify(db)
    finally:
        db.conn.close()
    for extra in (Path(f"{gen}-wal"), Path(f"{gen}-shm")):
        extra.unlink(missing_ok=True)
    return gen, problems


COMMANDS: dict[str, Handler] = {"upgrade": upgrade, "backup": backup}
