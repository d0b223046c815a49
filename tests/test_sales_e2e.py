# Runs on CPython (pytest): sales end to end — the HTTP API, the real daemon and the real firmware (MicroPython) over serial and MQTT.
"""Arm -> the reader shows it -> tap -> charged once at the tier price -> the API reports it;
and the ways a sale must NOT be charged: cancelled, expired, armed twice, retried, a token
without the scope, a reader that drops off mid-sale. ``tapkiosk verify`` stays clean."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest

from conftest import micropython_path, wait_until
from firmware_rig import CARD, cli

from host.store.db import open_db
from host.store.tokens import add_token

pytestmark = [pytest.mark.micropython, pytest.mark.skipif(micropython_path() is None, reason="needs the MicroPython unix port")]

SILVER_PCT = 95


def setup(rig) -> tuple[httpx.Client, dict[str, str]]:
    db = open_db(rig.db)
    try:
        tokens = {s: add_token(db, f"t-{s}", s)[1] for s in ("sales", "members")}
        # This kiosk sells only what is armed: a tap with no sale is refused "no_sale".
        db.execute("UPDATE devices SET settings = json_set(settings, '$.fixed_price', "
                   "json('false')) WHERE device_id = ?", [rig.device_id])
        db.conn.commit()
    finally:
        db.conn.close()
    client = httpx.Client(base_url=rig.daemon.api_url + "/v1", timeout=40)
    return client, tokens


def auth(token: str, key: str | None = None) -> dict[str, str]:
    h = {"Authorization": f"Bearer {token}"}
    if key:
        h["Idempotency-Key"] = key
    return h


def charged(rig) -> list[tuple]:
    with sqlite3.connect(rig.db) as c:
        return c.execute("SELECT charged_fen, verdict, reason FROM taps WHERE device_id = ? "
                         "ORDER BY id", (rig.device_id,)).fetchall()


def follow_events(rig, token: str, link: str, broker) -> list[dict]:
    """Every ``sale`` event the daemon publishes: on /v1/events (serial) or on MQTT
    ``tapkiosk/v1/events/sale`` (MQTT link), as decoded JSON envelopes."""
    import json
    import threading
    got: list[dict] = []
    if link == "mqtt":
        import paho.mqtt.client as mqtt
        host, _, port = broker.address.rpartition(":")
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-events")
        c.on_message = lambda cl, ud, msg: got.append(json.loads(msg.payload))
        c.connect(host, int(port))
        c.subscribe("tapkiosk/v1/events/sale", qos=1)
        c.loop_start()
        time.sleep(0.5)
        return got

    def read() -> None:
        with httpx.stream("GET", rig.daemon.api_url + "/v1/events", params={"kinds": "sale"},
                          headers=auth(token), timeout=None) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    got.append(json.loads(line[5:]))

    threading.Thread(target=read, daemon=True).start()
    time.sleep(0.5)
    return got


def tap_again(rig) -> None:
    """The same card again, once the reader's debounce (1.5 s, host CONFIG) forgot it."""
    time.sleep(1.7)
    rig.tap(CARD)


def shown(rig, text: str, mark: int) -> bool:
    return rig.board.wait_for(text, 15, mark)


@pytest.mark.parametrize("link", ["serial", "mqtt"])
def test_sale_paid_once_cancel_expire_double_arm_retry_scope_offline(rigs, request, link):
    broker = request.getfixturevalue("broker") if link == "mqtt" else None
    rig = rigs(kind="kiosk", link=link, broker=broker, offline_after_s=4)
    rig.boot()
    api, tok = setup(rig)
    dev = rig.device_id
    events = follow_events(rig, tok["sales"], link, broker)

    # A token without the sales scope arms nothing.
    r = api.post(f"/devices/{dev}/sales", json={"amount_fen": 2400}, headers=auth(tok["members"], "s0"))
    assert r.status_code == 403

    # Arm -> the reader shows it -> tap -> paid at the tier price, once.
    mark = len(rig.board.output())
    r = api.post(f"/devices/{dev}/sales", json={"amount_fen": 2400}, headers=auth(tok["sales"], "s1"))
    assert r.status_code == 201, r.text
    sale = r.json()
    assert sale["state"] == "armed" and r.headers["Idempotent-Replayed"] == "false"
    assert shown(rig, "Pay 24.00", mark), rig.console()
    # A second sale on the same reader is refused; the same request again is the same sale.
    r2 = api.post(f"/devices/{dev}/sales", json={"amount_fen": 100}, headers=auth(tok["sales"], "s2"))
    assert r2.status_code == 409
    r3 = api.post(f"/devices/{dev}/sales", json={"amount_fen": 2400}, headers=auth(tok["sales"], "s1"))
    assert r3.status_code == 201 and r3.json()["id"] == sale["id"]
    assert r3.headers["Idempotent-Replayed"] == "true"
    rig.tap(CARD)
    done = api.get(f"/sales/{sale['id']}", params={"wait": 20}, headers=auth(tok["sales"])).json()
    assert done["state"] == "paid", rig.console()
    assert done["result"]["charged_fen"] == 2400 * SILVER_PCT // 100
    assert done["result"]["points_earned"] == 22
    assert charged(rig) == [(2280, "grant", "ok")]
    # The bus said so too: over SSE, or on MQTT when the daemon has an MQTT link.
    wait_until(lambda: any(e["data"].get("id") == sale["id"] and e["data"]["state"] == "paid"
                           for e in events), 10, what="the sale event")

    # Cancelled: the reader clears it, the next tap pays nothing.
    mark = len(rig.board.output())
    s = api.post(f"/devices/{dev}/sales", json={"items": [{"product": "coffee"}]},
                 headers=auth(tok["sales"], "s3")).json()
    assert s["amount_fen"] == 1200 and shown(rig, "Pay 12.00", mark)
    c = api.delete(f"/sales/{s['id']}", headers=auth(tok["sales"]))
    assert c.status_code == 200 and c.json()["state"] == "cancelled"
    assert shown(rig, "Cancelled", mark), rig.console()
    tap_again(rig)
    wait_until(lambda: len(charged(rig)) == 2, 20, what="the tap after the cancel")
    assert charged(rig)[1] == (0, "deny", "no_sale")

    # Expired: never charged.
    s = api.post(f"/devices/{dev}/sales", json={"amount_fen": 500, "timeout_s": 1},
                 headers=auth(tok["sales"], "s4")).json()
    got = api.get(f"/sales/{s['id']}", params={"wait": 10}, headers=auth(tok["sales"])).json()
    assert got["state"] == "expired"
    tap_again(rig)
    wait_until(lambda: len(charged(rig)) == 3, 20, what="the tap after the expiry")
    assert charged(rig)[2] == (0, "deny", "no_sale")

    # The reader drops off mid-sale: the sale is denied "offline", nothing is charged, and an
    # offline reader takes no new sale.
    s = api.post(f"/devices/{dev}/sales", json={"amount_fen": 800},
                 headers=auth(tok["sales"], "s5")).json()
    rig.board.kill()
    got = api.get(f"/sales/{s['id']}", params={"wait": 20}, headers=auth(tok["sales"])).json()
    assert (got["state"], got["reason"]) == ("denied", "offline")
    r = api.post(f"/devices/{dev}/sales", json={"amount_fen": 800}, headers=auth(tok["sales"], "s6"))
    assert r.status_code == 409 and "offline" in r.json()["error"]
    assert sum(x[0] for x in charged(rig)) == 2280
    assert cli(rig.db, "verify")["ok"] is True


def test_wash_program_button_shows_the_price_and_the_tap_pays_that_program(rigs, tmp_path):
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("18 1\n19 1\n")                          # idle: pulled up
    rig = rigs(kind="wash", link="serial", board_env={"TAPKIOSK_SIM_INPUTS": str(inputs)},
               buttons={"pins": {"1": 18, "2": 19}, "active": 0})
    rig.boot()
    mark = len(rig.board.output())
    inputs.write_text("18 1\n19 0\n")                          # press program 2
    time.sleep(0.3)
    inputs.write_text("18 1\n19 1\n")
    assert shown(rig, "Premium wash Pay 40.00", mark), rig.console()
    rig.tap(CARD)                                               # wash10 covers program 1 only
    wait_until(lambda: charged(rig), 20, what="the wash tap")
    assert charged(rig) == [(4000 * SILVER_PCT // 100, "grant", "ok")]
    with sqlite3.connect(rig.db) as c:
        assert c.execute("SELECT service, state, actor FROM sales").fetchall() == [(2, "paid", "button")]
        assert c.execute("SELECT service FROM taps").fetchone() == (2,)


def test_a_sale_armed_while_a_card_lies_on_the_reader_waits_for_the_next_presentation(rigs):
    from sim.cards import UidCard
    rig = rigs(kind="kiosk", link="serial")
    rig.boot()
    api, tok = setup(rig)
    rig.emu.place(UidCard(bytes.fromhex(CARD)))                # a card left on the reader
    wait_until(lambda: charged(rig), 20, what="the first presentation")
    assert charged(rig) == [(0, "deny", "no_sale")]            # no sale yet: nothing paid
    mark = len(rig.board.output())
    s = api.post(f"/devices/{rig.device_id}/sales", json={"amount_fen": 300},
                 headers=auth(tok["sales"], "k1")).json()
    assert shown(rig, "Pay 3.00", mark), rig.console()
    time.sleep(2.0)                                             # the card is still there
    assert len(charged(rig)) == 1                               # ... and paid nothing
    rig.emu.remove()
    tap_again(rig)                                              # presented anew: it pays
    got = api.get(f"/sales/{s['id']}", params={"wait": 20}, headers=auth(tok["sales"])).json()
    assert got["state"] == "paid" and charged(rig)[-1] == (285, "grant", "ok")


def test_a_sale_paid_partly_with_points_shows_the_points_on_the_reader(rigs):
    rig = rigs(kind="kiosk", link="serial")
    rig.boot()
    api, tok = setup(rig)
    cli(rig.db, "points", "grant", "1", "1000", "--reason", "test")
    before = cli(rig.db, "member", "show", "1")
    for bad, status in ((5, 400), ("all", 422)):       # below min_points; not "max" or a number
        r = api.post(f"/devices/{rig.device_id}/sales", json={"amount_fen": 2000, "points": bad},
                     headers=auth(tok["sales"], f"bad-{bad}"))
        assert r.status_code == status, r.text
    mark = len(rig.board.output())
    s = api.post(f"/devices/{rig.device_id}/sales", json={"amount_fen": 2000, "points": "max"},
                 headers=auth(tok["sales"], "p1"))
    assert s.status_code == 201 and s.json()["points"] == "max", s.text
    assert shown(rig, "Pay 20.00", mark), rig.console()
    rig.tap(CARD)
    got = api.get(f"/sales/{s.json()['id']}", params={"wait": 20}, headers=auth(tok["sales"])).json()
    assert got["state"] == "paid", rig.console()
    # 19.00 at the silver price: half (950 points) with points, 9.50 from stored value.
    r = got["result"]
    assert (r["points_paid"], r["points_paid_fen"], r["charged_fen"]) == (950, 950, 950)
    assert shown(rig, "积分950抵9.50", mark), rig.console()
    after = cli(rig.db, "member", "show", "1")
    assert after["balance_fen"] == before["balance_fen"] - 950
    assert after["points"] == before["points"] - 950 + 9
    assert cli(rig.db, "verify")["ok"] is True
