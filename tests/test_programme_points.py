# Runs on CPython (pytest): the points catalogue, manual grants and the no-pooling gift option (#16 F).
import pytest

from host.admin import Admin
from host.errors import Conflict, InputError, InsufficientFunds
from host.ledger import book as ledger
from host.rules.policy import build_policy, load_policy
from host.store import views
from site_support import make_site

# Every test of this module runs on SQLite and on PostgreSQL (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("both_backends")


def grant(admin, mid, n=500):
    return admin.grant_points(mid, n, "opening gift")


def test_catalogue_price_stock_and_sold_out():
    db, admin, engine, clock, mid = make_site()
    grant(admin, mid)
    admin.add_item("towel", 100, stock_units=2)
    assert admin.redeem_points(mid, item="towel")["redeemed_points"] == 100
    with pytest.raises(InputError, match="costs 100 points, not 50"):
        admin.redeem_points(mid, 50, item="towel")
    with pytest.raises(InsufficientFunds, match="out of stock"):
        admin.redeem_points(mid, item="towel", qty=2)
    admin.redeem_points(mid, item="towel")
    with pytest.raises(InsufficientFunds, match="out of stock"):          # 换完即止
        admin.redeem_points(mid, item="towel")
    with pytest.raises(InputError, match="not in the points catalogue"):
        admin.redeem_points(mid, 10, item="free text")
    assert views.catalogue(db) == [{"item": "towel", "points": 100, "stock": 0, "redeemed": 2}]
    assert ledger.balances(db.conn, mid)["points"] == 300
    assert ledger.verify(db) == []


def test_reversed_redemption_restocks_and_withdrawn_item_refused():
    db, admin, engine, clock, mid = make_site()
    grant(admin, mid)
    admin.add_item("cup", 50, stock_units=1)
    admin.redeem_points(mid, item="cup")
    entry = db.execute("SELECT id FROM ledger WHERE kind = 'redeem'").fetchone()[0]
    admin.reverse(entry)
    assert views.catalogue(db)[0]["stock"] == 1
    admin.restock("cup", 4)
    admin.withdraw_item("cup")
    with pytest.raises(Conflict, match="withdrawn"):
        admin.redeem_points(mid, item="cup")
    assert views.catalogue(db) == []


def test_unlimited_item_and_empty_catalogue_free_text():
    db, admin, engine, clock, mid = make_site()
    grant(admin, mid)
    admin.redeem_points(mid, 10, item="legacy goods")       # no catalogue yet
    admin.add_item("water", 5)
    admin.redeem_points(mid, item="water", qty=3)
    assert views.catalogue(db)[0]["stock"] == -1
    assert ledger.balances(db.conn, mid)["points"] == 500 - 10 - 15


def test_grant_needs_a_reason_kept_in_the_ledger():
    db, admin, engine, clock, mid = make_site()
    with pytest.raises(InputError, match="reason"):
        admin.grant_points(mid, 10, "  ")
    admin.grant_points(mid, 10, "birthday party")
    assert db.execute("SELECT kind, delta, note FROM ledger").fetchone() == \
        ("grant", 10, "birthday party")


def test_no_pooling_gifts_from_one_member_only():
    db, _, engine, clock, a = make_site()
    raw = load_policy().raw
    pol = build_policy({**raw, "points": {**raw["points"], "gift_pooling": False}})
    admin = Admin(db, pol, clock)
    b = admin.add_member("B", consent_terms="t1")["member_id"]
    c = admin.add_member("C", consent_terms="t1")["member_id"]
    for m in (a, b):
        grant(admin, m)
    admin.gift_points(a, c, 10)
    admin.gift_points(a, c, 10)                               # same giver: fine
    with pytest.raises(Conflict, match="gift_pooling"):
        admin.gift_points(b, c, 10)
    with pytest.raises(Exception, match="gift_pooling"):
        build_policy({**raw, "points": {**raw["points"], "gift_pooling": "no"}})


def test_catalogue_and_grant_cli_bad_input(site_cli):
    run = site_cli
    run("member", "add", "--name", "A", "--consent-terms", "t1")
    assert run("points", "grant", "1", "100", "--reason", "welcome")[0] == 0
    assert run("catalogue", "add", "mug", "30", "--stock", "1")[0] == 0
    assert run("points", "redeem", "1", "--item", "mug")[0] == 0
    for argv in (["points", "grant", "1", "10"], ["points", "grant", "1", "0", "--reason", "x"],
                 ["catalogue", "add", "mug", "30"], ["catalogue", "add", "x", "0"],
                 ["catalogue", "restock", "nope", "1"], ["catalogue", "withdraw", "nope"],
                 ["points", "redeem", "1", "--item", "mug"],
                 ["points", "redeem", "1", "--to-balance"], ["catalogue", "add", "", "5"]):
        before = run("export")[1]
        code, out, err = run(*argv)
        assert code == 2 and err.count("\n") == 1, (argv, err)
        assert run("export")[1] == before
