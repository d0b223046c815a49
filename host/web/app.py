# Runs on CPython (host): the /v1 ASGI application factory (FastAPI).
"""``create_app(ctx)`` -> the FastAPI application of the daemon's HTTP API.

Routes live one module per resource in ``host.web.routes``; permissions in
``host.web.permissions``; errors in ``host.web.errors``. The OpenAPI document is at
``/v1/openapi.json`` and a small offline page that renders it at ``/v1/docs`` (no CDN).
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from host.web import console, errors
from host.web.context import WebContext
from host.web.routes import campaigns, cards, coupons, events, kiosk, members, sales

API_VERSION = "1"
PREFIX = "/v1"


def _docs_page() -> str:
    return resources.files("host.web").joinpath("static/docs.html").read_text("utf-8")


def create_app(ctx: WebContext) -> FastAPI:
    """The API application over ``ctx`` (writer, read connections, policy, event bus)."""
    app = FastAPI(title="tapkiosk", version=API_VERSION,
                  description="Members, cards, sales and events of one tapkiosk site. "
                              "Money is integer fen; every write takes an Idempotency-Key.",
                  openapi_url=f"{PREFIX}/openapi.json", docs_url=None, redoc_url=None)
    app.state.ctx = ctx
    errors.install(app)
    for module in (members, coupons, cards, events, sales, campaigns):
        app.include_router(module.router, prefix=PREFIX)
    app.include_router(kiosk.router)
    page = _docs_page()
    console.mount(app, ctx)  # the staff console at /console (host.web.console)

    @app.get(f"{PREFIX}/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(page)

    return app
