# Runs on CPython (host): console request plumbing — the gate (CSRF, session), permissions, rendering, errors.
"""Shared by every console page.

:func:`gate` runs before every route (an application dependency): it checks the CSRF token
of every POST, finds the session's :class:`StaffActor` and refuses anonymous access to every
route not marked :func:`public`. :func:`need` then checks the action (one rule table in
``host.web.console.permissions``). :func:`render` fills a Jinja template (autoescaped).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from host.errors import Conflict, HostError, InputError, InsufficientFunds, NotFound
from host.money import format_fen
from host.web.console import i18n
from host.web.console.csrf import CSRF_COOKIE, NEW_COOKIE, Csrf
from host.store.outage import StoreUnavailable
from host.web.console.permissions import LoginRequired, StaffActor, allowed, check
from host.web.console.sessions import SESSION_COOKIE, LoginThrottle, SessionStore
from host.web.context import NoSales, WebContext, WriteTimeout
from host.web.permissions import Forbidden

#: Version of the vendored console assets (in their file names, so caches never go stale).
ASSETS = "1.0.0"


@dataclass
class ConsoleConfig:
    """Session and lockout settings (seconds); ``clock`` is monotonic."""

    idle_s: float = 900.0
    max_failures: int = 5
    lockout_s: float = 900.0
    clock: Callable[[], float] = time.monotonic


@dataclass
class Console:
    """The console's state: the web context, sessions, login throttle, CSRF, templates."""

    ctx: WebContext
    config: ConsoleConfig = field(default_factory=ConsoleConfig)

    def __post_init__(self) -> None:
        c = self.config
        self.sessions = SessionStore(c.idle_s, c.clock)
        self.throttle = LoginThrottle(c.max_failures, c.lockout_s, c.clock)
        self.csrf = Csrf()
        folder = resources.files("host.web.console").joinpath("templates")
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(folder)), autoescape=True,
            undefined=jinja2.StrictUndefined)


def console(request: Request) -> Console:
    return request.app.state.console


def public(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a route that anonymous visitors may reach (the login page only)."""
    fn.console_public = True  # type: ignore[attr-defined]
    return fn


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


async def gate(request: Request) -> None:
    """CSRF on every POST; the session's actor; anonymous access refused except public routes."""
    con = console(request)
    await con.csrf.check(request)
    session = con.sessions.get(request.cookies.get(SESSION_COOKIE))
    request.state.actor = (StaffActor(session.name, session.role, client_address(request),
                                      session.store) if session else None)
    if session is None and not getattr(request.scope.get("endpoint"), "console_public", False):
        raise LoginRequired("log in first")


def need(action: str) -> Callable[[Request], StaffActor]:
    """A dependency giving the request's actor once it may do ``action``."""

    def dependency(request: Request) -> StaffActor:
        return check(getattr(request.state, "actor", None), action)

    dependency.__name__ = f"console_need_{action.replace('.', '_')}"
    return dependency


def base(request: Request) -> str:
    """Where the console is mounted (``/console``)."""
    return request.scope.get("root_path", "").rstrip("/")


def local_time(request: Request) -> Callable[[int | None], str]:
    tz = console(request).ctx.policy.tz

    def fmt(ts: int | None) -> str:
        return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"
    return fmt


def _fen(v: int | None) -> str:
    """Yuan of ``v``; ``-`` for None (counter cash in a store's report row names no store)."""
    return "-" if v is None else format_fen(v)


def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """The page ``template`` with ``values`` and what every page needs."""
    con = console(request)
    lang = i18n.pick(request.query_params.get("lang"), request.cookies.get(i18n.LANG_COOKIE))
    actor = getattr(request.state, "actor", None)
    page = con.templates.get_template(template).render(
        request=request, actor=actor, can=lambda action: allowed(actor, action),
        csrf=con.csrf.token(request), lang=lang, t=i18n.translator(lang), base=base(request),
        fen=_fen, when=local_time(request), assets=ASSETS, **values)
    response = HTMLResponse(page, status_code=status,
                            headers={"Cache-Control": "no-store",
                                     "Content-Security-Policy": "default-src 'self'; "
                                     "img-src 'self' data:; frame-ancestors 'none'",
                                     "X-Content-Type-Options": "nosniff"})
    fresh = getattr(request.state, NEW_COOKIE, None)
    if fresh:
        set_cookie(request, response, CSRF_COOKIE, fresh)
    if request.query_params.get("lang") in i18n.LANGS:
        set_cookie(request, response, i18n.LANG_COOKIE, lang)
    return response


def set_cookie(request: Request, response: Any, name: str, value: str) -> None:
    """HttpOnly, SameSite=Strict, Secure under TLS, scoped to the console."""
    response.set_cookie(name, value, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path=base(request) or "/")


def redirect(request: Request, path: str) -> RedirectResponse:
    return RedirectResponse(base(request) + path, status_code=303)


STATUS: list[tuple[type[HostError], int]] = [
    (Forbidden, 403), (NotFound, 404), (Conflict, 409), (InsufficientFunds, 409),
    (InputError, 400), (WriteTimeout, 503), (NoSales, 503), (StoreUnavailable, 503)]


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", status=status, status_code=status, message=message)


async def host_error(request: Request, exc: HostError) -> Any:
    if isinstance(exc, LoginRequired):
        if request.method == "GET":
            return redirect(request, "/login")
        return error_page(request, 401, str(exc))
    status = next((s for cls, s in STATUS if isinstance(exc, cls)), 500)
    return error_page(request, status, str(exc))
