# Runs on CPython (pytest): staff scoped to a store see that store's devices, dashboard and reports only.
"""Issue 17 (chain): a store-scoped account (``staff add --store``) sees the devices and
reports of its store only, decided server-side; members stay chain-wide."""

from __future__ import annotations

from console_support import PASSWORD, UID, ConsoleSite
from host.rules.engine import Engine, Tap
from host.store import staff, stores
from host.store.db import open_db
from host.store.devices import register_device


def _chain(site: ConsoleSite) -> None:
    db = open_db(site.path)
    try:
        for name in ("north", "south"):
            stores.add_store(db, name, actor="t")
        register_device(db, "NORTHK", "kiosk")
        register_device(db, "SOUTHK", "kiosk")
        stores.set_device_store(db, "NORTHK", "north", actor="t")
        stores.set_device_store(db, "SOUTHK", "south", actor="t")
        staff.add_staff(db, "nina", "manager", PASSWORD, actor="t", store="north")
        staff.add_staff(db, "tess", "technician", PASSWORD, actor="t", store="north")
        Engine(db, site.policy).decide(Tap("SOUTHK", 1, UID, amount_fen=3_00))
    finally:
        db.conn.close()


def test_store_staff_see_their_store_only(console_site: ConsoleSite) -> None:
    _chain(console_site)
    c = console_site.client()
    console_site.login(c, "tess")
    page = c.get("/console/devices").text
    assert "NORTHK" in page and "SOUTHK" not in page
    c = console_site.client()
    console_site.login(c, "nina")
    daily = c.get("/console/reports/daily.csv").text
    assert daily.splitlines()[0].startswith("date,store,")
    assert {line.split(",")[1] for line in daily.splitlines()[1:]} == {"north"}
    devices = c.get("/console/reports/devices.csv").text
    assert "NORTHK" in devices and "SOUTHK" not in devices
    assert c.get("/console/reports").status_code == 200
    assert c.get("/console/").status_code == 200
    # Members are chain-wide: the north manager finds the member who paid in the south.
    assert c.get(f"/console/members/{console_site.member_id}").status_code == 200


def test_chain_wide_staff_see_every_store(console_site: ConsoleSite) -> None:
    _chain(console_site)
    c = console_site.client()
    console_site.login(c, "bob")
    devices = c.get("/console/reports/devices.csv").text
    assert "NORTHK" in devices and "SOUTHK" in devices
    c = console_site.client()
    console_site.login(c, "tom")
    page = c.get("/console/devices").text
    assert "NORTHK" in page and "SOUTHK" in page




def test_store_staff_feed_shows_their_store_only(console_site: ConsoleSite) -> None:
    _chain(console_site)
    c = console_site.client(idle_s=60)
    console_site.login(c, "nina")
    with c.stream("GET", "/console/events") as r:
        lines = r.iter_lines()
        assert [next(lines) for _ in range(3)] == ["event: ready", "data: {}", ""]
        console_site.bus.publish("tap", {"device_id": "SOUTHK", "uid": "04BEEF"})
        console_site.bus.publish("tap", {"device_id": "NORTHK", "uid": "04CAFE"})
        got = [next(lines) for _ in range(3)]
        assert got[1] == "event: tap" and "04CAFE" in got[2]   # the south tap was not sent
        console_site.clock.now += 61
        console_site.bus.publish("tap", {"device_id": "NORTHK"})
        list(lines)


def test_a_top_up_by_store_staff_is_that_stores_revenue(console_site: ConsoleSite) -> None:
    """Counter cash belongs to the store of the staff account that took it (payments.store_id):
    the north manager's top-up is north's revenue in its daily report, the chain-wide
    manager's is in the chain-wide row only."""
    _chain(console_site)
    mid = console_site.member_id
    c = console_site.client()
    token = console_site.login(c, "nina")
    r = c.post(f"/console/members/{mid}/topup", data={"receipt": "N-1", "amount": "50.00",
                                                      "csrf_token": token})
    assert r.status_code == 200
    daily = c.get("/console/reports/daily.csv").text.splitlines()
    head = daily[0].split(",")
    north = dict(zip(head, daily[-1].split(",")))           # today, the last day
    assert north["store"] == "north" and north["revenue_fen"] == "50.00"
    c = console_site.client()
    token = console_site.login(c, "bob")

    def chain_topups() -> float:
        rows = [ln.split(",") for ln in c.get("/console/reports/daily.csv").text.splitlines()]
        return float(rows[-1][rows[0].index("topups_fen")])

    before = chain_topups()
    c.post(f"/console/members/{mid}/topup", data={"receipt": "B-1", "amount": "20.00",
                                                  "csrf_token": token})
    assert chain_topups() == before + 20.00 and before >= 50.00   # chain-wide: both
    c = console_site.client()
    console_site.login(c, "nina")
    daily = c.get("/console/reports/daily.csv").text.splitlines()
    assert dict(zip(head, daily[-1].split(",")))["topups_fen"] == "50.00"  # north: hers only
