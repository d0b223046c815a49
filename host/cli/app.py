# Runs on CPython (host): the operator CLI `tapkiosk` — parse, open the store, run one command from the table.
"""``tapkiosk`` — the operator command line.

``main(argv) -> int`` is testable in-process. Global options: ``--db PATH`` (default: env
``TAPKIOSK_DB``, else ``~/.local/share/tapkiosk/site.db``), ``--policy PATH`` (default: env
``TAPKIOSK_POLICY``, else the path stored by ``policy set``, else the shipped defaults, with
a warning on a terminal), ``--json``.
Every refused request (bad input, unknown member, conflicting idempotency key, not enough
balance) prints one ``tapkiosk: error: ...`` line on stderr, exits 2 and writes nothing.
``verify`` exits 1 when a projection differs from the ledger. Only ``init`` and ``upgrade``
migrate the database (``upgrade`` backs it up first); every other command refuses an older
schema with one line naming ``tapkiosk upgrade`` (exit 2).

Each command is one handler in ``COMMANDS`` (``"member add"`` -> function), defined with
its parser in the module of its group: ``devices`` (init, site, device), ``members``
(member, card), ``money`` (topup, refund, pass, points), ``tap``, ``reports``, ``books``
(ledger, verify, expire, export), ``staff`` (console staff accounts, ``audit``), ``upkeep``
(upgrade, backup). ``daemon``, ``doctor``, ``flash``, ``sim`` and ``demo`` are handed to their
own modules (``delegate``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sqlite3
import sys
from datetime import datetime
from typing import TextIO

from host.admin import Admin
from host.cli import (books, catalogue, chain, coupons, delegate, devices, fleet, members,
                       messages, money, privacy, reports, site_policy, staff, tap, tiers,
                       tokens, upkeep)
from host.cli.args import Parser, parents
from host.cli.context import Ctx, Handler
from host.errors import HostError, InputError
from host.rules.policy import load_policy
from host.store import audit, settings
from host.store.db import default_db_path, is_postgres, open_db

#: Command groups in ``--help`` order.
_GROUPS = (devices.add_site_parsers, members.add_parsers, devices.add_parsers,
           money.add_parsers, tap.add_parsers, reports.add_parsers, books.add_parsers,
           tokens.add_parsers, staff.add_parsers, privacy.add_parsers, site_policy.add_parsers,
           tiers.add_parsers, coupons.add_parsers, messages.add_parsers, catalogue.add_parsers,
           upkeep.add_parsers, fleet.add_parsers, chain.add_parsers)

#: Every command: its words (``"member add"``) -> its handler.
COMMANDS: dict[str, Handler] = {**devices.COMMANDS, **members.COMMANDS, **money.COMMANDS,
                                **tap.COMMANDS, **reports.COMMANDS, **books.COMMANDS,
                                **tokens.COMMANDS, **staff.COMMANDS, **privacy.COMMANDS,
                                **site_policy.COMMANDS, **tiers.COMMANDS, **coupons.COMMANDS,
                                **messages.COMMANDS, **catalogue.COMMANDS, **upkeep.COMMANDS,
                                **fleet.COMMANDS, **chain.COMMANDS}


def _version() -> str:
    try:
        return importlib.metadata.version("tapkiosk")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> Parser:
    """The ``tapkiosk`` parser: global options, then each command group's parsers."""
    p = Parser(prog="tapkiosk", description="tapkiosk operator CLI",
               epilog="also: tapkiosk daemon|doctor|flash|sim|demo ... (each has its own "
                      "--help): the site daemon, the site check against daemon.toml, the "
                      "technician's flash tool, simulated readers, the demo")
    p.add_argument("--db", help="site database (default: $TAPKIOSK_DB or the user data dir)")
    p.add_argument("--policy", help="policy TOML file (default: $TAPKIOSK_POLICY, else the "
                   "site's, set by 'tapkiosk policy set', else the shipped defaults)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--version", action="version", version=f"tapkiosk {_version()}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    shared = parents()
    for add in _GROUPS:
        add(sub, shared)
    return p


def _run(args: argparse.Namespace, out: TextIO) -> int:
    path = args.db or default_db_path()
    if (args.cmd != "init" and path != ":memory:" and not is_postgres(path)
            and not os.path.exists(path)):
        raise InputError(f"no database at {path}: run 'tapkiosk init' first (or pass --db)")
    migrating = args.cmd in upkeep.MIGRATING
    if migrating:
        upkeep.before_upgrade(path, args)
    db = open_db(path, upgrade=migrating)
    try:
        where, source = settings.policy_location(db, args.policy)
        if source == "defaults" and args.cmd != "policy" and sys.stderr.isatty():
            print(f"tapkiosk: warning: {site_policy.DEFAULTS_WARNING}", file=sys.stderr)
        policy = load_policy(where)
        admin = Admin(db, policy, actor=audit.cli_actor())  # every CLI write is audited
        ctx = Ctx(db, policy, admin, path, out, args.json, datetime.now(policy.tz))
        name = " ".join(w for w in (args.cmd, getattr(args, "sub", None)) if w)
        return COMMANDS[name](ctx, args) or 0
    finally:
        db.conn.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tapkiosk``: returns the exit code (0 ok, 1 verify found problems,
    2 refused request).

    Delegated subcommands (``daemon``, ``flash``, ``sim``, ``demo``) get the global options
    given before them (``tapkiosk --db X daemon ...``) when their module lists them in
    ``GLOBAL_OPTIONS``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    head, delegated, rest = delegate.split_global(argv)
    if delegated is not None:
        return delegate.run(delegated, head, rest)
    try:
        return _run(build_parser().parse_args(argv), sys.stdout)
    except BrokenPipeError:  # `tapkiosk ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except HostError as e:
        msg = " ".join(str(e).split())
        print(f"tapkiosk: error: {msg}", file=sys.stderr)
        return e.exit_code
    except sqlite3.Error as e:
        print(f"tapkiosk: error: database: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
