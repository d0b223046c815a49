# Runs on CPython (host): `tapkiosk datakey ...`, `retention run` and member data files — the privacy commands.
"""Data key and retention commands (docs/operators.md "Privacy").

``datakey status|rotate``: the site data key file and its versions; rotation re-seals every
member in batches while the daemon runs. ``retention run [--dry-run]``: erase the personal
data of members idle longer than the policy's ``[privacy] retention_days``. ``upgrade``
(host/cli/upkeep.py) seals member rows an older version kept in plain text.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from host.cli.args import Parents, group
from host.cli.context import Ctx, Handler
from host.errors import InputError
from host.privacy import keyfile, upgrade as privacy_upgrade
from host.privacy.vault import db_file


def add_parsers(sub: Any, p: Parents) -> None:
    """``datakey status|rotate``, ``retention run`` and ``upgrade``."""
    dk = group(sub, "datakey", "the site data key sealing member personal data")
    dk.add_parser("status", help="key file, versions, members per version", **p.read)
    dk.add_parser("rotate", help="new key version; re-seal every member in batches", **p.read)
    ret = group(sub, "retention", "erase personal data of long-idle members")
    r = ret.add_parser("run", help="erase members idle over [privacy] retention_days",
                       **p.write)
    r.add_argument("--dry-run", action="store_true", help="only list them")
    # ``upgrade`` (migrations after a dated backup, then ``seal_plain_rows``): host/cli/upkeep.py


def write_private(path: str, text: str) -> None:
    """Write a new file readable by its owner only (0600); refuse to overwrite."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror}") from None


def dump(ctx: Ctx, data: Any, out: str | None) -> None:
    """``data`` as JSON on stdout, or into a new 0600 file ``out``."""
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, default=str) + "\n"
    if out:
        write_private(out, text)
        ctx.show({"out": out})
    else:
        ctx.out.write(text)


def init_data_key(ctx: Ctx) -> dict[str, Any]:
    """``tapkiosk init``'s part: create the key file (0600) if missing, seal plain rows."""
    path = keyfile.key_path(db_file(ctx.db))
    created = keyfile.create(path) if path else False
    sealed = privacy_upgrade.seal_plain_rows(ctx.db)
    return {"data_key_file": path or "(in memory)", "data_key_created": created,
            "members_sealed": sealed["members_sealed"]}


def datakey_status(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(privacy_upgrade.status(ctx.db))


def datakey_rotate(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(privacy_upgrade.rotate(ctx.db))


def retention_run(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(ctx.admin.retention(dry_run=a.dry_run, key=a.key))


COMMANDS: dict[str, Handler] = {
    "datakey status": datakey_status, "datakey rotate": datakey_rotate,
    "retention run": retention_run,
}
