# Runs on CPython (pytest): chain stores — store commands, readers and staff in a store, per-store policy.
"""Issue 17 (chain): stores, ``device add/set --store``, ``staff add --store``, and the
``[stores.NAME]`` policy overrides (prices, programmes, opening hours) decided at a tap."""

from __future__ import annotations

import json

import pytest

from host.admin import Admin
from host.errors import InputError, NotFound
from host.rules.engine import Engine, Tap
from host.rules.policy import _default_raw, _merge, build_policy, check_stores
from host.store import staff, stores
from host.store.devices import get_device, register_device
from site_support import UID, make_site

NORTH = {"hours": "08:00-22:00", "wash": {"programs": {"1": {"price": "20.00"}}},
         "kiosk": {"max_amount": "10.00"}}


def chain_policy(stores_table):
    return build_policy(_merge(_default_raw(), {"stores": stores_table}))


def chain_site(stores_table=None):
    """The seeded site with W1/K1/G1 in store ``north`` and a second wash bay W2 in no store."""
    db, admin, engine, clock, mid = make_site(topup_fen=100_00)
    pol = chain_policy({"north": NORTH} if stores_table is None else stores_table)
    engine = Engine(db, pol, clock)
    stores.add_store(db, "north", actor="t")
    for dev in ("W1", "K1", "G1"):
        stores.set_device_store(db, dev, "north", actor="t")
    register_device(db, "W2", "wash")
    return db, Admin(db, pol, clock), engine, clock, mid


def test_store_commands_are_idempotent_and_refuse_unknown_names(site_cli):
    assert site_cli("store", "add", "north")[0] == 0
    code, out, _ = site_cli("--json", "store", "add", "north")
    assert code == 0 and json.loads(out)["created"] is False
    assert site_cli("store", "add", "bad name")[0] == 2
    code, _, err = site_cli("device", "add", "G1", "gate", "--store", "south")
    assert code == 2 and "unknown store 'south'" in err
    code, out, _ = site_cli("--json", "device", "list")
    assert code == 0 and json.loads(out) == []   # refused before anything was registered
    assert site_cli("device", "add", "G1", "gate", "--store", "north")[0] == 0
    code, out, _ = site_cli("--json", "store", "list")
    assert [(s["name"], s["devices"]) for s in json.loads(out)] == [("north", 1)]
    assert site_cli("store", "add", "south")[0] == 0
    code, out, _ = site_cli("--json", "device", "set", "G1", "--store", "south")
    assert json.loads(out) == {"device_id": "G1", "store": "south", "changed": True}
    code, out, _ = site_cli("--json", "device", "set", "G1", "--store", "south")
    assert json.loads(out)["changed"] is False
    code, out, _ = site_cli("--json", "device", "list")
    assert json.loads(out)[0]["store"] == "south"
    assert site_cli("device", "set", "G9", "--store", "south")[0] == 2
    code, out, _ = site_cli("--json", "device", "set", "G1", "--no-store")
    assert code == 0 and json.loads(out)["store"] is None


def test_staff_scoped_to_a_store(site_cli, monkeypatch):
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    code, _, err = site_cli("staff", "add", "ann", "--role", "manager", "--store", "north")
    assert code == 2 and "unknown store" in err
    site_cli("store", "add", "north")
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert site_cli("staff", "add", "ann", "--role", "manager", "--store", "north")[0] == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert site_cli("staff", "add", "bob", "--role", "manager")[0] == 0
    code, out, _ = site_cli("--json", "staff", "list")
    assert {s["name"]: s["store"] for s in json.loads(out)} == {"ann": "north", "bob": ""}
    from host.store.db import open_db
    db = open_db(site_cli.db)
    assert staff.authenticate(db, "ann", "correct horse")["store"] == "north"
    assert staff.authenticate(db, "bob", "correct horse")["store"] is None
    db.conn.close()
    assert site_cli("staff", "store", "ann", "--all")[0] == 0
    code, out, _ = site_cli("--json", "staff", "list")
    assert {s["name"]: s["store"] for s in json.loads(out)}["ann"] == ""


def test_store_prices_apply_to_its_readers_only():
    db, admin, engine, clock, mid = chain_site()
    d = engine.decide(Tap("W1", 1, UID, service=1))
    assert d.verdict == "grant" and d.balance_fen == 100_00 - 20_00 * 95 // 100
    d2 = engine.decide(Tap("W2", 1, UID, service=1))   # no store: the chain's 25.00
    assert d2.verdict == "grant" and d.balance_fen - d2.balance_fen == 25_00 * 95 // 100
    assert engine.decide(Tap("K1", 1, UID, amount_fen=11_00)).reason == "invalid_amount"


def test_store_hours_deny_closed_and_gate_exits_stay_open():
    db, admin, engine, clock, mid = chain_site()
    clock.set(2026, 3, 10, 22, 30)      # north closes at 22:00
    d = engine.decide(Tap("W1", 1, UID, service=1))
    assert (d.verdict, d.reason) == ("deny", "closed") and "08:00-22:00" in d.text
    assert engine.decide(Tap("K1", 1, UID, amount_fen=1_00)).reason == "closed"
    assert engine.decide(Tap("G1", 1, UID, direction="in")).reason == "closed"
    assert engine.decide(Tap("W2", 1, UID, service=1)).verdict == "grant"   # no store hours
    clock.set(2026, 3, 11, 9, 0)
    assert engine.decide(Tap("W1", 2, UID, service=1)).verdict == "grant"


def test_gates_exempted_from_store_hours_by_policy():
    db, admin, engine, clock, mid = chain_site({"north": {**NORTH, "hours_exempt": ["gate"]}})
    clock.set(2026, 3, 10, 23, 0)
    assert engine.decide(Tap("W1", 1, UID, service=1)).reason == "closed"
    # Not "closed": the gate is exempt, so the entry is decided by its usual rules (no pass).
    assert engine.decide(Tap("G1", 1, UID, direction="in")).reason != "closed"


@pytest.mark.parametrize("table, message", [
    ({"north": {"colour": "red"}}, "unknown key stores.north.colour"),
    ({"north": {"hours": "8-22"}}, "stores.north.hours must be HH:MM-HH:MM"),
    ({"north": {"hours_exempt": ["door"]}}, "stores.north.hours_exempt"),
    ({"north": {"wash": {"programs": {"1": {"price": "-1"}}}}},
     "stores.north.wash.programs.1.price"),
    ({"no rth": {}}, "stores.no rth must be a store name"),
])
def test_bad_store_overrides_are_named(table, message):
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        chain_policy(table)


def test_policy_naming_an_unknown_store_is_refused(site_cli, tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text('[stores.north]\nhours = "08:00-22:00"\n')
    code, _, err = site_cli("policy", "set", str(path))
    assert code == 2 and "stores.north names no store of this chain" in err
    site_cli("store", "add", "north")
    assert site_cli("policy", "set", str(path))[0] == 0
    check_stores(chain_policy({"north": {}}), ["north", "south"])


def test_single_store_site_is_unchanged():
    db, admin, engine, clock, mid = make_site(topup_fen=100_00)
    assert get_device(db, "W1")["store"] == "" and stores.list_stores(db) == []
    assert engine.decide(Tap("W1", 1, UID, service=1)).balance_fen == 100_00 - 25_00 * 95 // 100
    with pytest.raises(NotFound):
        stores.set_device_store(db, "W1", "north", actor="t")


def test_daily_report_per_store_and_chain_wide(site_cli):
    for args in (("store", "add", "north"), ("store", "add", "south"),
                 ("device", "add", "K1", "kiosk", "--store", "north"),
                 ("device", "add", "K2", "kiosk", "--store", "south"),
                 ("member", "add"), ("card", "enroll", "1", UID), ("topup", "1", "100.00"),
                 ("tap", "K1", UID, "--amount", "10.00"), ("tap", "K2", UID, "--amount", "4.00"),
                 ("tap", "K2", UID, "--amount", "2.00")):
        assert site_cli(*args)[0] == 0, args
    code, out, _ = site_cli("--json", "report", "daily", "--days", "1")
    rows = {r["store"]: r for r in json.loads(out)}
    assert set(rows) == {"*", "north", "south"}
    assert rows["*"]["taps"] == 3 and rows["*"]["topups_fen"] == 100_00
    assert (rows["north"]["taps"], rows["south"]["taps"]) == (1, 2)
    assert rows["*"]["consumption_fen"] == rows["north"]["consumption_fen"] + \
        rows["south"]["consumption_fen"] > 0
    assert rows["south"]["topups_fen"] == 0         # the top-up named no store
    code, out, _ = site_cli("--json", "report", "daily", "--days", "1", "--store", "south")
    assert [(r["store"], r["taps"]) for r in json.loads(out)] == [("south", 2)]
    code, out, _ = site_cli("report", "daily", "--days", "1", "--store", "south", "--csv")
    head, row = out.strip().splitlines()
    assert head.startswith("date,store,") and ",south," in row
    assert site_cli("report", "daily", "--store", "west")[0] == 2
    code, out, _ = site_cli("--json", "report", "devices", "--store", "north")
    assert [(r["device_id"], r["store"], r["taps"]) for r in json.loads(out)] == [("K1", "north", 1)]


def test_single_store_daily_report_has_no_store_split(site_cli):
    site_cli("store", "add", "north")
    site_cli("device", "add", "K1", "kiosk", "--store", "north")
    code, out, _ = site_cli("--json", "report", "daily", "--days", "2")
    assert [("store" in r) for r in json.loads(out)] == [False, False]


def test_a_sale_armed_on_a_store_reader_is_priced_by_the_store():
    from host.rules import sales
    db, admin, engine, clock, mid = chain_site()
    with engine.transaction() as conn:
        north = sales.arm(conn, engine.policy, "W1", amount_fen=None, items=[], service=1,
                          timeout_s=60, key=None, actor="t", ts=int(clock.now.timestamp()))
        chain = sales.arm(conn, engine.policy, "W2", amount_fen=None, items=[], service=1,
                          timeout_s=60, key=None, actor="t", ts=int(clock.now.timestamp()))
    assert (north["amount_fen"], chain["amount_fen"]) == (20_00, 25_00)


def test_counter_cash_belongs_to_the_store_that_took_it(site_cli, both_backends):
    """Top-ups, cash pass sales and refunds go to the store named by --store, else to the
    store of the staff account making them; the rest is chain-wide only."""
    from host.store.db import open_db
    for args in (("store", "add", "north"), ("store", "add", "south"),
                 ("device", "add", "K1", "kiosk", "--store", "north"),
                 ("device", "add", "K2", "kiosk", "--store", "south"),
                 ("member", "add"), ("card", "enroll", "1", UID),
                 ("topup", "1", "100.00", "--store", "north"),
                 ("topup", "1", "30.00"),                             # no store named
                 ("pass", "sell", "1", "wash10", "--store", "south"),  # 200.00 cash
                 ("refund", "1", "5.00", "--store", "south"),
                 ("tap", "K2", UID, "--amount", "4.00")):
        assert site_cli(*args)[0] == 0, args
    code, _, err = site_cli("topup", "1", "1.00", "--store", "west")
    assert code == 2 and "unknown store 'west'" in err
    db = open_db(site_cli.db)
    try:
        staff.add_staff(db, "ann", "cashier", "correct horse", actor="t", store="north")
        Admin(db, actor="ann").topup(1, 20_00)                      # ann's counter: north
    finally:
        db.conn.close()
    code, out, _ = site_cli("--json", "report", "daily", "--days", "1")
    rows = {r["store"]: r for r in json.loads(out)}
    assert {k: (rows[k]["topups_fen"], rows[k]["pass_sales_fen"], rows[k]["refunds_fen"],
                rows[k]["revenue_fen"]) for k in rows} == {
        "*": (150_00, 200_00, 5_00, 345_00), "north": (120_00, 0, 0, 120_00),
        "south": (0, 200_00, 5_00, 195_00)}
    assert rows["south"]["consumption_fen"] > 0
