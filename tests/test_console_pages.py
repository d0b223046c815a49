# Runs on CPython (pytest): the console's pages and forms do what they say — search, member actions, devices, staff.
"""Every page and form of the staff console over an in-process client (real database and
Writer): search by name, phone tail and id; redeem, card enrol/replace/block, tier edit and
reversal; the technician's devices page; staff accounts made in the console; the live
feed's event stream ends with the session. The reports page: test_console_reports.py."""

from __future__ import annotations

import re

from host.store.db import open_db
from host.store.devices import register_device
from console_support import PASSWORD, UID, ConsoleSite

KEY_RE = re.compile(r'name="key" value="([A-Za-z0-9_-]+)"')


def _key(page: str) -> str:
    return KEY_RE.search(page).group(1)


def _member_ids(page: str) -> list[int]:
    return [int(m) for m in re.findall(r'<td><a href="/console/members/(\d+)">', page)]


def test_search_by_name_phone_tail_and_id(console_site: ConsoleSite) -> None:
    c = console_site.client()
    console_site.login(c, "alice")
    mid = console_site.member_id
    for q in ("Li", "li", "8000", "13800138000", str(mid)):
        assert _member_ids(c.get("/console/members", params={"q": q}).text) == [mid], q
    assert _member_ids(c.get("/console/members", params={"q": "9999"}).text) == []
    assert _member_ids(c.get("/console/members", params={"q": "%"}).text) == []


def test_member_actions_redeem_cards_and_manager_edits(console_site: ConsoleSite) -> None:
    c = console_site.client()
    token = console_site.login(c, "bob")
    mid = console_site.member_id
    url = f"/console/members/{mid}"
    r = c.post(f"{url}/pass", data={"plan": "wash10", "key": _key(c.get(url).text),
                                     "csrf_token": token})
    assert r.status_code == 200 and 'id="plan">wash10<' in r.text
    points = console_site.db_value("SELECT points FROM members")[0]
    assert points > 0
    r = c.post(f"{url}/redeem", data={"points": str(points), "item": "towel",
                                       "key": _key(c.get(url).text), "csrf_token": token})
    assert r.status_code == 200 and console_site.db_value("SELECT points FROM members")[0] == 0
    new = "04000000000001"
    for data in ({"op": "enroll", "uid": "04000000000002"},
                 {"op": "replace", "uid": UID, "new_uid": new},
                 {"op": "block", "uid": new}):
        r = c.post(f"{url}/cards", data={**data, "key": _key(c.get(url).text),
                                          "csrf_token": token})
        assert r.status_code == 303, r.text
    cards = dict(open_db(console_site.path).execute("SELECT uid, status FROM cards").fetchall())
    assert cards == {UID: "lost", new: "blocked", "04000000000002": "active"}
    r = c.post(f"{url}/edit", data={"tier": "gold", "status": "", "key": _key(c.get(url).text),
                                     "csrf_token": token})
    assert r.status_code == 303
    assert console_site.db_value("SELECT tier FROM members")[0] == "gold"
    entry = console_site.db_value("SELECT max(id) FROM ledger WHERE kind = 'topup'")[0]
    other = c.post(f"/console/members/{mid + 1}/reverse", data={
        "entry": str(entry), "key": _key(c.get(url).text), "csrf_token": token})
    assert other.status_code == 404  # only from the page of the entry's own member
    r = c.post(f"{url}/reverse", data={"entry": str(entry), "reason": "keyed twice",
                                        "key": _key(c.get(url).text), "csrf_token": token})
    assert r.status_code == 303
    assert console_site.db_value("SELECT count(*) FROM ledger WHERE reverses = ?",
                                 [entry])[0] == 1


def test_refused_action_shows_the_reason(console_site: ConsoleSite) -> None:
    c = console_site.client()
    token = console_site.login(c, "bob")
    url = f"/console/members/{console_site.member_id}"
    r = c.post(f"{url}/refund", data={"amount": "5000", "key": _key(c.get(url).text),
                                       "csrf_token": token})
    assert r.status_code == 409 and "refundable principal" in r.text
    r = c.post(f"{url}/topup", data={"receipt": "Q1", "amount": "1.005", "csrf_token": token})
    assert r.status_code == 400
    c.post(f"{url}/topup", data={"receipt": "Q2", "amount": "1", "csrf_token": token})
    r = c.post(f"{url}/topup", data={"receipt": "Q2", "amount": "2", "csrf_token": token})
    assert r.status_code == 409  # the same receipt number for another amount
    assert console_site.db_value("SELECT principal_fen FROM members")[0] == 10100


def test_devices_page_for_technicians(console_site: ConsoleSite) -> None:
    db = open_db(console_site.path)
    try:
        register_device(db, "gate-9", "gate", name="<b>North</b>")
    finally:
        db.conn.close()
    c = console_site.client()
    console_site.login(c, "tom")
    page = c.get("/console/devices").text
    assert 'data-device="gate-9"' in page and "<b>North</b>" not in page
    assert "Members" not in c.get("/console/?lang=en").text.split("<main>")[0]


def test_manager_adds_staff_in_the_console(console_site: ConsoleSite) -> None:
    app = console_site.app()
    c = console_site.client(app)
    token = console_site.login(c, "bob")
    r = c.post("/console/staff", data={"name": "wen", "role": "technician",
                                       "password": "short", "csrf_token": token})
    assert r.status_code == 400
    r = c.post("/console/staff", data={"name": "wen", "role": "technician",
                                       "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 303
    wen = console_site.client(app)
    console_site.login(wen, "wen")
    assert wen.get("/console/devices").status_code == 200
    row = console_site.db_value("SELECT actor, action, after FROM audit_log ORDER BY id DESC")
    assert row[:2] == ("bob", "staff.add") and "technician" in row[2]


def test_feed_stream_ends_with_the_session(console_site: ConsoleSite) -> None:
    c = console_site.client(idle_s=60)
    console_site.login(c, "alice")
    console_site.bus.publish("tap", {"device_id": "x"})  # before the stream: not sent
    with c.stream("GET", "/console/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        assert [next(lines) for _ in range(3)] == ["event: ready", "data: {}", ""]
        console_site.bus.publish("tap", {"device_id": "gate-1", "uid": "04CAFE"})
        got = [next(lines) for _ in range(3)]
        assert got[1] == "event: tap" and "04CAFE" in got[2]
        console_site.clock.now += 61  # the session idles out: the stream ends
        console_site.bus.publish("tap", {"device_id": "gate-1"})
        rest = list(lines)
    assert not any(line.startswith("data:") for line in rest)
