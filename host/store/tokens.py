# Runs on CPython (host): HTTP API tokens — create, revoke, list, and find one by its secret.
"""API tokens for the HTTP API (``/v1``).

A token is ``tk_`` followed by 32 random bytes (URL-safe base64). Only its sha256 is stored
(``api_tokens.hash``): the secret is returned once by :func:`add_token` and cannot be shown
again. Tokens are high-entropy, so a fast hash is enough (nothing to brute-force).

Every token has one scope (:data:`SCOPES`); what each scope allows is decided in
``host.web.permissions``, not here. A revoked token keeps its row with ``revoked_at`` set.
"""

from __future__ import annotations

import time
import hashlib
import re
import secrets
from typing import Any

import sqlite_utils

from host.errors import InputError, NotFound
from host.store.db import transaction

#: Token scopes, from the narrowest to the widest.
SCOPES = ("members", "sales", "admin")
#: Prefix of every token secret (makes a leaked token easy to recognise in logs and repos).
PREFIX = "tk_"

_NAME_RE = re.compile(r"[\x20-\x7e]{1,64}")


def hash_secret(secret: str) -> str:
    """sha256 of the token secret, hex (what the store keeps)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_scope(scope: str) -> str:
    """Return ``scope`` if it is one of :data:`SCOPES`; InputError otherwise."""
    if scope not in SCOPES:
        raise InputError(f"unknown scope {scope!r}: use {', '.join(SCOPES)}")
    return scope


def add_token(db: sqlite_utils.Database, name: str, scope: str) -> tuple[int, str]:
    """Create a token named ``name`` with ``scope``: ``(id, secret)``. The secret is shown
    only here; the store keeps its hash."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InputError("token name must be 1-64 printable ASCII characters")
    check_scope(scope)
    secret = PREFIX + secrets.token_urlsafe(32)
    with transaction(db) as conn:
        cur = conn.execute("INSERT INTO api_tokens (name, scope, hash, created_at) "
                           "VALUES (?,?,?,?)", (name, scope, hash_secret(secret), int(time.time())))
        token_id = cur.lastrowid
    return token_id, secret


def revoke_token(db: sqlite_utils.Database, token_id: int) -> dict[str, Any]:
    """Revoke token ``token_id`` (NotFound if there is none). Revoking twice keeps the first
    ``revoked_at``. Returns the token's listing row."""
    with transaction(db) as conn:
        row = conn.execute("SELECT revoked_at FROM api_tokens WHERE id = ?",
                           (token_id,)).fetchone()
        if row is None:
            raise NotFound(f"unknown API token {token_id}")
        if row[0] is None:
            conn.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ?",
                         (int(time.time()), token_id))
    return _listing(db, "WHERE id = ?", [token_id])[0]


def list_tokens(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every token (revoked ones too), oldest first, without secrets or hashes."""
    return _listing(db, "", [])


def _listing(db: sqlite_utils.Database, where: str, params: list[Any]) -> list[dict[str, Any]]:
    return [dict(r) for r in db.query(
        f"SELECT id, name, scope, created_at, revoked_at FROM api_tokens {where} ORDER BY id",
        params)]


def find_token(db: sqlite_utils.Database, secret: str) -> dict[str, Any] | None:
    """The live token whose secret is ``secret`` (``id``, ``name``, ``scope``), or None for
    an unknown, malformed or revoked one."""
    if not isinstance(secret, str) or not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    rows = list(db.query("SELECT id, name, scope FROM api_tokens "
                         "WHERE hash = ? AND revoked_at IS NULL", [hash_secret(secret)]))
    return dict(rows[0]) if rows else None
