# Runs on CPython (host): CSRF protection of every console form (signed double-submit cookie).
"""CSRF: every unsafe request (POST) must carry a ``csrf_token`` form field equal to the
HMAC of the browser's ``tk_csrf`` cookie under the console's secret.

The cookie is random, HttpOnly and SameSite=Strict; another site can neither read it nor
compute the token, so a forged form fails (403). Works before login too (the login form).
Modelled on Datasette's asgi-csrf.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request

from host.web.permissions import Forbidden

CSRF_COOKIE = "tk_csrf"
FIELD = "csrf_token"
#: Where a request keeps the cookie it hands out (``core.render`` sets it on the response).
NEW_COOKIE = "new_csrf_cookie"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Csrf:
    """Token issue and check, under one secret per console application."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def _sign(self, cookie: str) -> str:
        return hmac.new(self._secret, cookie.encode("utf-8"), hashlib.sha256).hexdigest()

    def cookie_of(self, request: Request) -> str:
        """The request's CSRF cookie, or a new one (the page's response sets it)."""
        value = request.cookies.get(CSRF_COOKIE)
        if value and len(value) <= 100:
            return value
        fresh = getattr(request.state, NEW_COOKIE, None)
        if fresh is None:
            fresh = secrets.token_urlsafe(24)
            setattr(request.state, NEW_COOKIE, fresh)
        return fresh

    def token(self, request: Request) -> str:
        """The token a page puts in its forms."""
        return self._sign(self.cookie_of(request))

    async def check(self, request: Request) -> None:
        """Forbidden unless an unsafe request carries the right token."""
        if request.method not in UNSAFE:
            return
        cookie = request.cookies.get(CSRF_COOKIE)
        form = await request.form()
        sent = form.get(FIELD)
        if not cookie or not isinstance(sent, str) or \
                not hmac.compare_digest(sent, self._sign(cookie)):
            raise Forbidden("missing or wrong CSRF token: reload the page and try again")
