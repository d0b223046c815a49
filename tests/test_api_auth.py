# Runs on CPython (pytest): API tokens and scopes — 401 without a valid token, 403 outside the scope.
"""Tokens are stored hashed and shown once; every route checks its action's scopes."""

from __future__ import annotations

import json

import pytest

from host.errors import InputError, NotFound
from host.store.db import open_db
from host.store.tokens import add_token, find_token, hash_secret, list_tokens, revoke_token
from host.cli import main as cli_main
from host.web.permissions import RULES
from api_support import UID, ApiSite

# (method, path template, JSON body, action); {m} is the member id.
ROUTES = [
    ("GET", "/v1/members/{m}", None, "members.read"),
    ("GET", "/v1/members?phone=13800138000", None, "members.read"),
    ("GET", f"/v1/cards/{UID}", None, "members.read"),
    ("POST", "/v1/members/{m}/topups", {"amount_fen": 100}, "sales.write"),
    ("POST", "/v1/members/{m}/redemptions", {"points": 10, "item": "towel"}, "sales.write"),
    ("POST", "/v1/members/{m}/passes", {"plan": "nope"}, "sales.write"),
    ("POST", "/v1/members/{m}/refunds", {"amount_fen": 100}, "refunds.write"),
]


def _call(client, method: str, path: str, body, headers: dict[str, str]):
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("method,path,body,action", ROUTES)
def test_missing_or_wrong_token_is_401(api_site: ApiSite, method, path, body, action) -> None:
    client = api_site.client()
    path = path.format(m=api_site.member_id)
    for headers in ({}, {"Authorization": "Bearer tk_not-a-real-token"},
                    {"Authorization": f"Basic {api_site.tokens['admin']}"}):
        r = _call(client, method, path, body, {**headers, "Idempotency-Key": "k-401"})
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert set(r.json()) == {"error"} and "\n" not in r.json()["error"]
    assert api_site.principal_fen() == 10000


@pytest.mark.parametrize("method,path,body,action", ROUTES)
@pytest.mark.parametrize("scope", ["members", "sales", "admin"])
def test_scope_decides_403(api_site: ApiSite, method, path, body, action, scope) -> None:
    client = api_site.client()
    key = f"scope-{scope}-{action}-{path}"[:128]
    r = _call(client, method, path.format(m=api_site.member_id), body,
              api_site.auth(scope, key))
    if scope in RULES[action]:
        assert r.status_code not in (401, 403), r.text
    else:
        assert r.status_code == 403, r.text
        assert scope in r.json()["error"]


def test_forbidden_write_changes_nothing(api_site: ApiSite) -> None:
    r = api_site.client().post(f"/v1/members/{api_site.member_id}/topups",
                               json={"amount_fen": 500}, headers=api_site.auth("members", "x1"))
    assert r.status_code == 403
    assert api_site.principal_fen() == 10000


def test_revoked_token_is_401(api_site: ApiSite) -> None:
    db = open_db(api_site.path)
    try:
        tid = find_token(db, api_site.tokens["sales"])["id"]
        revoke_token(db, tid)
    finally:
        db.conn.close()
    r = api_site.client().get(f"/v1/members/{api_site.member_id}",
                              headers=api_site.auth("sales"))
    assert r.status_code == 401
    assert "revoked" in r.json()["error"]


def test_tokens_are_stored_hashed_and_listed_without_secret(tmp_path) -> None:
    db = open_db(tmp_path / "t.db")
    tid, secret = add_token(db, "pos-1", "sales")
    assert secret.startswith("tk_") and len(secret) > 40
    stored = db.execute("SELECT hash FROM api_tokens WHERE id = ?", [tid]).fetchone()[0]
    assert stored == hash_secret(secret) and secret not in stored
    assert find_token(db, secret) == {"id": tid, "name": "pos-1", "scope": "sales"}
    assert list_tokens(db) == [{"id": tid, "name": "pos-1", "scope": "sales",
                                "created_at": list_tokens(db)[0]["created_at"],
                                "revoked_at": None}]
    first = revoke_token(db, tid)["revoked_at"]
    assert first is not None and revoke_token(db, tid)["revoked_at"] == first
    assert find_token(db, secret) is None
    with pytest.raises(NotFound):
        revoke_token(db, tid + 1)
    with pytest.raises(InputError):
        add_token(db, "x", "root")
    with pytest.raises(InputError):
        add_token(db, "", "admin")


def test_api_token_commands(tmp_path, capsys) -> None:
    db_path = str(tmp_path / "t.db")
    assert cli_main(["--db", db_path, "init"]) == 0
    capsys.readouterr()
    assert cli_main(["--db", db_path, "--json", "api-token", "add", "pos", "--scope", "members"]) == 0
    added = json.loads(capsys.readouterr().out)
    db = open_db(db_path)
    assert added["scope"] == "members" and find_token(db, added["token"])["id"] == added["id"]
    assert cli_main(["--db", db_path, "--json", "api-token", "list"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in listed] == ["pos"] and "token" not in listed[0]
    assert cli_main(["--db", db_path, "--json", "api-token", "revoke", str(added["id"])]) == 0
    assert json.loads(capsys.readouterr().out)["revoked_at"] is not None
    assert find_token(db, added["token"]) is None
    assert cli_main(["--db", db_path, "api-token", "add", "pos", "--scope", "root"]) == 2
    assert "invalid choice" in capsys.readouterr().err
