# Runs on CPython (host): every error of the /v1 API as a status code and a one-line JSON body.
"""Errors to HTTP: ``{"error": "<one line>"}`` with a status chosen from the host exception
(:data:`STATUS`), the request validation (422) or the routing (404, 405)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from host.errors import Conflict, HostError, InputError, InsufficientFunds, NotFound
from host.site.writer import WriterClosed
from host.store.outage import StoreUnavailable
from host.web.context import NoSales, WriteTimeout
from host.web.deps import KEY_LOC, MISSING_KEY
from host.web.permissions import Forbidden, Unauthorized

log = logging.getLogger("tapkiosk.web")

#: Host exception -> HTTP status; the first matching class wins, other HostErrors are 500.
STATUS: list[tuple[type[HostError], int]] = [
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (InsufficientFunds, 409),
    (InputError, 400),
    (WriteTimeout, 503),
    (NoSales, 503),
    (WriterClosed, 503),
    (StoreUnavailable, 503),   # a chain store cut off from the chain's database
]


def one_line(text: str) -> str:
    """``text`` on one line (an error body never spans lines)."""
    return " ".join(str(text).split()) or "error"


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error response."""
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def status_of(exc: HostError) -> int:
    """The HTTP status of a host exception."""
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


async def _host_error(request: Request, exc: HostError) -> JSONResponse:
    status = status_of(exc)
    if status == 500:
        log.error("%s %s failed: %s: %s", request.method, request.url.path,
                  type(exc).__name__, exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error(status, str(exc), headers)


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    if any(tuple(e.get("loc", ())) == KEY_LOC for e in exc.errors()):
        return error(400, MISSING_KEY)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return error(422, f"{where}: {first.get('msg')}" if where else first.get("msg", ""))


async def _http(request: Request, exc: HTTPException) -> JSONResponse:
    return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return error(500, "internal error (see the daemon's log)")


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(HostError, _host_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
