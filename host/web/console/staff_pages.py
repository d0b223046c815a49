# Runs on CPython (host): the manager's pages — staff accounts and the audit log.
"""``/staff`` (list, add, enable/disable) and ``/audit`` (filter by staff, action, member)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from host.errors import InputError
from host.store import audit, staff
from host.web.console import actions
from host.web.console.core import console, need, redirect, render
from host.web.console.permissions import StaffActor

router = APIRouter()


@router.get("/staff")
def staff_page(request: Request, actor: StaffActor = Depends(need("staff.manage"))
               ) -> Response:
    db = console(request).ctx.read_db()
    try:
        people = staff.list_staff(db)
    finally:
        db.conn.close()
    return render(request, "staff.html", people=people, roles=staff.ROLES)


@router.post("/staff")
def add_staff(request: Request, name: str = Form(""), role: str = Form(""),
              password: str = Form(""), actor: StaffActor = Depends(need("staff.manage"))
              ) -> Response:
    actions.store_write(console(request).ctx, lambda db: staff.add_staff(
        db, name.strip(), role, password, actor=actor.name, client=actor.client))
    return redirect(request, "/staff")


@router.post("/staff/{name}/active")
def set_active(request: Request, name: str, active: str = Form(""),
               actor: StaffActor = Depends(need("staff.manage"))) -> Response:
    if active not in ("0", "1"):
        raise InputError("active must be 0 or 1")
    if name == actor.name:
        raise InputError("you cannot disable your own account")
    con = console(request)
    actions.store_write(con.ctx, lambda db: staff.set_active(
        db, name, active == "1", actor=actor.name, client=actor.client))
    if active == "0":
        con.sessions.end_all(name)
    return redirect(request, "/staff")


@router.get("/audit")
def audit_page(request: Request, who: str = "", action: str = "", member: str = "",
               actor: StaffActor = Depends(need("audit.read"))) -> Response:
    member = member.strip()
    if member and not member.isdigit():
        raise InputError("member must be a member id")
    db = console(request).ctx.read_db()
    try:
        rows = audit.rows(db, actor=who or None, action=action.strip() or None,
                          member_id=int(member) if member else None)
        names = audit.actors(db)
    finally:
        db.conn.close()
    return render(request, "audit.html", rows=rows, names=names, who=who, action=action,
                  member=member)
