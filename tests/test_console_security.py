# Runs on CPython (pytest): the console's guards — login, CSRF, roles, lockout, cookies, escaping, idle timeout.
"""Security properties of the staff console over an in-process client of the real
application (real database, real Writer)."""

from __future__ import annotations

import sqlite3

import pytest
from fastapi.routing import APIRoute

from host.store import staff
from host.store.db import open_db
from host.web.console import PAGES
from host.web.console.permissions import RULES
from console_support import (PASSWORD, ConsoleSite, csrf_of)

PUBLIC = {"/login"}


def _console_routes(site: ConsoleSite) -> list[APIRoute]:
    return [r for page in PAGES for r in page.router.routes if isinstance(r, APIRoute)]


def _concrete(path: str, member_id: int) -> str:
    return (path.replace("{member_id}", str(member_id)).replace("{name}", "daily")
            .replace("{device_id}", "gate-1")
            .replace("{name}", "alice"))


def test_every_route_but_login_refuses_anonymous(console_site: ConsoleSite) -> None:
    c = console_site.client()
    token = csrf_of(c.get("/console/login").text)  # a valid CSRF pair: only the login lacks
    routes = _console_routes(console_site)
    assert len(routes) >= 15
    for route in routes:
        url = "/console" + _concrete(route.path, console_site.member_id)
        for method in route.methods:
            if route.path in PUBLIC:
                continue
            if method == "GET":
                r = c.get(url)
                assert r.status_code == 303, url
                assert r.headers["location"] == "/console/login"
            else:
                r = c.post(url, data={"csrf_token": token, "receipt": "X1", "amount": "1"})
                assert r.status_code == 401, url
    assert c.get("/console/login").status_code == 200
    assert c.get("/console/static/console-1.0.0.js").status_code == 200
    assert console_site.db_value("SELECT count(*) FROM audit_log WHERE actor NOT LIKE 'cli:%'"
                                 )[0] == 0


def test_every_route_names_a_known_action(console_site: ConsoleSite) -> None:
    for route in _console_routes(console_site):
        if route.path in PUBLIC or route.path == "/logout":
            continue
        names = [d.call.__name__ for d in route.dependant.dependencies]
        needs = [n for n in names if n.startswith("console_need_")]
        assert len(needs) == 1, route.path
        action = needs[0][len("console_need_"):].replace("_", ".", 1)
        assert action in RULES, route.path


def test_csrf_missing_or_wrong_is_403_and_writes_nothing(console_site: ConsoleSite) -> None:
    c = console_site.client()
    token = console_site.login(c, "alice")
    url = f"/console/members/{console_site.member_id}/topup"
    before = console_site.db_value("SELECT principal_fen FROM members")[0]
    assert c.post(url, data={"receipt": "R9", "amount": "5"}).status_code == 403
    assert c.post(url, data={"receipt": "R9", "amount": "5",
                             "csrf_token": "0" * 64}).status_code == 403
    other = console_site.client()  # another browser's valid token does not fit this cookie
    assert c.post(url, data={"receipt": "R9", "amount": "5",
                             "csrf_token": csrf_of(other.get("/console/login").text)}
                  ).status_code == 403
    assert console_site.db_value("SELECT principal_fen FROM members")[0] == before
    assert c.post(url, data={"receipt": "R9", "amount": "5",
                             "csrf_token": token}).status_code == 200
    assert console_site.db_value("SELECT principal_fen FROM members")[0] == before + 500


def test_login_form_needs_csrf_too(console_site: ConsoleSite) -> None:
    c = console_site.client()
    c.get("/console/login")
    r = c.post("/console/login", data={"name": "alice", "password": PASSWORD})
    assert r.status_code == 403 and "tk_session" not in r.cookies


def test_member_name_is_escaped(console_site: ConsoleSite) -> None:
    c = console_site.client()
    token = console_site.login(c, "alice")
    db = open_db(console_site.path)
    try:
        from host.admin import Admin
        mid = Admin(db, console_site.policy).add_member(
            "<script>alert(1)</script>", consent_terms="t1")["member_id"]
    finally:
        db.conn.close()
    assert token
    # Pages show the masked name ("<*"): its one character is escaped too.
    for page in (c.get("/console/members", params={"q": "<"}).text,
                 c.get(f"/console/members/{mid}").text):
        assert "<script>" not in page and "<*" not in page
        assert "&lt;*" in page


def test_lockout_after_repeated_bad_passwords(console_site: ConsoleSite) -> None:
    c = console_site.client()
    token = csrf_of(c.get("/console/login").text)

    def attempt(password: str) -> int:
        return c.post("/console/login", data={"name": "alice", "password": password,
                                              "csrf_token": token}).status_code
    assert [attempt("wrong-one") for _ in range(4)] == [401] * 4
    assert attempt("wrong-one") == 429
    assert attempt(PASSWORD) == 429  # locked: even the right password is refused
    assert console_site.client().post("/console/login", data={
        "name": "bob", "password": PASSWORD,
        "csrf_token": token}).status_code == 403  # other client: no CSRF cookie
    console_site.clock.now += 901
    assert attempt(PASSWORD) == 303


def test_session_cookie_flags(console_site: ConsoleSite) -> None:
    c = console_site.client()
    token = csrf_of(c.get("/console/login").text)
    r = c.post("/console/login", data={"name": "bob", "password": PASSWORD, "csrf_token": token})
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("tk_session="))
    flags = {f.strip().lower() for f in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/console"} <= flags
    assert "secure" not in flags
    tls = console_site.client()
    tls.base_url = tls.base_url.copy_with(scheme="https")
    token = csrf_of(tls.get("/console/login").text)
    r = tls.post("/console/login", data={"name": "bob", "password": PASSWORD,
                                         "csrf_token": token})
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("tk_session="))
    assert "secure" in {f.strip().lower() for f in cookie.split(";")[1:]}


def test_idle_timeout_and_logout(console_site: ConsoleSite) -> None:
    c = console_site.client(idle_s=600)
    token = console_site.login(c, "alice")
    assert c.get("/console/").status_code == 200
    console_site.clock.now += 599
    assert c.get("/console/").status_code == 200  # use restarts the idle clock
    console_site.clock.now += 601
    assert c.get("/console/").headers.get("location") == "/console/login"
    token = console_site.login(c, "alice")
    assert c.post("/console/logout", data={"csrf_token": token}).status_code == 303
    assert c.get("/console/").headers.get("location") == "/console/login"


@pytest.mark.parametrize("name,path,status", [
    ("alice", "/console/reports", 403), ("alice", "/console/audit", 403),
    ("alice", "/console/staff", 403), ("alice", "/console/devices", 403),
    ("tom", "/console/members?q=Li", 403), ("tom", "/console/devices", 200),
    ("bob", "/console/devices", 403), ("bob", "/console/audit", 200),
    ("tom", "/console/", 200), ("alice", "/console/members?q=Li", 200)])
def test_roles_decide_on_the_server(console_site: ConsoleSite, name: str, path: str,
                                    status: int) -> None:
    c = console_site.client()
    console_site.login(c, name)
    assert c.get(path).status_code == status


def test_cashier_refund_posted_directly_is_403(console_site: ConsoleSite) -> None:
    c = console_site.client()
    token = console_site.login(c, "alice")
    r = c.post(f"/console/members/{console_site.member_id}/refund",
               data={"amount": "10", "key": "k" * 12, "csrf_token": token})
    assert r.status_code == 403
    assert console_site.db_value("SELECT principal_fen FROM members")[0] == 10000
    assert console_site.db_value("SELECT count(*) FROM audit_log WHERE action = 'refund'")[0] == 0


def test_disabled_account_is_logged_out_and_cannot_log_in(console_site: ConsoleSite) -> None:
    app = console_site.app()
    cashier, manager = console_site.client(app), console_site.client(app)
    console_site.login(cashier, "alice")
    token = console_site.login(manager, "bob")
    assert manager.post("/console/staff/alice/active",
                        data={"active": "0", "csrf_token": token}).status_code == 303
    assert cashier.get("/console/").status_code == 303
    login = csrf_of(cashier.get("/console/login").text)
    assert cashier.post("/console/login", data={"name": "alice", "password": PASSWORD,
                                                "csrf_token": login}).status_code == 401
    row = console_site.db_value("SELECT actor, action, before, after FROM audit_log "
                                "ORDER BY id DESC LIMIT 1")
    assert row[:2] == ("bob", "staff.disable") and '"active":true' in row[2]


def test_audit_log_is_append_only(console_site: ConsoleSite) -> None:
    db = open_db(console_site.path)
    try:
        assert db.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 3
        for sql in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(sql)
    finally:
        db.conn.close()


def test_passwords_are_stored_hashed(console_site: ConsoleSite) -> None:
    stored = console_site.db_value("SELECT pw_hash FROM staff WHERE name = 'alice'")[0]
    assert stored.startswith("scrypt$") and PASSWORD not in stored
    assert staff.verify_password(stored, PASSWORD)
    assert not staff.verify_password(stored, PASSWORD + "x")


def test_language_defaults_to_chinese_and_switches(console_site: ConsoleSite) -> None:
    c = console_site.client()
    assert "登录" in c.get("/console/login").text
    r = c.get("/console/login?lang=en")
    assert "Log in" in r.text and "登录" not in r.text.replace("中文", "")
    assert "Log in" in c.get("/console/login").text  # kept in a cookie
