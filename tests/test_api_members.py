# Runs on CPython (pytest): /v1 members and cards — look-ups, idempotent sales through the real writer.
"""Look-ups by id, card UID and phone; top-ups, pass sales, redemptions and refunds run on the
writer thread through the admin functions, once per Idempotency-Key."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from api_support import PHONE, UID, ApiSite


def test_member_by_id_card_uid_and_phone(api_site: ApiSite) -> None:
    c, h, mid = api_site.client(), api_site.auth("members"), api_site.member_id
    m = c.get(f"/v1/members/{mid}", headers=h)
    assert m.status_code == 200, m.text
    body = m.json()
    assert (body["id"], body["name"], body["principal_fen"], body["bonus_fen"]) == \
        (mid, "L*", 10000, body["balance_fen"] - 10000)
    assert body["phone"] == "138****8000"  # masked: the API never shows the full number
    assert [card["uid"] for card in body["cards"]] == [UID]
    assert body["passes"] == [] and body["points"] == 0
    # A UID typed with colons and in lower case is the same card.
    uid_typed = ":".join(UID[i:i + 2] for i in range(0, len(UID), 2)).lower()
    by_card = c.get(f"/v1/cards/{uid_typed}", headers=h)
    assert by_card.status_code == 200, by_card.text
    assert by_card.json()["id"] == mid and by_card.json()["card"]["uid"] == UID
    for typed in (PHONE, "13800138000", "+86 13800138000", "138-0013-8000"):
        found = c.get("/v1/members", params={"phone": typed}, headers=h)
        assert found.status_code == 200, found.text
        assert [(x["id"], x["phone"]) for x in found.json()["members"]] == \
            [(mid, "138****8000")]
    assert c.get("/v1/members", params={"phone": "13900000000"}, headers=h).json() == \
        {"members": []}


def test_lookup_errors_are_one_line_json(api_site: ApiSite) -> None:
    c, h = api_site.client(), api_site.auth("members")
    cases = [("/v1/members/999", 404, "unknown member"),
             ("/v1/cards/04FFFFFFFFFFFF", 404, "unknown card"),
             ("/v1/cards/xyz", 400, "bad card UID"),
             ("/v1/members?phone=abc", 400, "bad phone"),
             ("/v1/members/abc", 422, "member_id"),
             (f"/v1/members/{2**64}", 422, "member_id"),
             ("/v1/members/0", 422, "member_id"),
             ("/v1/nowhere", 404, "Not Found")]
    for path, status, words in cases:
        r = c.get(path, headers=h)
        assert r.status_code == status, (path, r.text)
        assert set(r.json()) == {"error"} and words in r.json()["error"], (path, r.text)


def test_retried_topup_is_credited_once_with_the_same_body(api_site: ApiSite) -> None:
    c, mid = api_site.client(), api_site.member_id
    h = api_site.auth("sales", "pos-1-0001")
    first = c.post(f"/v1/members/{mid}/topups", json={"amount_fen": 5000}, headers=h)
    again = c.post(f"/v1/members/{mid}/topups", json={"amount_fen": 5000}, headers=h)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert first.content == again.content
    assert first.headers["Idempotent-Replayed"] == "false"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["principal_fen"] == 15000 and first.json()["topup_fen"] == 5000
    assert api_site.principal_fen() == 15000


def test_concurrent_retries_credit_once(api_site: ApiSite) -> None:
    c, mid = api_site.client(), api_site.member_id
    h = api_site.auth("sales", "pos-1-burst")
    with ThreadPoolExecutor(4) as pool:
        rs = list(pool.map(lambda _: c.post(f"/v1/members/{mid}/topups",
                                            json={"amount_fen": 700}, headers=h), range(8)))
    assert {r.status_code for r in rs} == {201}
    assert len({r.content for r in rs}) == 1
    assert sorted(r.headers["Idempotent-Replayed"] for r in rs) == ["false"] + ["true"] * 7
    assert api_site.principal_fen() == 10700


def test_key_reused_for_another_request_is_409(api_site: ApiSite) -> None:
    c, mid = api_site.client(), api_site.member_id
    h = api_site.auth("sales", "pos-1-0002")
    assert c.post(f"/v1/members/{mid}/topups", json={"amount_fen": 5000},
                  headers=h).status_code == 201
    other = c.post(f"/v1/members/{mid}/topups", json={"amount_fen": 6000}, headers=h)
    assert other.status_code == 409 and "idempotency key" in other.json()["error"]
    elsewhere = c.post(f"/v1/members/{mid}/redemptions", json={"points": 1, "item": "x"},
                       headers=h)
    assert elsewhere.status_code == 409
    assert api_site.principal_fen() == 15000


def test_write_without_idempotency_key_is_400(api_site: ApiSite) -> None:
    r = api_site.client().post(f"/v1/members/{api_site.member_id}/topups",
                               json={"amount_fen": 5000}, headers=api_site.auth("sales"))
    assert r.status_code == 400 and "Idempotency-Key" in r.json()["error"]
    bad = api_site.client().post(f"/v1/members/{api_site.member_id}/topups",
                                 json={"amount_fen": 5000},
                                 headers=api_site.auth("sales", "has space"))
    assert bad.status_code == 400 and "idempotency key" in bad.json()["error"]
    assert api_site.principal_fen() == 10000


def test_money_must_be_integer_fen(api_site: ApiSite) -> None:
    c, mid = api_site.client(), api_site.member_id
    for i, body in enumerate(({"amount_fen": 50.5}, {"amount_fen": "5000"}, {"amount_fen": 0},
                              {"amount_fen": 100, "yuan": 1}, {})):
        r = c.post(f"/v1/members/{mid}/topups", json=body, headers=api_site.auth("sales", f"m{i}"))
        assert r.status_code == 422, (body, r.text)
        assert "\n" not in r.json()["error"]
    assert api_site.principal_fen() == 10000


def test_pass_sale_redemption_and_refund(api_site: ApiSite) -> None:
    c, mid = api_site.client(), api_site.member_id
    sold = c.post(f"/v1/members/{mid}/passes", json={"plan": "wash10"},
                  headers=api_site.auth("sales", "pass-1"))
    assert sold.status_code == 201, sold.text
    assert sold.json()["plan"] == "wash10" and sold.json()["uses_left"] > 0
    assert sold.json()["points"] > 0
    member = c.get(f"/v1/members/{mid}", headers=api_site.auth("members")).json()
    assert [p["plan"] for p in member["passes"]] == ["wash10"]
    points = sold.json()["points"]
    red = c.post(f"/v1/members/{mid}/redemptions", json={"points": 1, "item": "towel"},
                 headers=api_site.auth("sales", "redeem-1"))
    assert red.status_code == 201, red.text
    assert red.json()["points"] == points - 1
    too_many = c.post(f"/v1/members/{mid}/redemptions", json={"points": 10 ** 6, "item": "car"},
                      headers=api_site.auth("sales", "redeem-2"))
    assert too_many.status_code == 409, too_many.text
    unknown = c.post(f"/v1/members/{mid}/passes", json={"plan": "nope"},
                     headers=api_site.auth("sales", "pass-2"))
    assert unknown.status_code == 400 and "unknown plan" in unknown.json()["error"]
    refund = c.post(f"/v1/members/{mid}/refunds", json={"amount_fen": 100},
                    headers=api_site.auth("admin", "refund-1"))
    assert refund.status_code == 201, refund.text
    assert refund.json()["refunded_fen"] == 100


def test_sales_are_published_once(api_site: ApiSite) -> None:
    c, mid = api_site.client(), api_site.member_id
    sub = api_site.bus.subscribe(["sale"])
    h = api_site.auth("sales", "pos-1-0003")
    for _ in range(2):
        assert c.post(f"/v1/members/{mid}/topups", json={"amount_fen": 300},
                      headers=h).status_code == 201
    event = sub.get(timeout=5)
    assert event is not None and event.kind == "sale"
    assert event.data["kind"] == "topup" and event.data["member_id"] == mid
    assert event.data["topup_fen"] == 300 and event.data["token"] == "test-sales"
    # Published before the response was sent: the replay published nothing.
    assert sub.get(timeout=0) is None


def test_stopped_writer_is_503_and_nothing_is_written(api_site: ApiSite) -> None:
    api_site.writer.stop()
    r = api_site.client().post(f"/v1/members/{api_site.member_id}/topups",
                               json={"amount_fen": 100}, headers=api_site.auth("sales", "late"))
    assert r.status_code == 503 and "writer has stopped" in r.json()["error"]
    assert api_site.principal_fen() == 10000
