# Runs on CPython (host): `tapkiosk store add|list` and `chain join` — the stores of a chain.
"""Store commands of a chain (``host.store.stores``): ``store add NAME`` (idempotent) and
``store list``. Readers join a store with ``device add ... --store NAME`` or ``device set ID
--store NAME``; staff with ``staff add NAME --role R --store NAME``.

``chain join SITE.db --store NAME [--skip-conflicts] [--site-key FILE]`` moves a
single-store site into the chain database given by ``--db`` (``host.store.join``): with a
conflict, each is printed on its own line, nothing is written and the exit code is 2;
``--skip-conflicts`` leaves those members and readers out and lists them."""

from __future__ import annotations

import argparse
from typing import Any

from host.cli.args import Parents, group
from host.cli.context import Ctx, Handler
from host.store import audit, join, stores


def add_parsers(sub: Any, p: Parents) -> None:
    """``store add NAME`` and ``store list``."""
    st = group(sub, "store", "the stores of a chain")
    s = st.add_parser("add", help="add a store (a second add of the same name changes "
                      "nothing)", **p.read)
    s.add_argument("name")
    st.add_parser("list", help="every store with its devices and staff", **p.read)
    ch = group(sub, "chain", "a chain of stores on one database")
    j = ch.add_parser("join", help="move a single-store site file into this chain database "
                      "as a store (members matched by card)", **p.read)
    j.add_argument("site", help="the site's SQLite file")
    j.add_argument("--store", required=True, help="the store it becomes")
    j.add_argument("--skip-conflicts", action="store_true",
                   help="leave conflicting members and readers out (listed) instead of "
                        "refusing the join")
    j.add_argument("--site-key", help="the site's data key file (default: SITE.key)")


def store_add(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(stores.add_store(ctx.db, a.name, actor=audit.cli_actor()))


def store_list(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(stores.list_stores(ctx.db))


def chain_join(ctx: Ctx, a: argparse.Namespace) -> int:
    try:
        result = join.join_site(ctx.db, a.site, a.store, actor=audit.cli_actor(),
                                site_key=a.site_key, skip_conflicts=a.skip_conflicts)
    except join.JoinConflicts as e:
        for line in e.lines:
            print(f"conflict: {line}", file=ctx.out)
        raise
    if not ctx.as_json:
        for line in result.get("skipped_conflicts", []):
            print(f"skipped: {line}", file=ctx.out)
    ctx.show(result if ctx.as_json else join.describe(result))
    return 0


COMMANDS: dict[str, Handler] = {"store add": store_add, "store list": store_list,
                                "chain join": chain_join}
