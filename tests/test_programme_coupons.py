# Runs on CPython (pytest): coupons (#16 D) — kinds, thresholds, priority, validity, single use, rules, voids, report, CLI.
import json

import pytest

from host.admin import Admin
from host.errors import Conflict
from host.ledger import book as ledger
from host.rules.engine import Engine, Tap
from host.rules.policy import build_policy, load_policy
from host.rules.voids import void_tap
from host.store import programme_reports, views
from site_support import UID, make_site

# Every test of this module runs on SQLite and on PostgreSQL (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("both_backends")

TEMPLATES = {
    "five_off_30": {"kind": "amount_off", "value": "5.00", "min_spend": "30.00",
                    "covers": ["kiosk", "wash"]},
    "ten_pct": {"kind": "percent_off", "value": 10, "covers": []},
    "free_wash": {"kind": "free_service", "covers": ["wash:1"], "valid_days": 10},
    "free_entry": {"kind": "free_service", "covers": ["gate"]},
    "mug": {"kind": "gift_item", "item": "mug"},
}


def policy(**rules):
    raw = load_policy().raw
    return build_policy({**raw, "coupons": TEMPLATES,
                         "coupon_rules": {**raw["coupon_rules"], **rules}})


def site(topup_fen=0, **rules):
    db, admin, engine, clock, mid = make_site(topup_fen=topup_fen)
    pol = policy(**rules)
    return db, Admin(db, pol, clock), Engine(db, pol, clock), clock, mid


def coupon_events(db):
    return db.execute("SELECT coupon_id, event, saved_fen FROM coupon_events ORDER BY id"
                      ).fetchall()


def test_amount_off_needs_its_threshold_and_is_used_once():
    db, admin, engine, clock, mid = site(topup_fen=19000)
    cid = admin.issue_coupon(mid, "five_off_30")["coupon_id"]
    d = engine.decide(Tap("K1", 1, UID, amount_fen=2000))           # 19.00 < 30.00
    assert "券" not in d.text and d.balance_fen == 19000 - 1900
    d = engine.decide(Tap("K1", 2, UID, amount_fen=4000))           # 38.00 -> 33.00
    assert d.text.startswith("券-5.00 paid 33.00") and d.balance_fen == 19000 - 1900 - 3300
    d = engine.decide(Tap("K1", 3, UID, amount_fen=4000))           # used: full price
    assert "券" not in d.text
    assert coupon_events(db) == [(cid, "redeem", 500)]
    assert ledger.verify(db) == []


def test_best_value_first_then_earliest_expiry():
    db, admin, engine, clock, mid = site(topup_fen=50000)
    a = admin.issue_coupon(mid, "five_off_30")["coupon_id"]
    b = admin.issue_coupon(mid, "ten_pct")["coupon_id"]
    engine.decide(Tap("K1", 1, UID, amount_fen=10000))             # 95.00: 10% = 9.50 > 5.00
    engine.decide(Tap("K1", 2, UID, amount_fen=4000))              # 38.00: 5.00 left
    assert coupon_events(db) == [(b, "redeem", 950), (a, "redeem", 500)]


def test_free_wash_without_balance_and_validity_window():
    db, admin, engine, clock, mid = site()
    admin.issue_coupon(mid, "free_wash")
    d = engine.decide(Tap("W1", 1, UID, service=2))                 # premium: not covered
    assert d.verdict == "deny"
    clock.set(2026, 3, 25, 12, 0)                                   # 15 days: expired
    d = engine.decide(Tap("W1", 2, UID, service=1))
    assert (d.verdict, d.reason) == ("deny", "insufficient_balance")
    clock.set(2026, 3, 10, 13, 0)
    admin2 = Admin(db, admin.policy, clock)
    admin2.issue_coupon(mid, "free_wash", key="again")
    d = engine.decide(Tap("W1", 3, UID, service=1))
    assert d.verdict == "grant" and "free" in d.text


def test_free_entry_at_the_gate_only_when_no_pass_pays():
    db, admin, engine, clock, mid = site()
    admin.issue_coupon(mid, "free_entry")
    admin.sell_pass(mid, "gym_month")
    assert engine.decide(Tap("G1", 1, UID, direction="in")).text.startswith("Welcome")
    assert coupon_events(db) == []
    db2, admin2, engine2, clock2, mid2 = site()
    admin2.issue_coupon(mid2, "free_entry")
    d = engine2.decide(Tap("G1", 1, UID, direction="in"))
    assert d.verdict == "grant" and "free" in d.text and len(coupon_events(db2)) == 1


def test_void_gives_the_coupon_back():
    db, admin, engine, clock, mid = site(topup_fen=19000)
    cid = admin.issue_coupon(mid, "five_off_30")["coupon_id"]
    engine.decide(Tap("K1", 7, UID, amount_fen=4000))
    void_tap(engine, "K1", 7, void_seq=8)
    assert coupon_events(db) == [(cid, "redeem", 500), (cid, "unredeem", 500)]
    assert ledger.balances(db.conn, mid)["principal_fen"] == 19000
    assert [c["state"] for c in views.coupons(db, mid, int(clock().timestamp()), True)] == \
        ["open"]
    d = engine.decide(Tap("K1", 9, UID, amount_fen=4000))
    assert d.text.startswith("券-5.00")


def test_gift_item_at_the_counter_once_and_never_at_a_tap():
    db, admin, engine, clock, mid = site(topup_fen=19000)
    cid = admin.issue_coupon(mid, "mug")["coupon_id"]
    engine.decide(Tap("K1", 1, UID, amount_fen=4000))
    assert coupon_events(db) == []
    assert admin.redeem_coupon(cid)["item"] == "mug"
    with pytest.raises(Conflict, match="used already"):
        admin.redeem_coupon(cid)


def test_rules_signup_first_card_topup_referral_once_each():
    db, admin, engine, clock, mid = site(signup="ten_pct", first_card="mug", referral="mug",
                                         topup=[{"min": "500.00", "coupon": "free_wash"}])
    new = admin.add_member("Wang", consent_terms="t1", referrer_id=mid)["member_id"]
    admin.enroll_card(new, "04000000000009")
    admin.enroll_card(new, "0400000000000A")
    admin.topup(new, 50000)
    admin.topup(new, 10000)
    got = db.execute("SELECT member_id, template, source FROM coupons ORDER BY id").fetchall()
    assert got == [(new, "ten_pct", "signup"), (new, "mug", "first_card"),
                   (new, "free_wash", "topup"), (mid, "mug", "referral"),
                   (new, "mug", "referral")]


def test_birthday_and_winback_run_daily_and_once():
    db, admin, engine, clock, mid = site(birthday="free_wash", winback="ten_pct",
                                         winback_days=30)
    admin.edit_member(mid, birthday="03-15")
    out = admin.run_coupon_rules()["issued"]                        # 03-10: 5 days before
    assert [(r["member_id"], r["rule"]) for r in out] == [(mid, "birthday")]
    assert admin.run_coupon_rules()["issued"] == []
    clock.set(2026, 4, 20, 12, 0)                                   # idle 41 days
    assert [r["rule"] for r in admin.run_coupon_rules()["issued"]] == ["winback"]
    assert admin.run_coupon_rules()["issued"] == []
    admin.topup(mid, 1000)                                          # back, then idle again
    clock.set(2026, 6, 1, 12, 0)
    assert [r["rule"] for r in admin.run_coupon_rules()["issued"]] == ["winback"]
    clock.set(2027, 3, 9, 12, 0)                                    # next year's birthday
    assert "birthday" in [r["rule"] for r in admin.run_coupon_rules()["issued"]]


def test_coupon_report():
    db, admin, engine, clock, mid = site(topup_fen=19000)
    admin.issue_coupon(mid, "five_off_30")
    admin.issue_coupon(mid, "mug")
    engine.decide(Tap("K1", 1, UID, amount_fen=4000))
    rows = {r["template"]: r for r in programme_reports.coupons(db, admin.policy, clock())}
    assert (rows["five_off_30"]["issued"], rows["five_off_30"]["redeemed"],
            rows["five_off_30"]["saved_fen"]) == (1, 1, 500)
    assert rows["mug"]["redemption_rate"] == 0.0


def test_policy_refuses_bad_templates_and_rules():
    raw = load_policy().raw
    for bad, msg in (({"x": {"kind": "nope"}}, "coupons.x.kind"),
                     ({"x": {"kind": "amount_off", "value": "0.00"}}, "above 0.00"),
                     ({"x": {"kind": "percent_off", "value": 101}}, "coupons.x.value"),
                     ({"x": {"kind": "free_service", "covers": ["wash:9"]}}, "covers")):
        with pytest.raises(Exception, match=msg):
            build_policy({**raw, "coupons": bad})
    with pytest.raises(Exception, match="coupon_rules.signup"):
        build_policy({**raw, "coupon_rules": {"signup": "nope"}})


def test_coupon_cli_and_bad_input(tmp_path, capsys):
    from host.cli.app import main
    pol = tmp_path / "p.toml"
    pol.write_text('[coupons.mug]\nkind = "gift_item"\nitem = "mug"\n')
    db = str(tmp_path / "s.db")

    def run(*argv):
        code = main(["--db", db, "--policy", str(pol), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    assert run("init")[0] == 0
    run("member", "add", "--name", "A", "--consent-terms", "t1")
    code, out, _ = run("--json", "coupon", "issue", "1", "mug")
    cid = json.loads(out)["coupon_id"]
    assert run("coupon", "list", "1")[1].count("mug") == 2
    assert "mug" in run("coupon", "templates")[1]
    assert run("coupon", "redeem", str(cid))[0] == 0
    assert run("coupon", "list", "1")[1].strip() == "(none)"
    assert "used" in run("coupon", "list", "1", "--all")[1]
    assert "issued" in run("--json", "coupon", "run")[1]
    assert run("report", "coupons", "--csv")[1].startswith("template,source,issued")
    for argv in (["coupon", "issue", "1", "nope"], ["coupon", "issue", "9", "mug"],
                 ["coupon", "redeem", str(cid)], ["coupon", "redeem", "x"],
                 ["coupon", "redeem", "99"], ["coupon", "list", "9"]):
        before = run("export")[1]
        code, out, err = run(*argv)
        assert code == 2 and err.count("\n") == 1, (argv, err)
        assert run("export")[1] == before
