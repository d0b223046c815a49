# Runs on CPython (pytest): /v1/members/{id}/coupons and /v1/campaigns — reads, a manager's idempotent issue, role checks.
"""Coupons of a member (members scope), issuing one (admin scope only: a manager's action,
once per Idempotency-Key) and the policy's campaigns with whether each is on today."""

from __future__ import annotations

from datetime import date, timedelta

from api_support import ApiSite

from host.rules.policy import build_policy, load_policy
from host.store.db import open_db


def coupon_count(site: ApiSite) -> int:
    db = open_db(site.path)
    try:
        return db.execute("SELECT count(*) FROM coupons").fetchone()[0]
    finally:
        db.conn.close()


def test_a_manager_issues_a_coupon_once_and_the_member_lists_it(api_site: ApiSite) -> None:
    c, mid = api_site.client(), api_site.member_id
    assert c.get(f"/v1/members/{mid}/coupons", headers=api_site.auth("members")).json() == \
        {"coupons": []}
    h = api_site.auth("admin", "mgr-coupon-1")
    first = c.post(f"/v1/members/{mid}/coupons", json={"template": "welcome"}, headers=h)
    again = c.post(f"/v1/members/{mid}/coupons", json={"template": "welcome"}, headers=h)
    assert first.status_code == again.status_code == 201, first.text
    assert first.content == again.content and again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["template"] == "welcome" and coupon_count(api_site) == 1
    listed = c.get(f"/v1/members/{mid}/coupons", headers=api_site.auth("members")).json()
    (cp,) = listed["coupons"]
    assert (cp["id"], cp["state"], cp["off_fen"], cp["min_spend_fen"]) == \
        (first.json()["coupon_id"], "open", 500, 3000)
    assert cp["expires_at"] == first.json()["expires_at"]
    other = c.post(f"/v1/members/{mid}/coupons", json={"template": "winback"}, headers=h)
    assert other.status_code == 409 and coupon_count(api_site) == 1    # the key is taken


def test_issuing_is_a_manager_action_and_bad_input_issues_nothing(api_site: ApiSite) -> None:
    c, mid = api_site.client(), api_site.member_id
    for scope in ("sales", "members"):                  # a cashier's token, a look-up token
        r = c.post(f"/v1/members/{mid}/coupons", json={"template": "welcome"},
                   headers=api_site.auth(scope, f"k-{scope}"))
        assert r.status_code == 403 and "coupons.issue" in r.json()["error"], r.text
    cases = [(mid, {"template": "nope"}, "k1", 400, "unknown coupon template"),
             (999, {"template": "welcome"}, "k2", 404, "unknown member"),
             (mid, {"template": "welcome", "x": 1}, "k3", 422, "x"),
             (mid, {"template": "welcome"}, None, 400, "Idempotency-Key")]
    for member, body, key, status, words in cases:
        r = c.post(f"/v1/members/{member}/coupons", json=body, headers=api_site.auth("admin", key))
        assert r.status_code == status and words in r.json()["error"], (body, r.text)
    assert c.get("/v1/members/999/coupons", headers=api_site.auth("members")).status_code == 404
    assert c.get(f"/v1/members/{mid}/coupons").status_code == 401
    assert coupon_count(api_site) == 0


def test_used_and_expired_coupons_only_with_all(api_site: ApiSite) -> None:
    c, mid = api_site.client(), api_site.member_id
    db = open_db(api_site.path)
    db.execute("INSERT INTO coupons (member_id, template, kind, value, min_spend_fen, covers, "
               "valid_from, valid_until, source, issued_at) VALUES (?, 'old', 'amount_off', 100, 0,"
               " '[]', 0, 1, 'manual', 0)", [mid])
    db.conn.commit()
    db.conn.close()
    h = api_site.auth("members")
    assert c.get(f"/v1/members/{mid}/coupons", headers=h).json()["coupons"] == []
    (old,) = c.get(f"/v1/members/{mid}/coupons", params={"all": "true"}, headers=h).json()["coupons"]
    assert (old["template"], old["state"]) == ("old", "expired")


def test_campaigns_with_their_windows_and_whether_on_today(api_site: ApiSite) -> None:
    today = date.today()
    span = lambda a, b: {"starts": (today + timedelta(a)).isoformat(),   # noqa: E731
                         "ends": (today + timedelta(b)).isoformat()}
    raw = load_policy().raw
    api_site.policy = build_policy({**raw, "campaigns": {
        "past": {**span(-30, -20), "kinds": ["topup"], "ladder": [{"min": "100.00", "bonus": "30.00"}]},
        "now": {**span(-2, 2), "kinds": ["kiosk"], "points_multiplier": 2, "coupon": "welcome"},
        "soon": {**span(20, 30), "kinds": ["wash"], "extra_discount_pct": 10}}})
    c = api_site.client()
    r = c.get("/v1/campaigns", headers=api_site.auth("members"))
    assert r.status_code == 200, r.text
    got = {x["name"]: x for x in r.json()["campaigns"]}
    assert [(n, got[n]["active"]) for n in sorted(got)] == [("now", True), ("past", False),
                                                           ("soon", False)]
    assert got["now"]["points_multiplier"] == 2 and got["now"]["coupon"] == "welcome"
    assert got["past"]["ladder"] == [{"min_fen": 10000, "bonus_fen": 3000}]
    assert got["soon"]["starts"] == (today + timedelta(20)).isoformat()
    assert c.get("/v1/campaigns").status_code == 401
