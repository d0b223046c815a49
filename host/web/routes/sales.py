# Runs on CPython (host): /v1/devices/{id}/sales, /v1/sales/{id} and /v1/products — sales on readers.
"""Sales on kiosk and wash readers (``sales.write`` to arm and cancel, ``sales.read`` to
follow one). Arming needs an ``Idempotency-Key``: a retry returns the first sale
(``Idempotent-Replayed: true``) and arms nothing. The daemon's sales desk
(:class:`host.site.sales.SaleDesk`) does the work; this module parses and renders.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Path, Query, Response

from host.store.devices import check_device_id
from host.web.context import WebContext
from host.web.deps import context, idempotency_key, need, replayed
from host.web.models import ErrorOut, ProductList, SaleIn, SaleOut
from host.web.permissions import Actor

ERRORS = {s: {"model": ErrorOut} for s in (400, 401, 403, 404, 409, 422, 503)}

router = APIRouter(tags=["sales"], responses=ERRORS)

_SELL = Depends(need("sales.write"))
_READ = Depends(need("sales.read"))
_KEY = Depends(idempotency_key)
_CTX = Depends(context)
SaleId = Annotated[int, Path(ge=1, le=2**32 - 1, description="sale id")]
#: Longest long poll (``?wait=``), seconds.
MAX_WAIT_S = 60


@router.post("/devices/{device_id}/sales", response_model=SaleOut, status_code=201,
             summary="Arm a sale on a kiosk or wash reader; its next tap pays it")
async def arm(device_id: str, body: SaleIn, response: Response, actor: Actor = _SELL,
              key: str = _KEY, ctx: WebContext = _CTX) -> dict:
    check_device_id(device_id)
    items = [i.model_dump() for i in body.items]
    sale = await anyio.to_thread.run_sync(lambda: ctx.desk().arm(
        device_id, amount_fen=body.amount_fen, items=items, service=body.service,
        timeout_s=body.timeout_s, key=key, actor=actor.name, points=body.points))
    return replayed(response, sale)


@router.get("/sales/{sale_id}", response_model=SaleOut, summary="A sale (long poll: ?wait=s)")
async def show(sale_id: SaleId, wait: int = Query(0, ge=0, le=MAX_WAIT_S,
                                                  description="wait up to this many seconds "
                                                  "for an armed sale to settle"),
               actor: Actor = _READ, ctx: WebContext = _CTX) -> dict:
    desk = ctx.desk()
    if wait:
        return await anyio.to_thread.run_sync(lambda: desk.wait(sale_id, wait))
    return await anyio.to_thread.run_sync(lambda: desk.get(sale_id))


@router.delete("/sales/{sale_id}", response_model=SaleOut,
               summary="Cancel an armed sale (never charged afterwards)")
async def cancel(sale_id: SaleId, actor: Actor = _SELL, ctx: WebContext = _CTX) -> dict:
    return await anyio.to_thread.run_sync(lambda: ctx.desk().cancel(sale_id))


@router.get("/products", response_model=ProductList, summary="The sales catalogue")
def products(kind: str | None = Query(None, description="only products sold on kiosk|wash"),
             actor: Actor = _READ, ctx: WebContext = _CTX) -> dict:
    return {"products": [{"id": p.id, "name": p.name, "price_fen": p.price_fen,
                          "kinds": list(p.kinds)} for p in ctx.policy.products.values()
                         if kind is None or kind in p.kinds]}
