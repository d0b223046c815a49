# Runs on CPython (host): FastAPI dependencies — context, read connection, actor with permission, Idempotency-Key.
"""Request plumbing shared by every route.

- :func:`context`: the application's :class:`host.web.context.WebContext`;
- :func:`read_db`: a read-only connection for this request, closed after it;
- :func:`need` (``Depends(need("sales.write"))``): authenticates the request (401) and checks
  that its actor may do the action (403), before the body is even looked at;
- :func:`idempotency_key`: the ``Idempotency-Key`` header every write needs (400 without it);
- :func:`replayed`: moves the admin result's ``replayed`` flag into the
  ``Idempotent-Replayed`` header, so a retried request gets the first body unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import sqlite_utils
from fastapi import Header, Request, Response, Security
from fastapi.security import HTTPBearer

from host.ledger.idempotent import check_key
from host.web.auth import authenticate
from host.web.context import WebContext
from host.web.permissions import Actor, check


def context(request: Request) -> WebContext:
    """The application's context."""
    return request.app.state.ctx


def read_db(request: Request) -> Iterator[sqlite_utils.Database]:
    """A read-only connection for one request."""
    db = context(request).read_db()
    try:
        yield db
    finally:
        db.conn.close()


#: Declares the bearer token in the OpenAPI document; ``auth.authenticate`` does the checking.
_BEARER = HTTPBearer(auto_error=False, scheme_name="token",
                     description="an API token from `tapkiosk api-token add`")


def need(action: str) -> Callable[..., Actor]:
    """A dependency giving the request's actor once it may do ``action``."""

    def dependency(request: Request, _declared: Any = Security(_BEARER)) -> Actor:
        db = context(request).read_db()
        try:
            actor = authenticate(db, request.headers.get("Authorization"))
        finally:
            db.conn.close()
        return check(actor, action)

    dependency.__name__ = f"need_{action.replace('.', '_')}"
    return dependency


#: The 400 answer to a write without an ``Idempotency-Key`` header.
MISSING_KEY = ("missing Idempotency-Key header: every write needs one (1-128 printable ASCII "
               "characters, unique per write; resend it on a retry)")
#: Where request validation reports that header missing (``host.web.errors`` turns it into 400).
KEY_LOC = ("header", "idempotency-key")


def idempotency_key(idempotency_key: str = Header(
        ..., description="unique per write; a retry with the same key and body returns the "
                         "first result, another body with it is 409")) -> str:
    """The write's ``Idempotency-Key`` header (InputError when malformed)."""
    check_key(idempotency_key)
    return idempotency_key


def replayed(response: Response, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` without its ``replayed`` flag, which goes to the ``Idempotent-Replayed``
    response header instead."""
    body = dict(result)
    response.headers["Idempotent-Replayed"] = "true" if body.pop("replayed", False) else "false"
    return body
