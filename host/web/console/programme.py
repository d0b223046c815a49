# Runs on CPython (host): console pages of the membership programme — a manager's coupon, the campaigns.
"""``POST /members/{id}/coupons``: a manager issues a coupon of a policy template to the
member (CSRF, the page's idempotency key, audited through ``actions.run``; a cashier is
refused 403 — coupons are issued by the policy's rules or by a manager). ``GET /campaigns``:
the policy's campaigns, their windows and whether each is on today, read-only. The member
page lists the member's coupons (``member_coupons``, included by ``member.html``)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import sqlite_utils
from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import Response

from host.errors import InputError
from host.rules import campaigns
from host.rules.policy import Policy
from host.store import views
from host.web.console import actions
from host.web.console.core import console, need, redirect, render
from host.web.console.permissions import StaffActor

router = APIRouter()
MemberId = Path(ge=1, le=2**63 - 1)


def member_coupons(db: sqlite_utils.Database, policy: Policy, member_id: int
                   ) -> list[dict[str, Any]]:
    """The member's coupons for the member page: open, used and expired, expiring first."""
    return views.coupons(db, member_id, int(datetime.now(policy.tz).timestamp()), True)


@router.post("/members/{member_id}/coupons")
def issue(request: Request, member_id: int = MemberId, template: str = Form(""),
          key: str = Form(""), actor: StaffActor = Depends(need("coupons.issue"))) -> Response:
    if not re.fullmatch(r"[A-Za-z0-9_-]{8,64}", key or ""):
        raise InputError("the form has no valid key: reload the page")
    k = "console-" + key
    actions.run(console(request).ctx, actor, lambda admin: admin.issue_coupon(
        member_id, template.strip(), key=k))
    return redirect(request, f"/members/{member_id}")


@router.get("/campaigns")
def campaigns_page(request: Request, actor: StaffActor = Depends(need("campaigns.read"))
                   ) -> Response:
    policy = console(request).ctx.policy
    return render(request, "campaigns.html",
                  campaigns=campaigns.describe(policy, datetime.now(policy.tz)))
