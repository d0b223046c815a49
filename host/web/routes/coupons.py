# Runs on CPython (host): /v1/members/{id}/coupons — a member's coupons, and a manager issuing one.
"""A member's coupons (``members.read``: open ones, ``?all=true`` used and expired too) and
issuing one of the policy's templates (``coupons.issue``: admin tokens only — coupons are
issued by the policy's rules or by a manager). Issuing needs an ``Idempotency-Key``: a retry
returns the first coupon (``Idempotent-Replayed: true``) and issues nothing more."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import sqlite_utils
from fastapi import APIRouter, Depends, Path, Query, Response

from host.store import views
from host.web.context import WebContext
from host.web.deps import context, idempotency_key, need, read_db, replayed
from host.web.models import CouponIn, CouponIssued, CouponList, ErrorOut
from host.web.permissions import Actor

ERRORS = {s: {"model": ErrorOut} for s in (400, 401, 403, 404, 409, 422, 503)}

router = APIRouter(prefix="/members", tags=["coupons"], responses=ERRORS)

_READ = Depends(need("members.read"))
_ISSUE = Depends(need("coupons.issue"))
_KEY = Depends(idempotency_key)
_CTX = Depends(context)
_DB = Depends(read_db)
MemberId = Annotated[int, Path(ge=1, le=2**63 - 1, description="member id")]


@router.get("/{member_id}/coupons", response_model=CouponList,
            summary="A member's coupons, expiring first")
def listing(member_id: MemberId, all: bool = Query(False, description="also used and expired"),
            actor: Actor = _READ, ctx: WebContext = _CTX,
            db: sqlite_utils.Database = _DB) -> dict:
    ts = int(datetime.now(ctx.policy.tz).timestamp())
    return {"coupons": views.coupons(db, member_id, ts, all)}


@router.post("/{member_id}/coupons", response_model=CouponIssued, status_code=201,
             summary="Issue a coupon of a policy template (admin scope: a manager's coupon)")
def issue(member_id: MemberId, body: CouponIn, response: Response, actor: Actor = _ISSUE,
          key: str = _KEY, ctx: WebContext = _CTX) -> dict:
    return replayed(response, ctx.write(actor, lambda admin: admin.issue_coupon(
        member_id, body.template, key=key)))
