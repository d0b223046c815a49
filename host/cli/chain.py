# Runs on CPython (host): `tapkiosk store add|list` — the stores of a chain.
"""Store commands of a chain (``host.store.stores``): ``store add NAME`` (idempotent) and
``store list``. Readers join a store with ``device add ... --store NAME`` or ``device set ID
--store NAME``; staff with ``staff add NAME --role R --store NAME``."""

from __future__ import annotations

import argparse
from typing import Any

from host.cli.args import Parents, group
from host.cli.context import Ctx, Handler
from host.store import audit, stores


def add_parsers(sub: Any, p: Parents) -> None:
    """``store add NAME`` and ``store list``."""
    st = group(sub, "store", "the stores of a chain")
    s = st.add_parser("add", help="add a store (a second add of the same name changes "
                      "nothing)", **p.read)
    s.add_argument("name")
    st.add_parser("list", help="every store with its devices and staff", **p.read)


def store_add(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(stores.add_store(ctx.db, a.name, actor=audit.cli_actor()))


def store_list(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(stores.list_stores(ctx.db))


COMMANDS: dict[str, Handler] = {"store add": store_add, "store list": store_list}
