# Runs on CPython (host): /kiosk/{device} — the kiosk touch screen, served from local files only.
"""The kiosk screen: a touch page (zh-CN and English) that sells the policy's products on
one reader through the /v1 API. Every asset is served from ``host/web/static/kiosk/`` (no
CDN). The page holds no secret: it reads a ``sales``-scoped API token from its URL fragment
(``/kiosk/K1#token=...``), which browsers never send to the server, and keeps it in the
tab's session storage (``docs/integrators.md``, "Build a kiosk")."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from host.errors import NotFound
from host.store.devices import check_device_id

router = APIRouter(prefix="/kiosk", include_in_schema=False)

_TYPES = {"kiosk.js": "text/javascript; charset=utf-8", "kiosk.css": "text/css; charset=utf-8"}


def _asset(name: str) -> str:
    return resources.files("host.web").joinpath(f"static/kiosk/{name}").read_text("utf-8")


@router.get("/static/{name}")
def asset(name: str) -> Response:
    if name not in _TYPES:
        raise NotFound(f"no kiosk asset {name!r}")
    return Response(_asset(name), media_type=_TYPES[name],
                    headers={"Cache-Control": "no-cache"})


@router.get("/{device_id}")
def page(device_id: str) -> HTMLResponse:
    check_device_id(device_id)
    return HTMLResponse(_asset("kiosk.html").replace("{{device}}", device_id),
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
