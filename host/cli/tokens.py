# Runs on CPython (host): `tapkiosk api-token add|list|revoke` — HTTP API tokens, the secret shown once.
"""API token commands over ``host.store.tokens``.

``api-token add NAME --scope members|sales|admin`` prints the token's secret: the only time it
is shown (the store keeps its hash); ``api-token list`` never shows secrets; ``api-token revoke
ID`` revokes a token for good.
"""

from __future__ import annotations

import argparse
from typing import Any

from host.cli.args import Parents, group, whole
from host.cli.context import Ctx, Handler
from host.store.tokens import SCOPES, add_token, list_tokens, revoke_token


def add_parsers(sub: Any, p: Parents) -> None:
    """``api-token add|list|revoke``."""
    tok = group(sub, "api-token", "HTTP API tokens (secret shown once)")
    a = tok.add_parser("add", help="create a token; prints its secret once", **p.read)
    a.add_argument("name", help="who uses it, e.g. pos-1")
    a.add_argument("--scope", required=True, choices=SCOPES,
                   help="members: read members and cards; sales: + top-ups, passes, "
                        "redemptions, events; admin: everything (refunds too)")
    tok.add_parser("list", help="every token (never the secrets)", **p.read)
    r = tok.add_parser("revoke", help="revoke a token for good", **p.read)
    r.add_argument("id", type=whole("token id"))


def add(ctx: Ctx, a: argparse.Namespace) -> None:
    token_id, secret = add_token(ctx.db, a.name, a.scope)
    ctx.show({"id": token_id, "name": a.name, "scope": a.scope, "token": secret})


def list_(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(list_tokens(ctx.db))


def revoke(ctx: Ctx, a: argparse.Namespace) -> None:
    ctx.show(revoke_token(ctx.db, a.id))


COMMANDS: dict[str, Handler] = {"api-token add": add, "api-token list": list_,
                                "api-token revoke": revoke}
