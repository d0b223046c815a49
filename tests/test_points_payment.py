# Runs on CPython (pytest): paying part of a kiosk sale with points (#16), with a settable clock.
import pytest

from host.errors import InputError
from host.ledger import book as ledger
from host.rules import sales
from host.rules.engine import Tap
from host.rules.pay_points import POINTS_MAX
from host.rules.policy import build_policy, load_policy
from host.rules.voids import void_tap
from host.store import reports
from host.store.db import transaction
from site_support import UID, make_site


def policy(**rules):
    raw = load_policy().raw
    return build_policy({**raw, "points_payment": {**raw["points_payment"], **rules}})


def site(topup_fen=10000, points=2000, **rules):
    db, admin, engine, clock, mid = make_site(topup_fen=topup_fen)
    if rules:
        engine.policy = admin.policy = policy(**rules)
    if points:
        admin.grant_points(mid, points, "opening gift")
    return db, admin, engine, clock, mid


def state(db, mid):
    return (ledger.balances(db.conn, mid),
            db.execute("SELECT id, remaining, expires_at FROM lots WHERE member_id = ? "
                       "ORDER BY id", (mid,)).fetchall())


def tap_points(db):
    return db.execute("SELECT tap_id, points, fen FROM tap_points ORDER BY tap_id").fetchall()


def test_max_share_cap_stored_value_for_the_rest_points_earned_on_it():
    db, admin, engine, clock, mid = site()
    d = engine.decide(Tap("K1", 1, UID, amount_fen=2000, use_points=POINTS_MAX))
    # silver pays 19.00; at most 50 % with points: 950 points (1 fen each), 9.50 from balance
    assert d.verdict == "grant" and d.balance_fen == 10000 - 950
    assert "积分950抵9.50" in d.text and "paid 9.50" in d.text
    assert d.points == 2000 - 950 + 9                  # 9 points earned on the 9.50 paid
    row = db.execute("SELECT charged_fen, points_earned FROM taps").fetchone()
    assert row == (950, 9)
    assert tap_points(db) == [(1, 950, 950)]
    pay = db.execute("SELECT currency, delta FROM ledger WHERE tap_id = 1 AND kind IN "
                     "('pay', 'spend') ORDER BY id").fetchall()
    assert sorted(c for c, _ in pay) == ["points", "principal"]    # one row per currency
    assert ledger.verify(db) == []


def test_a_number_of_points_below_the_cap_and_no_points_without_asking():
    db, admin, engine, clock, mid = site()
    d = engine.decide(Tap("K1", 1, UID, amount_fen=2000, use_points=300))
    assert d.balance_fen == 10000 - 1600 and d.points == 2000 - 300 + 16
    d = engine.decide(Tap("K1", 2, UID, amount_fen=2000, use_points=5000))   # cut to the cap
    assert tap_points(db)[-1][1:] == (950, 950)
    engine.decide(Tap("K1", 3, UID, amount_fen=2000))
    assert len(tap_points(db)) == 2 and ledger.verify(db) == []


def test_fewer_than_min_points_are_not_used():
    db, admin, engine, clock, mid = site(points=99)
    d = engine.decide(Tap("K1", 1, UID, amount_fen=2000, use_points=POINTS_MAX))
    assert d.verdict == "grant" and d.balance_fen == 10000 - 1900 and d.points == 99 + 19
    assert "积分" not in d.text and tap_points(db) == []


def test_coupon_first_then_points_then_stored_value():
    db, admin, engine, clock, mid = site()
    admin.issue_coupon(mid, "welcome")                 # 5.00 off from 30.00
    d = engine.decide(Tap("K1", 1, UID, amount_fen=4000, use_points=POINTS_MAX))
    # 38.00 member price - 5.00 coupon = 33.00; points pay 16.50, balance 16.50
    assert d.verdict == "grant" and "券-5.00" in d.text and "积分1650" in d.text
    assert d.balance_fen == 10000 - 1650 and tap_points(db) == [(1, 1650, 1650)]
    assert ledger.verify(db) == []


def test_lots_used_earliest_expiry_first_and_expired_points_never_pay():
    db, admin, engine, clock, mid = site(points=300)        # March 2026: expires April 2027
    clock.set(2026, 5, 10, 12, 0)
    admin.grant_points(mid, 500, "May gift")                  # expires June 2027
    lots = db.execute("SELECT id, expires_at FROM lots WHERE currency = 'points' ORDER BY "
                      "expires_at").fetchall()
    assert len(lots) == 2
    engine.decide(Tap("K1", 1, UID, amount_fen=1000, use_points=400))
    left = dict(db.execute("SELECT id, remaining FROM lots WHERE currency = 'points'"))
    # The March lot first; 5 points earned on the 5.50 paid join the May lot.
    assert left[lots[0][0]] == 0 and left[lots[1][0]] == 400 + 5
    admin.grant_points(mid, 300, "another")                          # joins the May lot
    clock.set(2027, 4, 2, 12, 0)                                     # the March lot is gone
    admin.grant_points(mid, 200, "April gift")                       # expires May 2028
    clock.set(2027, 6, 2, 12, 0)                                     # the May lot expired
    d = engine.decide(Tap("K1", 2, UID, amount_fen=2000, use_points=POINTS_MAX))
    assert tap_points(db)[-1][1] == 200 and d.points == 0 + 17
    assert ledger.verify(db) == []


def test_void_gives_back_points_to_their_lots_and_stored_value_exactly_once():
    db, admin, engine, clock, mid = site(points=300)
    clock.set(2026, 5, 10, 12, 0)
    admin.grant_points(mid, 700, "May gift")
    before = state(db, mid)
    d = engine.decide(Tap("K1", 7, UID, amount_fen=2000, use_points=POINTS_MAX))
    assert d.verdict == "grant" and tap_points(db)[0][1] == 950
    v = void_tap(engine, "K1", 7, void_seq=8)
    assert v.outcome == "reversed" and v.balance_fen == 10000 and v.points == 1000
    assert state(db, mid) == before                       # same lots, same expiry
    again = void_tap(engine, "K1", 7, void_seq=8)
    assert again.replayed and state(db, mid) == before
    day = reports.daily(db, engine.policy, clock().date(), days=1)[0]
    assert day["points_paid_fen"] == 0 and day["consumption_fen"] == 0
    assert ledger.verify(db) == []


def test_void_after_the_lot_expired_returns_it_written_off_again():
    db, admin, engine, clock, mid = site(points=1000)            # expires April 2027
    clock.set(2027, 3, 31, 23, 59)
    engine.decide(Tap("K1", 7, UID, amount_fen=2000, use_points=POINTS_MAX))
    clock.set(2027, 4, 1, 0, 1)
    v = void_tap(engine, "K1", 7, void_seq=8)
    assert v.balance_fen == 10000
    engine.decide(Tap("K1", 9, UID, amount_fen=100))         # the next tap sweeps the lot
    assert ledger.balances(db.conn, mid)["points"] == 0 and ledger.verify(db) == []


def test_retried_tap_frame_pays_once():
    db, admin, engine, clock, mid = site()
    first = engine.decide(Tap("K1", 5, UID, amount_fen=2000, use_points=POINTS_MAX))
    after = state(db, mid)
    again = engine.decide(Tap("K1", 5, UID, amount_fen=2000, use_points=POINTS_MAX))
    assert again.replayed and again.text == first.text and state(db, mid) == after
    assert len(tap_points(db)) == 1 and ledger.verify(db) == []


def test_short_of_stored_value_is_denied_and_nothing_moves():
    db, admin, engine, clock, mid = site(topup_fen=500)
    before = state(db, mid)
    d = engine.decide(Tap("K1", 1, UID, amount_fen=2000, use_points=POINTS_MAX))
    assert (d.verdict, d.reason) == ("deny", "insufficient_balance")
    assert state(db, mid) == before and tap_points(db) == []


def test_short_of_points_partial_or_deny_by_policy():
    db, admin, engine, clock, mid = site(points=500)
    engine.decide(Tap("K1", 1, UID, amount_fen=2000, use_points=800))
    assert tap_points(db)[0][1] == 500                          # partial: what they have
    db, admin, engine, clock, mid = site(points=500, short="deny")
    before = state(db, mid)
    d = engine.decide(Tap("K1", 1, UID, amount_fen=2000, use_points=800))
    assert (d.verdict, d.reason) == ("deny", "insufficient_balance") and "积分不足" in d.text
    assert state(db, mid) == before
    d = engine.decide(Tap("K1", 2, UID, amount_fen=2000, use_points=POINTS_MAX))
    assert d.verdict == "grant" and tap_points(db)[0][1] == 500    # "max" is never short


def test_points_value_other_than_one_fen():
    db, admin, engine, clock, mid = site(points_per_yuan=10, min_points=1)
    engine.decide(Tap("K1", 1, UID, amount_fen=2000, use_points=POINTS_MAX))
    assert tap_points(db) == [(1, 95, 950)]                      # 10 points = 1.00 yuan
    assert ledger.verify(db) == []


def test_armed_sale_with_points_and_its_result():
    db, admin, engine, clock, mid = site()
    ts = int(clock().timestamp())
    with transaction(db) as conn:
        s = sales.arm(conn, engine.policy, "K1", amount_fen=2000, items=[], service=0,
                      timeout_s=60, key="s1", actor="t", ts=ts, points="max")
    assert s["points"] == "max"
    engine.decide(Tap("K1", 1, UID, sale_id=s["id"]))
    paid = sales.get(db.conn, s["id"])
    assert paid["state"] == "paid"
    assert (paid["result"]["points_paid"], paid["result"]["points_paid_fen"]) == (950, 950)
    assert paid["result"]["charged_fen"] == 950
    day = reports.daily(db, engine.policy, clock().date(), days=1)[0]
    assert (day["points_paid_fen"], day["consumption_fen"]) == (950, 950)


@pytest.mark.parametrize("points, rules, message", [
    (50, {}, "from 100"), ("all", {}, "max"), (True, {}, "max"),
    ("max", {"enabled": False}, "not on"), ("max", {"kinds": ["wash"]}, "not on")])
def test_arming_a_bad_points_request_is_refused_and_arms_nothing(points, rules, message):
    db, admin, engine, clock, mid = site(**rules)
    with pytest.raises(InputError, match=message), transaction(db) as conn:
        sales.arm(conn, engine.policy, "K1", amount_fen=2000, items=[], service=0,
                  timeout_s=60, key="s1", actor="t", ts=0, points=points)
    assert db.execute("SELECT count(*) FROM sales").fetchone()[0] == 0


@pytest.mark.parametrize("rules, message", [
    ({"points_per_yuan": 3}, "divide 100"), ({"max_share_pct": 0}, "max_share_pct"),
    ({"short": "all"}, "short"), ({"kinds": ["gate"]}, "kinds"), ({"enabled": "yes"}, "enabled"),
    ({"bogus": 1}, "unknown key points_payment.bogus")])
def test_bad_policy_is_refused_naming_the_key(rules, message):
    with pytest.raises(InputError, match=message):
        policy(**rules)


def test_verify_names_a_tap_whose_points_disagree_with_its_ledger():
    db, admin, engine, clock, mid = site()
    engine.decide(Tap("K1", 1, UID, amount_fen=2000, use_points=POINTS_MAX))
    db.execute("DROP TRIGGER tap_points_no_update")
    db.execute("UPDATE tap_points SET points = 10")
    assert ledger.verify(db) == ["tap 1: paid 10 points, ledger 950"]


# ------------------------------------------------------------------ the CLI
def test_cli_tap_use_points_and_bad_input(site_cli):
    import json

    def j(*argv):
        code, out, err = site_cli("--json", *argv)
        assert code == 0, err
        return json.loads(out)

    j("member", "add", "--consent-terms", "t1", "--name", "Li")
    j("card", "enroll", "1", UID)
    j("device", "add", "K1", "kiosk")
    j("device", "add", "W1", "wash")
    j("topup", "1", "100.00")
    j("points", "grant", "1", "500", "--reason", "opening gift")
    before = site_cli("export")[1]
    for argv, message in ((("--use-points", "lots"), "number of points"),
                          (("--use-points", "50"), "from 100"),
                          (("--use-points", "-5"), "number of points")):
        code, out, err = site_cli("tap", "K1", UID, "--amount", "12.00", *argv)
        assert code == 2 and message in err and err.count("\n") == 1, err
    code, out, err = site_cli("tap", "W1", UID, "--service", "1", "--use-points")
    assert code == 2 and "not on for wash" in err
    assert site_cli("export")[1] == before
    d = j("tap", "K1", UID, "--amount", "12.00", "--use-points")
    # 11.40 member price: 500 points (5.00) within the 5.70 cap, 6.40 from balance
    assert d["verdict"] == "grant" and "积分500抵5.00" in d["text"]
    assert d["balance_fen"] == 10000 - 640 and d["points"] == 6
    assert j("verify")["problems"] == []
    day = j("report", "daily", "--days", "1")
    assert day[0]["points_paid_fen"] == 500


def test_cli_retried_points_tap_with_its_key_pays_once(site_cli):
    import json
    for argv in (("member", "add", "--consent-terms", "t1", "--name", "Li"),
                 ("card", "enroll", "1", UID), ("device", "add", "K1", "kiosk"),
                 ("topup", "1", "100.00"), ("points", "grant", "1", "500", "--reason", "x")):
        assert site_cli(*argv)[0] == 0
    tap = ("--json", "tap", "K1", UID, "--amount", "12.00", "--idempotency-key", "pos-9")
    first = json.loads(site_cli(*tap, "--use-points")[1])
    again = json.loads(site_cli(*tap, "--use-points")[1])
    assert (first["replayed"], again["replayed"]) == (False, True)
    assert again["balance_fen"] == first["balance_fen"] == 10000 - 640
    code, _out, err = site_cli(*tap)                     # the same key without points
    assert code == 2 and "pos-9" in err
    code, _out, err = site_cli(*tap, "--use-points", "300")
    assert code == 2 and "pos-9" in err
    assert json.loads(site_cli("--json", "member", "show", "1")[1])["points"] == 6


def test_a_wash_sale_with_points_only_where_the_policy_says():
    db, admin, engine, clock, mid = site(kinds=["kiosk", "wash"])
    ts = int(clock().timestamp())
    with transaction(db) as conn:
        s = sales.arm(conn, engine.policy, "W1", amount_fen=None, items=[], service=1,
                      timeout_s=60, key="w1", actor="t", ts=ts, points=500)
    d = engine.decide(Tap("W1", 1, UID, service=1, sale_id=s["id"]))
    # basic wash 25.00 at silver 23.75: 500 points (5.00), 18.75 from the balance
    assert d.verdict == "grant" and d.balance_fen == 10000 - 1875
    assert tap_points(db) == [(1, 500, 500)] and ledger.verify(db) == []
