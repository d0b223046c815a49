# Runs on CPython (host): turns a request's Authorization header into an Actor (API tokens).
"""Authentication: ``Authorization: Bearer tk_...`` -> :class:`host.web.permissions.Actor`.

A missing header, another scheme, an unknown or a revoked token all raise
:class:`host.web.permissions.Unauthorized` (HTTP 401). What the actor may do is decided
afterwards, by ``permissions.check``.
"""

from __future__ import annotations

import sqlite_utils

from host.store.tokens import find_token
from host.web.permissions import Actor, Unauthorized


def authenticate(db: sqlite_utils.Database, authorization: str | None) -> Actor:
    """The actor of a request whose ``Authorization`` header is ``authorization``."""
    if not authorization:
        raise Unauthorized("missing API token: send 'Authorization: Bearer <token>'")
    scheme, _, secret = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("malformed Authorization header: use 'Bearer <token>'")
    token = find_token(db, secret.strip())
    if token is None:
        raise Unauthorized("unknown or revoked API token")
    return Actor(token_id=token["id"], name=token["name"], scope=token["scope"])
