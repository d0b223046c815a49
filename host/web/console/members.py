# Runs on CPython (host): member search, the member page, and its front-desk actions with receipts.
"""Handlers parse the form, check the actor, call one Admin method (through
``actions.run``, on the writer thread, audited) and render. Every money form carries an
idempotency key: the receipt number for a top-up, otherwise a key the page generated, so a
double click or a re-posted form is applied once (the second answer is the first receipt)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import Response

from host.errors import InputError, NotFound
from host.money import parse_yuan
from host.store import frontdesk
from host.web.console import actions, programme
from host.web.console.core import console, need, redirect, render
from host.web.console.permissions import StaffActor

router = APIRouter(prefix="/members")
_RECEIPT_RE = re.compile(r"[A-Za-z0-9-]{1,40}")
MemberId = Path(ge=1, le=2**63 - 1)


_key = actions.form_key


def _int(text: str, what: str) -> int:
    if not re.fullmatch(r"[0-9]{1,12}", (text or "").strip()):
        raise InputError(f"{what} must be a whole number")
    return int(text)


@router.get("")
def search(request: Request, q: str = "", actor: StaffActor = Depends(need("members.read"))
           ) -> Response:
    db = console(request).ctx.read_db()
    try:
        found = frontdesk.search(db, q)
    finally:
        db.conn.close()
    return render(request, "members.html", q=q, found=found)


@router.get("/{member_id}")
def member_page(request: Request, member_id: int = MemberId,
                actor: StaffActor = Depends(need("members.read"))) -> Response:
    ctx = console(request).ctx
    db = ctx.read_db()
    try:
        m = frontdesk.member_detail(db, member_id)
        coupons = programme.member_coupons(db, ctx.policy, member_id)
    finally:
        db.conn.close()
    return render(request, "member.html", m=m, plans=sorted(ctx.policy.plans),
                  tiers=list(ctx.policy.tiers), key=actions.new_form_key,
                  coupons=coupons, coupon_templates=sorted(ctx.policy.coupon_templates))


def _receipt(request: Request, actor: StaffActor, kind: str, member_id: int,
             result: dict[str, Any], key: str) -> Response:
    return render(request, "receipt.html", kind=kind, member_id=member_id, r=result, key=key,
                  staff=actor.name)


@router.post("/{member_id}/topup")
def topup(request: Request, member_id: int = MemberId, receipt: str = Form(""),
          amount: str = Form(""), actor: StaffActor = Depends(need("sales.write"))) -> Response:
    if not _RECEIPT_RE.fullmatch(receipt.strip()):
        raise InputError("a top-up needs the receipt number (letters, digits, dashes)")
    key = f"receipt-{receipt.strip()}"
    fen = parse_yuan(amount.strip())
    result = actions.run(console(request).ctx, actor,
                         lambda admin: admin.topup(member_id, fen, key=key), "topup")
    return _receipt(request, actor, "Top up", member_id, result, key)


@router.post("/{member_id}/refund")
def refund(request: Request, member_id: int = MemberId, amount: str = Form(""),
           key: str = Form(""), actor: StaffActor = Depends(need("refunds.write"))) -> Response:
    k, fen = _key(key), parse_yuan(amount.strip())
    result = actions.run(console(request).ctx, actor,
                         lambda admin: admin.refund(member_id, fen, key=k), "refund")
    return _receipt(request, actor, "Refund", member_id, result, k)


@router.post("/{member_id}/pass")
def sell_pass(request: Request, member_id: int = MemberId, plan: str = Form(""),
              from_balance: str = Form(""), key: str = Form(""),
              actor: StaffActor = Depends(need("sales.write"))) -> Response:
    k = _key(key)
    result = actions.run(console(request).ctx, actor, lambda admin: admin.sell_pass(
        member_id, plan, from_balance=bool(from_balance), key=k), "pass")
    return _receipt(request, actor, "Sell pass", member_id, result, k)


@router.post("/{member_id}/redeem")
def redeem(request: Request, member_id: int = MemberId, points: str = Form(""),
           item: str = Form(""), to_balance: str = Form(""), key: str = Form(""),
           actor: StaffActor = Depends(need("sales.write"))) -> Response:
    k, n = _key(key), _int(points, "points")
    result = actions.run(console(request).ctx, actor, lambda admin: admin.redeem_points(
        member_id, n, item=item.strip() or None, to_balance=bool(to_balance), key=k),
        "redemption")
    return _receipt(request, actor, "Redeem points", member_id, result, k)


@router.post("/{member_id}/cards")
def card(request: Request, member_id: int = MemberId, op: str = Form(""),
         uid: str = Form(""), new_uid: str = Form(""), key: str = Form(""),
         actor: StaffActor = Depends(need("cards.write"))) -> Response:
    k = _key(key)
    ops = {"enroll": lambda a: a.enroll_card(member_id, uid, key=k),
           "replace": lambda a: a.replace_card(uid, new_uid, key=k),
           "block": lambda a: a.set_card_status(uid, "blocked", key=k),
           "unblock": lambda a: a.set_card_status(uid, "active", key=k)}
    if op not in ops:
        raise InputError(f"unknown card operation {op!r}")
    actions.run(console(request).ctx, actor, ops[op])
    return redirect(request, f"/members/{member_id}")


@router.post("/{member_id}/edit")
def edit(request: Request, member_id: int = MemberId, tier: str = Form(""),
         status: str = Form(""), key: str = Form(""),
         actor: StaffActor = Depends(need("members.edit"))) -> Response:
    k = _key(key)
    actions.run(console(request).ctx, actor, lambda admin: admin.edit_member(
        member_id, tier=tier or None, status=status or None, key=k))
    return redirect(request, f"/members/{member_id}")


@router.post("/{member_id}/reverse")
def reverse(request: Request, member_id: int = MemberId, entry: str = Form(""),
            reason: str = Form(""), key: str = Form(""),
            actor: StaffActor = Depends(need("reversals.write"))) -> Response:
    k, entry_id = _key(key), _int(entry, "entry id")
    db = console(request).ctx.read_db()
    try:
        owner = frontdesk.ledger_entry_member(db, entry_id)
    finally:
        db.conn.close()
    if owner != member_id:
        raise NotFound(f"member {member_id} has no ledger entry {entry_id}")
    actions.run(console(request).ctx, actor, lambda admin: admin.reverse(
        entry_id, reason=reason.strip(), key=k))
    return redirect(request, f"/members/{member_id}")
