# Runs on CPython (host): console login (with lockout) and logout.
"""``GET/POST /login`` (the only public routes) and ``POST /logout``."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from host.store import staff
from host.web.console.core import (SESSION_COOKIE, console, public, redirect, render,
                                   set_cookie)

router = APIRouter()


@router.get("/login")
@public
def login_page(request: Request) -> Response:
    if getattr(request.state, "actor", None) is not None:
        return redirect(request, "/")
    return render(request, "login.html", error=None)


@router.post("/login")
@public
def login(request: Request, name: str = Form(""), password: str = Form("")) -> Response:
    con = console(request)
    name = name.strip()
    if con.throttle.locked(name):
        return render(request, "login.html", status=429,
                      error="Too many wrong passwords: this account is locked for a while.")
    db = con.ctx.read_db()
    try:
        who = staff.authenticate(db, name, password)
    finally:
        db.conn.close()
    if who is None:
        locked = con.throttle.failed(name)
        return render(request, "login.html", status=429 if locked else 401,
                      error="Too many wrong passwords: this account is locked for a while."
                      if locked else "Wrong name or password.")
    con.throttle.succeeded(name)
    con.sessions.end(request.cookies.get(SESSION_COOKIE))
    response = redirect(request, "/")
    set_cookie(request, response, SESSION_COOKIE, con.sessions.create(who["name"], who["role"],
                                                                   who.get("store")))
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    console(request).sessions.end(request.cookies.get(SESSION_COOKIE))
    response = redirect(request, "/login")
    response.delete_cookie(SESSION_COOKIE, path=request.scope.get("root_path") or "/")
    return response
