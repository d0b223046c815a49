# Runs on CPython (host): /v1/members — look-ups, top-ups, pass sales, redemptions, refunds.
"""Members: read with ``members.read``; sell with ``sales.write``; refund with ``refunds.write``.

Names and phones in every response are masks (``李*``, ``138****8000``): the API never shows a
member's personal data in full. A phone look-up goes through the keyed blind index.

Every POST needs an ``Idempotency-Key`` header, which becomes the admin call's idempotency
key: a retry returns the first body (``Idempotent-Replayed: true``) and writes nothing; the
same key for another request is 409.
"""

from __future__ import annotations

from typing import Annotated

import sqlite_utils
from fastapi import APIRouter, Depends, Path, Query, Response

from host.store import lookup
from host.web.context import WebContext
from host.web.deps import context, idempotency_key, need, read_db, replayed
from host.web.models import (ErrorOut, MemberList, MemberOut, PassSaleIn, PassSaleOut,
                             RedemptionIn, RedemptionOut, RefundIn, RefundOut, TopupIn,
                             TopupOut)
from host.web.permissions import Actor

ERRORS = {s: {"model": ErrorOut} for s in (400, 401, 403, 404, 409, 422, 503)}

router = APIRouter(prefix="/members", tags=["members"], responses=ERRORS)

_READ = Depends(need("members.read"))
_SELL = Depends(need("sales.write"))
_REFUND = Depends(need("refunds.write"))
_KEY = Depends(idempotency_key)
_CTX = Depends(context)
_DB = Depends(read_db)
MemberId = Annotated[int, Path(ge=1, le=2**63 - 1, description="member id")]


@router.get("", response_model=MemberList, summary="Find the member with a phone (masked)")
def by_phone(phone: str = Query(..., description="mainland mobile number: 11 digits, "
                                "spaces and dashes allowed, optional +86"),
             actor: Actor = _READ, db: sqlite_utils.Database = _DB) -> dict:
    return {"members": lookup.members_by_phone(db, phone)}


@router.get("/{member_id}", response_model=MemberOut, summary="A member")
def show(member_id: MemberId, actor: Actor = _READ, db: sqlite_utils.Database = _DB) -> dict:
    return lookup.member(db, member_id)


@router.post("/{member_id}/topups", response_model=TopupOut, status_code=201,
             summary="Top up stored value (cash received)")
def topup(member_id: MemberId, body: TopupIn, response: Response, actor: Actor = _SELL,
          key: str = _KEY, ctx: WebContext = _CTX) -> dict:
    return replayed(response, ctx.sale(actor, "topup", member_id, lambda admin: admin.topup(
        member_id, body.amount_fen, key=key)))


@router.post("/{member_id}/passes", response_model=PassSaleOut, status_code=201,
             summary="Sell a pass (a plan of the site policy)")
def sell_pass(member_id: MemberId, body: PassSaleIn, response: Response, actor: Actor = _SELL,
              key: str = _KEY, ctx: WebContext = _CTX) -> dict:
    return replayed(response, ctx.sale(actor, "pass", member_id, lambda admin: admin.sell_pass(
        member_id, body.plan, from_balance=body.from_balance, key=key)))


@router.post("/{member_id}/redemptions", response_model=RedemptionOut, status_code=201,
             summary="Redeem points for goods or bonus balance")
def redeem(member_id: MemberId, body: RedemptionIn, response: Response, actor: Actor = _SELL,
           key: str = _KEY, ctx: WebContext = _CTX) -> dict:
    return replayed(response, ctx.sale(
        actor, "redemption", member_id, lambda admin: admin.redeem_points(
            member_id, body.points, item=body.item, to_balance=body.to_balance, key=key)))


@router.post("/{member_id}/refunds", response_model=RefundOut, status_code=201,
             summary="Refund principal (admin scope)")
def refund(member_id: MemberId, body: RefundIn, response: Response, actor: Actor = _REFUND,
           key: str = _KEY, ctx: WebContext = _CTX) -> dict:
    return replayed(response, ctx.sale(actor, "refund", member_id, lambda admin: admin.refund(
        member_id, body.amount_fen, key=key)))
