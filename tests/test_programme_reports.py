# Runs on CPython (pytest): the membership-programme reports (#16 H), each also as CSV.
import csv
import io

import pytest

from host.rules.engine import Tap
from host.store import programme_reports as pr
from site_support import UID, make_site

# Every test of this module runs on SQLite and on PostgreSQL (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("both_backends")


def test_spend_top_spenders_cycle_referral_rate_and_share():
    db, admin, engine, clock, mid = make_site(topup_fen=50000)
    other = admin.add_member("Wang", consent_terms="t1", referrer_id=mid,
                             birthday="03-20")["member_id"]
    admin.enroll_card(other, "04000000000009")
    admin.topup(other, 10000)
    engine.decide(Tap("K1", 1, UID, amount_fen=10000))               # Li 95.00 on day 0
    clock.set(2026, 3, 14, 12, 0)
    engine.decide(Tap("K1", 2, UID, amount_fen=10000))               # Li again, 4 days later
    engine.decide(Tap("K1", 3, "04000000000009", amount_fen=2000))   # Wang 19.00
    admin.sell_pass(other, "gym_month")                              # Wang 299.00 (cash)
    [row] = pr.spend(db, admin.policy, clock(), 30)
    assert (row["buyers"], row["purchases"], row["spend_fen"]) == (2, 4, 19000 + 1900 + 29900)
    assert row["avg_spend_fen"] == (19000 + 31800) // 2
    assert row["avg_ticket_fen"] == 50800 // 4
    assert row["repurchase_cycle_days"] == pytest.approx(2.0)     # Li 4 days, Wang 0: median
    assert (row["new_members"], row["referred_members"], row["referral_rate"]) == (2, 1, 0.5)
    assert row["member_share_of_sales"] == 1.0
    top = pr.top_spenders(db, admin.policy, clock(), 30, limit=1)
    assert [(r["member_id"], r["spend_fen"], r["purchases"]) for r in top] == [(other, 31800, 2)]


def test_cancelled_pass_and_voided_tap_are_not_spend():
    from host.rules.voids import void_tap
    db, admin, engine, clock, mid = make_site(topup_fen=50000)
    engine.decide(Tap("K1", 5, UID, amount_fen=10000))
    void_tap(engine, "K1", 5, void_seq=6)
    admin.cancel_pass(admin.sell_pass(mid, "gym_month")["pass_id"])
    assert pr.spend(db, admin.policy, clock(), 30)[0]["purchases"] == 0


def test_upcoming_birthdays_wrap_the_year():
    db, admin, engine, clock, mid = make_site(birthday="03-12")
    admin.add_member("Jan", consent_terms="t1", birthday="01-02")
    admin.add_member("Past", consent_terms="t1", birthday="03-01")
    rows = pr.birthdays(db, admin.policy, clock(), 14)
    assert [(r["name"], r["in_days"]) for r in rows] == [("L*", 2)]      # names masked
    clock.set(2026, 12, 25, 12, 0)
    assert [(r["name"], r["date"]) for r in pr.birthdays(db, admin.policy, clock(), 14)] == \
        [("J*", "2027-01-02")]


@pytest.mark.parametrize("name", ["spend", "top-spenders", "birthdays", "referrals",
                                  "coupons", "campaigns", "daily", "members", "dormant"])
def test_every_report_as_csv_and_bad_days(tmp_path, capsys, name):
    from host.cli.app import main
    db = str(tmp_path / "s.db")
    assert main(["--db", db, "init"]) == 0
    main(["--db", db, "member", "add", "--name", "=cmd", "--consent-terms", "t1", "--birthday",
          "01-01"])
    main(["--db", db, "topup", "1", "100.00"])
    capsys.readouterr()
    assert main(["--db", db, "report", name, "--csv", "--days", "366"]) == 0
    out = capsys.readouterr().out
    rows = list(csv.reader(io.StringIO(out)))
    assert all(len(r) == len(rows[0]) for r in rows)
    assert "=cmd" not in out.replace("'=cmd", "")
    assert not any(cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r)
    assert main(["--db", db, "report", name, "--days", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
