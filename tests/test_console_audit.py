# Runs on CPython (pytest): the audit log — written by the change's own transaction, from the console, the CLI and the API.
"""Who did what: every audited write appends one row in the same transaction as the change
(a refused write leaves none, a replay adds none); ``tapkiosk staff`` and ``tapkiosk audit``;
the /v1 API's writes are audited as ``api:<token name>``."""

from __future__ import annotations

import io
import json

import pytest

from host.admin import Admin
from host.cli.app import main
from host.errors import InsufficientFunds
from host.store import audit
from host.store.db import open_db
from host.store.tokens import add_token
from host.web.app import create_app
from fastapi.testclient import TestClient
from console_support import PASSWORD, ConsoleSite, csrf_of


def _audit_rows(site: ConsoleSite, **filters) -> list[dict]:
    db = open_db(site.path)
    try:
        return audit.rows(db, **filters)
    finally:
        db.conn.close()


def test_refused_write_and_replay_leave_no_row(console_site: ConsoleSite) -> None:
    db = open_db(console_site.path)
    try:
        admin = Admin(db, console_site.policy, actor="bob", client="10.0.0.9")
        with pytest.raises(InsufficientFunds):
            admin.refund(console_site.member_id, 999_999, key="too-much")
        assert audit.rows(db, actor="bob") == []
        first = admin.topup(console_site.member_id, 500, key="rcpt-1")
        again = admin.topup(console_site.member_id, 500, key="rcpt-1")
        assert again["replayed"] and not first["replayed"]
        rows = audit.rows(db, actor="bob")
        assert len(rows) == 1
        row = rows[0]
        assert (row["action"], row["member_id"], row["client"], row["op_key"]) == \
            ("topup", console_site.member_id, "10.0.0.9", "rcpt-1")
        assert row["before"]["principal_fen"] == 10000
        assert row["after"]["principal_fen"] == 10500
        Admin(db, console_site.policy).topup(console_site.member_id, 100, key="no-actor")
        assert len(audit.rows(db)) == 4  # 3 staff seeds + bob's top-up: no actor, no row
    finally:
        db.conn.close()


def test_console_actions_are_audited_with_staff_and_address(console_site: ConsoleSite) -> None:
    c = console_site.client()
    token = console_site.login(c, "alice")
    mid = console_site.member_id
    page = c.get(f"/console/members/{mid}").text
    key = page.split('name="key" value="')[1].split('"')[0]
    r = c.post(f"/console/members/{mid}/cards", data={"op": "block", "uid": "04A1B2C3D4E5F6",
                                                      "key": key, "csrf_token": token})
    assert r.status_code == 303
    (row,) = _audit_rows(console_site, action="card")
    assert (row["actor"], row["action"], row["member_id"]) == ("alice", "card.status", mid)
    assert row["before"]["card_04A1B2C3D4E5F6"]["status"] == "active"
    assert row["after"]["status"] == "blocked" and row["client"] == "testclient"


def test_manager_filters_the_audit_page(console_site: ConsoleSite) -> None:
    c = console_site.client()
    token = console_site.login(c, "bob")
    mid = console_site.member_id
    for receipt in ("A-1", "A-2"):
        c.post(f"/console/members/{mid}/topup", data={"receipt": receipt, "amount": "1",
                                                      "csrf_token": token})
    page = c.get("/console/audit", params={"who": "bob", "action": "topup"}).text
    assert page.count('class="audit-row"') == 2
    assert c.get("/console/audit", params={"who": "alice"}).text.count('class="audit-row"') == 0


def test_cli_staff_and_audit_commands(console_site: ConsoleSite, monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    db = str(console_site.path)
    assert main(["--db", db, "staff", "add", "carol", "--role", "cashier"]) == 0
    assert main(["--db", db, "staff", "add", "carol", "--role", "cashier"]) == 2  # taken
    assert main(["--db", db, "staff", "role", "carol", "manager"]) == 0
    assert main(["--db", db, "topup", str(console_site.member_id), "5.00"]) == 0
    capsys.readouterr()
    assert main(["--db", db, "--json", "audit", "--limit", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["action"] for r in rows] == ["topup", "staff.role", "staff.add"]
    assert all(r["actor"] == audit.cli_actor() for r in rows)
    assert rows[1]["before"]["role"] == "cashier" and rows[1]["after"]["role"] == "manager"
    assert "pw_hash" not in json.dumps(rows)
    assert main(["--db", db, "audit", "--action", "staff", "--actor", "nobody"]) == 0
    assert "(none)" in capsys.readouterr().out
    # The account made on the command line logs in to the console, as a manager.
    c = console_site.client()
    console_site.login(c, "carol", "a long password")
    assert c.get("/console/audit").status_code == 200


def test_api_writes_are_audited_as_the_token(console_site: ConsoleSite) -> None:
    db = open_db(console_site.path)
    try:
        secret = add_token(db, "pos-1", "sales")[1]
    finally:
        db.conn.close()
    api = TestClient(create_app(console_site.context()))
    r = api.post(f"/v1/members/{console_site.member_id}/topups", json={"amount_fen": 300},
                 headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": "pos-77"})
    assert r.status_code == 201
    (row,) = _audit_rows(console_site, actor="api:pos-1")
    assert row["action"] == "topup" and row["op_key"] == "pos-77"
