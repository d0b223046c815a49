# Runs on CPython (pytest): campaigns (#16 E) with a settable clock — on only in their dates and kinds.
import pytest

from host.admin import Admin
from host.ledger import book as ledger
from host.rules.engine import Engine, Tap
from host.rules.policy import build_policy, load_policy
from host.store import programme_reports
from site_support import UID, make_site

# Every test of this module runs on SQLite and on PostgreSQL (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("both_backends")

CAMPAIGNS = {
    "new_year": {"starts": "2027-01-01", "ends": "2027-01-03", "kinds": ["topup"],
                 "ladder": [{"min": "100.00", "bonus": "30.00"}]},
    "wash_week": {"starts": "2026-03-09", "ends": "2026-03-15", "kinds": ["wash"],
                  "points_multiplier": 3, "extra_discount_pct": 10, "coupon": "ten_off"},
}


def site(topup_fen=0, campaigns=CAMPAIGNS):
    db, admin, engine, clock, mid = make_site(topup_fen=topup_fen)
    raw = load_policy().raw
    pol = build_policy({**raw, "campaigns": campaigns, "coupons": {
        "ten_off": {"kind": "amount_off", "value": "10.00", "covers": ["kiosk"]}}})
    return db, Admin(db, pol, clock), Engine(db, pol, clock), clock, mid


def test_holiday_topup_ladder_only_jan_1_to_3():
    db, admin, engine, clock, mid = site()
    clock.set(2026, 12, 31, 23, 59)
    assert admin.topup(mid, 10000)["bonus_added_fen"] == 0
    clock.set(2027, 1, 1, 0, 0)
    assert admin.topup(mid, 10000)["bonus_added_fen"] == 3000
    assert admin.topup(mid, 20000)["bonus_added_fen"] == 3000     # the campaign's ladder only
    clock.set(2027, 1, 4, 0, 0)
    assert admin.topup(mid, 20000)["bonus_added_fen"] == 2000     # the site's again
    assert ledger.verify(db) == []


def test_wash_campaign_discount_points_and_coupon_only_for_washes():
    db, admin, engine, clock, mid = site(topup_fen=19000)         # 2026-03-10: on
    d = engine.decide(Tap("W1", 1, UID, service=1))                # 25.00 x 95% x 90% = 21.37
    assert d.text.endswith("paid 21.37 left 168.63")
    assert d.points == 21 * 3
    d = engine.decide(Tap("K1", 2, UID, amount_fen=2000))          # kiosk: no campaign
    assert d.text.startswith("券-10.00 paid 9.00")                 # but the coupon it gave
    engine.decide(Tap("W1", 3, UID, service=1))
    assert db.execute("SELECT count(*) FROM coupons WHERE source = 'campaign'").fetchone()[0] == 1
    clock.set(2026, 3, 16, 12, 0)                                 # over
    d = engine.decide(Tap("W1", 4, UID, service=1))
    assert "paid 23.75" in d.text
    assert ledger.verify(db) == []


def test_campaign_report_uplift():
    db, admin, engine, clock, mid = site(topup_fen=19000)
    clock.set(2026, 3, 8, 12, 0)                                   # before: one wash
    engine.decide(Tap("W1", 1, UID, service=1))
    clock.set(2026, 3, 10, 12, 0)                                  # during: two
    engine.decide(Tap("W1", 2, UID, service=1))
    clock.set(2026, 3, 10, 12, 1)
    engine.decide(Tap("W1", 3, UID, service=1))
    rows = {r["campaign"]: r for r in programme_reports.campaigns(db, admin.policy, clock())}
    assert "new_year" not in rows
    r = rows["wash_week"]
    assert (r["taps_before"], r["taps_during"], r["taps_uplift"]) == (1, 2, 1.0)
    assert r["spend_before_fen"] == 2375 and r["spend_during_fen"] == 2 * 2137


@pytest.mark.parametrize("bad,msg", [
    ({"starts": "2027-01-05", "ends": "2027-01-01"}, "before starts"),
    ({"starts": "2027-13-01", "ends": "2027-01-01"}, "starts must be a date"),
    ({"starts": "2027-01-01", "ends": "2027-01-02", "kinds": ["spa"]}, "kinds"),
    ({"starts": "2027-01-01", "ends": "2027-01-02", "coupon": "nope"}, "coupon"),
    ({"starts": "2027-01-01", "ends": "2027-01-02", "extra_discount_pct": 100}, "extra_discount"),
])
def test_bad_campaigns_refused(bad, msg):
    with pytest.raises(Exception, match=msg):
        build_policy({**load_policy().raw, "campaigns": {"x": bad}})


def test_report_campaigns_cli(tmp_path, capsys):
    from host.cli.app import main
    pol = tmp_path / "p.toml"
    pol.write_text('[campaigns.ny]\nstarts = 2020-01-01\nends = 2020-01-03\nkinds = ["topup"]\n')
    db = str(tmp_path / "s.db")
    assert main(["--db", db, "--policy", str(pol), "init"]) == 0
    capsys.readouterr()
    assert main(["--db", db, "--policy", str(pol), "report", "campaigns", "--csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("campaign,starts,ends,taps_before") and out[1].startswith("ny,")
    bad = tmp_path / "bad.toml"
    bad.write_text('[campaigns.ny]\nstarts = "2020-01-05"\nends = "2020-01-03"\n')
    assert main(["--db", db, "--policy", str(bad), "report", "campaigns"]) == 2
    assert "campaigns.ny.ends" in capsys.readouterr().err
