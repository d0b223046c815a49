# Runs on CPython (host): /v1/campaigns — the policy's campaigns, their windows and whether each is on.
"""The campaigns of the site policy (``[campaigns.<name>]``, read with ``members.read``):
each with its window (site dates, inclusive), the kinds it applies to, whether it is on
today, and what it changes (points multiplier, extra discount, top-up ladder, coupon)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends

from host.rules import campaigns
from host.web.context import WebContext
from host.web.deps import context, need
from host.web.models import CampaignList, ErrorOut
from host.web.permissions import Actor

router = APIRouter(tags=["campaigns"],
                   responses={s: {"model": ErrorOut} for s in (401, 403)})


@router.get("/campaigns", response_model=CampaignList, summary="The policy's campaigns")
def listing(actor: Actor = Depends(need("members.read")),
            ctx: WebContext = Depends(context)) -> dict:
    return {"campaigns": campaigns.describe(ctx.policy, datetime.now(ctx.policy.tz))}
