# Runs on CPython (host): the staff web console (front desk) — pages, sessions, CSRF, roles.
"""``create_console(ctx)`` -> the console's ASGI application, mounted by the daemon's web
server at ``/console`` beside the ``/v1`` API (``mount(app, ctx)``).

Every route but the login page needs a session (``core.gate``); every route names the action
it needs (``permissions.RULES``); every POST needs its CSRF token (``csrf``). Static assets
are served from this package (``static/``, the version in each file name): no CDN.
"""

from __future__ import annotations

from importlib import resources

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from host.errors import HostError
from host.web.console import (auth, dashboard, devices, members, programme, reports,
                                staff_pages)
from host.web.console.core import Console, ConsoleConfig, error_page, gate, host_error
from host.web.context import WebContext

#: Where the daemon's web server mounts the console.
PREFIX = "/console"
#: The page modules, each with its ``router``.
PAGES = (auth, dashboard, members, programme, reports, devices, staff_pages)


def create_console(ctx: WebContext, config: ConsoleConfig | None = None) -> FastAPI:
    """The console application over ``ctx``."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None,
                  dependencies=[Depends(gate)])
    app.state.console = Console(ctx, config or ConsoleConfig())
    app.add_exception_handler(HostError, host_error)

    async def http_error(request, exc: HTTPException):  # type: ignore[no-untyped-def]
        return error_page(request, exc.status_code, str(exc.detail))

    async def bad_request(request, exc: RequestValidationError):  # type: ignore[no-untyped-def]
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_page(request, 400, f"{where}: {first.get('msg', 'invalid request')}")

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, bad_request)
    static = resources.files("host.web.console").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    for module in PAGES:
        app.include_router(module.router)
    return app


def mount(app: FastAPI, ctx: WebContext, config: ConsoleConfig | None = None) -> FastAPI:
    """Mount the console at :data:`PREFIX` of the daemon's application; returns the console."""
    console = create_console(ctx, config)
    app.mount(PREFIX, console)
    return console
