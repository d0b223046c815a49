# Runs on CPython (pytest): referral rewards (#16 B) — both sides, once, after a qualifying purchase.
import pytest

from host.ledger import book as ledger
from host.rules.policy import build_policy, load_policy
from host.store import programme_reports
from site_support import make_site

# Every test of this module runs on SQLite and on PostgreSQL (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("both_backends")


def test_both_sides_rewarded_once_after_a_qualifying_purchase():
    db, admin, engine, clock, mid = make_site()
    new = admin.add_member("Wang", consent_terms="t1", referrer_id=mid)["member_id"]
    assert ledger.balances(db.conn, new)["points"] == 0           # not at sign-up
    assert admin.topup(new, 9999)["referral_points"] == 0         # below 100.00
    assert admin.topup(new, 10000)["referral_points"] == 50
    admin.topup(new, 50000)
    rows = db.execute("SELECT member_id, currency, delta FROM ledger WHERE kind = 'referral' "
                      "ORDER BY id").fetchall()
    assert rows == [(mid, "points", 50), (mid, "bonus", 500), (new, "points", 50),
                    (new, "bonus", 500)]
    assert ledger.verify(db) == []


def test_pass_sale_qualifies_and_report_counts():
    db, admin, engine, clock, mid = make_site()
    a = admin.add_member("A", consent_terms="t1", referrer_id=mid)["member_id"]
    admin.add_member("B", consent_terms="t1", referrer_id=mid)
    admin.sell_pass(a, "wash_month")                               # 199.00 >= 100.00
    assert db.execute("SELECT referral_paid FROM members WHERE id = ?", (a,)).fetchone()[0] == 1
    [row] = programme_reports.referrals(db, admin.policy, clock())
    assert (row["referrer_id"], row["referred"], row["qualified"], row["points_paid"],
            row["bonus_paid_fen"]) == (mid, 2, 1, 50, 500)


def test_policy_sets_amounts_and_legacy_key():
    raw = load_policy().raw
    pol = build_policy({**raw, "referral": {"referrer_points": 7, "min_purchase": "1.00"}})
    assert (pol.referral.referrer_points, pol.referral.referee_bonus_fen,
            pol.referral.min_purchase_fen) == (7, 0, 100)
    legacy = build_policy({**raw, "points": {**raw["points"], "referral_bonus": 100}})
    assert legacy.referral.referrer_points == 100
    with pytest.raises(Exception, match="referral.nope"):
        build_policy({**raw, "referral": {"nope": 1}})


def test_report_referrals_cli_csv_and_bad_days(tmp_path, capsys):
    from host.cli.app import main
    db = str(tmp_path / "s.db")
    assert main(["--db", db, "init"]) == 0
    main(["--db", db, "member", "add", "--name", "R", "--consent-terms", "t1"])
    main(["--db", db, "member", "add", "--name", "N", "--consent-terms", "t1", "--referrer",
          "1"])
    main(["--db", db, "topup", "2", "200.00"])
    capsys.readouterr()
    assert main(["--db", db, "report", "referrals", "--csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("referrer_id,name,referred,qualified")
    assert out[1].startswith("1,R*,1,1")                            # the referrer's masked name
    assert main(["--db", db, "report", "referrals", "--days", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
