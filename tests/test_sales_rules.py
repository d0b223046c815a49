# Runs on CPython (pytest): sales armed on a reader and paid by its next tap, in the tap's transaction.
import pytest

from host.errors import Conflict, InputError, NotFound
from host.ledger import book as ledger
from host.rules import sales
from host.rules.engine import Tap
from host.store.db import transaction
from site_support import UID, make_site


@pytest.fixture
def site():
    return make_site(topup_fen=10000)


def now(clock):
    return int(clock().timestamp())


def arm(db, engine, clock, device="K1", key="k1", **kw):
    args = dict(amount_fen=None, items=[], service=0, timeout_s=60)
    args.update(kw)
    with transaction(db) as conn:
        return sales.arm(conn, engine.policy, device, key=key, actor="test", ts=now(clock), **args)


def charged(db):
    return db.execute("SELECT coalesce(sum(charged_fen), 0) FROM taps").fetchone()[0]


def test_tap_pays_the_armed_sale_once_at_the_tier_price(site):
    db, admin, engine, clock, mid = site
    s = arm(db, engine, clock, amount_fen=2400)
    assert s["state"] == "armed" and s["amount_fen"] == 2400 and "24.00" in s["text"]
    d = engine.decide(Tap("K1", 1, UID, amount_fen=2400, sale_id=s["id"]))
    assert (d.verdict, d.sale_id) == ("grant", s["id"])
    assert d.balance_fen == 10000 - 2280                  # silver pays 95%
    paid = sales.get(db.conn, s["id"])
    assert paid["state"] == "paid" and paid["result"]["charged_fen"] == 2280
    assert paid["result"]["points_earned"] == 22
    # The next tap finds no sale: a kiosk without fixed price refuses it.
    db.execute("UPDATE devices SET settings = json_set(settings, '$.fixed_price', json('false'))"
               " WHERE device_id = 'K1'")
    again = engine.decide(Tap("K1", 2, UID, amount_fen=2400))
    assert (again.verdict, again.reason) == ("deny", "no_sale")
    assert charged(db) == 2280 and ledger.verify(db) == []


def test_products_are_priced_from_the_catalogue(site):
    db, admin, engine, clock, mid = site
    s = arm(db, engine, clock, items=[{"product": "coffee", "qty": 2}, {"product": "water"}])
    assert s["amount_fen"] == 2 * 1200 + 300
    assert [i["product"] for i in s["items"]] == ["coffee", "water"]
    d = engine.decide(Tap("K1", 1, UID))            # a reader that sends no sale id
    assert d.verdict == "grant" and charged(db) == 2700 * 95 // 100


def test_expired_and_cancelled_sales_are_never_charged(site):
    db, admin, engine, clock, mid = site
    db.execute("UPDATE devices SET settings = json_set(settings, '$.fixed_price', json('false'))"
               " WHERE device_id = 'K1'")
    s = arm(db, engine, clock, amount_fen=500, timeout_s=30)
    clock.set(2026, 3, 10, 12, 1)                    # 60 s later
    d = engine.decide(Tap("K1", 1, UID, sale_id=s["id"]))
    assert (d.verdict, d.reason) == ("deny", "no_sale")
    assert sales.get(db.conn, s["id"])["state"] == "expired"
    s2 = arm(db, engine, clock, key="k2", amount_fen=500)
    with transaction(db) as conn:
        assert sales.cancel(conn, s2["id"], now(clock))["state"] == "cancelled"
    d = engine.decide(Tap("K1", 2, UID, sale_id=s2["id"]))
    assert (d.verdict, d.reason) == ("deny", "no_sale") and charged(db) == 0


def test_one_armed_sale_per_reader_and_idempotent_arm(site):
    db, admin, engine, clock, mid = site
    s = arm(db, engine, clock, amount_fen=500)
    again = arm(db, engine, clock, amount_fen=500)           # same key, same body
    assert again["id"] == s["id"] and again["replayed"]
    with pytest.raises(Conflict):
        arm(db, engine, clock, key="other", amount_fen=700)
    with pytest.raises(Conflict):
        arm(db, engine, clock, amount_fen=900)                # same key, other body
    assert db.execute("SELECT count(*) FROM sales").fetchone()[0] == 1


def test_a_tap_naming_another_sale_pays_nothing_and_keeps_the_armed_one(site):
    db, admin, engine, clock, mid = site
    s = arm(db, engine, clock, amount_fen=500)
    d = engine.decide(Tap("K1", 1, UID, sale_id=s["id"] + 7))
    assert (d.verdict, d.reason, d.sale_id) == ("deny", "no_sale", s["id"] + 7)
    assert sales.get(db.conn, s["id"])["state"] == "armed" and charged(db) == 0


def test_a_refused_tap_ends_the_sale_denied(site):
    db, admin, engine, clock, mid = site
    s = arm(db, engine, clock, amount_fen=50000)
    d = engine.decide(Tap("K1", 1, UID, sale_id=s["id"]))
    assert d.reason == "insufficient_balance"
    got = sales.get(db.conn, s["id"])
    assert got["state"] == "denied" and got["reason"] == "insufficient_balance"
    assert charged(db) == 0 and ledger.verify(db) == []


def test_wash_program_armed_through_a_sale(site):
    db, admin, engine, clock, mid = site
    s = arm(db, engine, clock, device="W1", service=2)
    assert s["amount_fen"] == 4000 and "Premium" in s["text"]
    d = engine.decide(Tap("W1", 1, UID, service=1, sale_id=s["id"]))   # the sale's program wins
    assert d.verdict == "grant" and charged(db) == 4000 * 95 // 100


@pytest.mark.parametrize("kw, err", [
    (dict(amount_fen=0), InputError), (dict(items=[{"product": "nope"}]), InputError),
    (dict(amount_fen=100, service=1), InputError), (dict(service=1), InputError),
    (dict(amount_fen=100, timeout_s=0), InputError)])
def test_bad_sale_requests_write_nothing(site, kw, err):
    db, admin, engine, clock, mid = site
    with pytest.raises(err):
        arm(db, engine, clock, **kw)
    assert db.execute("SELECT count(*) FROM sales").fetchone()[0] == 0


def test_sales_only_on_kiosk_and_wash_readers(site):
    db, admin, engine, clock, mid = site
    with pytest.raises(InputError):
        arm(db, engine, clock, device="G1", amount_fen=100)
    with pytest.raises(NotFound):
        arm(db, engine, clock, device="nope", amount_fen=100)


def test_reader_dropping_off_denies_its_sale(site):
    db, admin, engine, clock, mid = site
    s = arm(db, engine, clock, amount_fen=500)
    with transaction(db) as conn:
        assert sales.end_for_device(conn, "K1", now(clock), "offline") == [s["id"]]
    d = engine.decide(Tap("K1", 1, UID, sale_id=s["id"]))
    assert d.reason == "no_sale" and sales.get(db.conn, s["id"])["reason"] == "offline"
    assert charged(db) == 0


def test_a_voided_sale_tap_is_reversed_and_the_sale_no_longer_paid(site):
    from host.rules.voids import void_tap
    db, admin, engine, clock, mid = site
    s = arm(db, engine, clock, amount_fen=1000)
    engine.decide(Tap("K1", 5, UID, sale_id=s["id"]))
    assert sales.get(db.conn, s["id"])["state"] == "paid"
    void_tap(engine, "K1", 5, None, void_seq=6)
    got = sales.get(db.conn, s["id"])
    assert (got["state"], got["reason"]) == ("denied", "voided")
    assert ledger.balances(db.conn, mid)["principal_fen"] + \
        ledger.balances(db.conn, mid)["bonus_fen"] == 10000 and ledger.verify(db) == []


def test_a_program_button_arms_its_program_and_a_second_press_replaces_it(site):
    db, admin, engine, clock, mid = site
    with transaction(db) as conn:
        first, replaced = sales.arm_button(conn, engine.policy, "W1", 1, now(clock))
    assert (first["service"], first["amount_fen"], replaced) == (1, 2500, [])
    assert "Basic wash" in first["text"] and "25.00" in first["text"]
    with transaction(db) as conn:
        second, replaced = sales.arm_button(conn, engine.policy, "W1", 2, now(clock))
    assert replaced == [first["id"]] and second["amount_fen"] == 4000
    assert sales.get(db.conn, first["id"])["state"] == "cancelled"
    d = engine.decide(Tap("W1", 1, UID, service=2, sale_id=second["id"]))
    assert d.verdict == "grant" and charged(db) == 4000 * 95 // 100


def test_a_button_leaves_a_sale_armed_through_the_api_alone(site):
    db, admin, engine, clock, mid = site
    s = arm(db, engine, clock, device="W1", service=2)
    with pytest.raises(Conflict), transaction(db) as conn:
        sales.arm_button(conn, engine.policy, "W1", 1, now(clock))
    assert sales.get(db.conn, s["id"])["state"] == "armed"


def test_device_add_fixed_price_off_makes_a_kiosk_refuse_taps_without_a_sale(tmp_path, capsys):
    from host.cli import main as cli_main
    from host.rules.engine import Engine, Tap
    from host.store.db import open_db
    db_path = str(tmp_path / "site.db")
    assert cli_main(["--db", db_path, "init"]) == 0
    assert cli_main(["--db", db_path, "device", "add", "K9", "kiosk", "--fixed-price", "off"]) == 0
    assert cli_main(["--db", db_path, "device", "add", "K8", "kiosk"]) == 0
    assert cli_main(["--db", db_path, "device", "add", "K7", "kiosk", "--fixed-price", "maybe"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert cli_main(["--db", db_path, "member", "add"]) == 0
    assert cli_main(["--db", db_path, "card", "enroll", "1", "04A1B2C3D4E5F6"]) == 0
    assert cli_main(["--db", db_path, "topup", "1", "50.00"]) == 0
    engine = Engine(open_db(db_path))
    assert engine.decide(Tap("K9", 1, "04A1B2C3D4E5F6", amount_fen=500)).reason == "no_sale"
    d = engine.decide(Tap("K8", 1, "04A1B2C3D4E5F6", amount_fen=500))
    assert (d.verdict, d.reason) == ("grant", "ok")
