# Runs on CPython (host): `tapkiosk api-token add|list|revoke` — parser and handlers, ready for the CLI.
"""The ``api-token`` command of ``tapkiosk``, for the CLI to mount::

    from host.web import token_commands
    token_commands.add_parser(subparsers)            # in the CLI's parser
    result = token_commands.run(db, args)            # args.cmd == "api-token"; a JSON-able dict

``api-token add NAME --scope members|sales|admin`` -> ``{"id", "name", "scope", "token"}``
(the only time the secret is shown); ``api-token list`` -> ``{"tokens": [...]}``;
``api-token revoke ID`` -> the revoked token's row. Errors are ``HostError`` (exit 2).
"""

from __future__ import annotations

import argparse
from typing import Any

import sqlite_utils

from host.errors import InputError
from host.store.tokens import SCOPES, add_token, list_tokens, revoke_token

COMMAND = "api-token"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``api-token`` (with ``add``, ``list``, ``revoke``) to the CLI's subparsers."""
    p = subparsers.add_parser(COMMAND, help="HTTP API tokens (secret shown once)")
    sub = p.add_subparsers(dest="sub", required=True)
    a = sub.add_parser("add", help="create a token; prints its secret once")
    a.add_argument("name", help="who uses it, e.g. pos-1")
    a.add_argument("--scope", required=True, choices=SCOPES,
                   help="members: read members and cards; sales: + top-ups, passes, "
                        "redemptions, events; admin: everything (refunds too)")
    sub.add_parser("list", help="every token (never the secrets)")
    r = sub.add_parser("revoke", help="revoke a token for good")
    r.add_argument("id", type=int)
    return p


def token_add(db: sqlite_utils.Database, name: str, scope: str) -> dict[str, Any]:
    """Create a token: its id, name, scope and the secret (shown only now)."""
    token_id, secret = add_token(db, name, scope)
    return {"id": token_id, "name": name, "scope": scope, "token": secret}


def token_list(db: sqlite_utils.Database) -> dict[str, Any]:
    """Every token, without secrets."""
    return {"tokens": list_tokens(db)}


def token_revoke(db: sqlite_utils.Database, token_id: int) -> dict[str, Any]:
    """Revoke token ``token_id``."""
    return revoke_token(db, token_id)


def run(db: sqlite_utils.Database, args: argparse.Namespace) -> dict[str, Any]:
    """Dispatch a parsed ``api-token`` command."""
    if args.sub == "add":
        return token_add(db, args.name, args.scope)
    if args.sub == "list":
        return token_list(db)
    if args.sub == "revoke":
        return token_revoke(db, args.id)
    raise InputError(f"unknown api-token command {args.sub!r}")
