# Runs on CPython (host): `tapkiosk policy show|set` — where the site's policy comes from.
"""The site's one policy location: ``policy set PATH`` checks the file and stores its path in
the database (``host.store.settings``), so every command and the daemon use it without
``--policy``; ``policy show`` says which policy is in force and where it came from."""

from __future__ import annotations

import argparse
import os
from typing import Any

from host.cli.args import Parents, group
from host.cli.context import Ctx, Handler
from host.rules.policy import check_stores, load_policy
from host.store import settings, stores
from host.store.db import transaction

#: The line front ends print when no policy was configured.
DEFAULTS_WARNING = ("no site policy set: using the shipped defaults (tapkiosk policy set PATH, "
                    f"or ${settings.POLICY_ENV})")


def add_parsers(sub: Any, p: Parents) -> None:
    """``policy show`` and ``policy set PATH``."""
    pol = group(sub, "policy", "the site policy file")
    pol.add_parser("show", help="which policy is in force and where it comes from", **p.read)
    t = pol.add_parser("set", help="check a policy file and make it the site's", **p.write)
    t.add_argument("path")


def policy_show(ctx: Ctx, a: argparse.Namespace) -> None:
    path, source = settings.policy_location(ctx.db, a.policy)
    ctx.show({"source": source, "path": path or "", "stored": settings.get(ctx.db, "policy")
              or "", "timezone": ctx.policy.timezone, "tiers": " ".join(ctx.policy.tiers),
              "warning": DEFAULTS_WARNING if source == "defaults" else ""})


def policy_set(ctx: Ctx, a: argparse.Namespace) -> None:
    path = os.path.abspath(a.path)
    # refuses a missing or invalid file, or one naming a store the chain lacks, before
    # anything is stored
    check_stores(load_policy(path), stores.store_names(ctx.db))
    with transaction(ctx.db) as conn:
        settings.put(conn, "policy", path, ctx.ts())
    ctx.show({"policy": path, "source": "site"})


COMMANDS: dict[str, Handler] = {"policy show": policy_show, "policy set": policy_set}
