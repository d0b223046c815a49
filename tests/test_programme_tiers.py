# Runs on CPython (pytest): tier rules (#16 C) with a settable clock — windows, minimum purchase, keep rules, bonus, history.
import pytest

from host.ledger import book as ledger
from host.rules.engine import Engine, Tap
from host.rules.policy import build_policy, load_policy
from site_support import UID, make_site

# Every test of this module runs on SQLite and on PostgreSQL (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("both_backends")


def tier(db, mid=1):
    return db.execute("SELECT tier FROM members WHERE id = ?", (mid,)).fetchone()[0]


def kiosk(engine, seq, fen):
    return engine.decide(Tap("K1", seq, UID, amount_fen=fen))


def test_small_purchases_do_not_count():
    db, admin, engine, clock, mid = make_site(topup_fen=10000)
    for i in range(5):
        assert kiosk(engine, i + 1, 14).verdict == "grant"      # 0.14 yuan, five times
    assert tier(db) == "silver"
    assert ledger.balances(db.conn, mid)["qualifying"] == 0


def test_upgrade_within_window_pays_bonus_and_logs():
    db, admin, engine, clock, mid = make_site(topup_fen=10000)
    points0 = ledger.balances(db.conn, mid)["points"]
    for i in range(3):
        kiosk(engine, i + 1, 1000)
    assert tier(db) == "gold"
    assert ledger.balances(db.conn, mid)["points"] == points0 + 3 * 9 + 100
    row = db.execute("SELECT old_tier, new_tier, manual, reason FROM tier_changes "
                     "ORDER BY id DESC").fetchone()
    assert row[:3] == ("silver", "gold", 0) and "3 purchases" in row[3]
    assert ledger.verify(db) == []


def test_purchases_outside_the_window_do_not_upgrade():
    db, admin, engine, clock, mid = make_site(topup_fen=10000)
    for i in range(3):
        clock.set(2026, 3 + 2 * i, 10, 12, 0)                   # 61 days apart: 2 per 90 days
        kiosk(engine, i + 1, 1000)
    assert tier(db) == "silver"


def test_spend_rule_needs_both_parts():
    raw = load_policy().raw
    tiers = {**raw["tiers"], "gold": {"rank": 2, "discount_pct": 88, "upgrade_purchases": 1,
                                      "upgrade_spend": "100.00", "upgrade_window_days": 30}}
    pol = build_policy({**raw, "tiers": tiers})
    db, admin, engine, clock, mid = make_site(topup_fen=50000)
    engine = Engine(db, pol, clock)
    kiosk(engine, 1, 5000)                                      # 47.50 spent
    assert tier(db) == "silver"
    kiosk(engine, 2, 6000)                                      # 104.50 in 30 days
    assert tier(db) == "gold"


def test_keep_rule_downgrades_after_a_whole_window_and_evaluate_is_idempotent():
    db, admin, engine, clock, mid = make_site(topup_fen=10000)
    for i in range(3):
        kiosk(engine, i + 1, 1000)
    assert tier(db) == "gold"
    clock.set(2026, 6, 1, 12, 0)                                # 83 days: keep window not over
    assert admin.evaluate_tiers()["changes"] == []
    clock.set(2026, 9, 10, 12, 0)                               # 184 days, no purchase since
    out = admin.evaluate_tiers()
    assert out["changes"] == [{"member_id": mid, "old_tier": "gold", "new_tier": "silver"}]
    assert admin.evaluate_tiers()["changes"] == []
    reason = db.execute("SELECT reason FROM tier_changes ORDER BY id DESC").fetchone()[0]
    assert "keep rule of gold" in reason and "0 purchases" in reason
    assert ledger.verify(db) == []


def test_keep_rule_met_keeps_the_tier_and_manual_tier_is_never_touched():
    db, admin, engine, clock, mid = make_site(topup_fen=20000)
    other = admin.add_member("Wang", consent_terms="t1")["member_id"]
    admin.edit_member(other, tier="diamond")
    for i in range(3):
        kiosk(engine, i + 1, 1000)
    clock.set(2026, 8, 1, 12, 0)
    kiosk(engine, 4, 1000)
    kiosk(engine, 5, 1000)
    clock.set(2026, 9, 10, 12, 0)                               # 2 purchases in 180 days
    assert admin.evaluate_tiers()["changes"] == []
    assert (tier(db), tier(db, other)) == ("gold", "diamond")


def test_cancelled_pass_does_not_count_as_spend():
    from host.ledger.tiers import activity
    db, admin, engine, clock, mid = make_site()
    sold = admin.sell_pass(mid, "gym_month")
    ts = int(clock().timestamp())
    assert activity(db.conn, admin.policy, mid, ts - 86400, ts) == (1, 29900)
    admin.cancel_pass(sold["pass_id"])
    assert activity(db.conn, admin.policy, mid, ts - 86400, ts)[1] == 0


@pytest.mark.parametrize("bad,msg", [
    ({"keep_purchases": 2}, "keep_window_days must be set"),
    ({"upgrade_spend": "x"}, "upgrade_spend must be yuan"),
])
def test_bad_tier_rules_refused(bad, msg):
    raw = load_policy().raw
    tiers = {**raw["tiers"], "gold": {"rank": 2, "discount_pct": 88, **bad}}
    with pytest.raises(Exception, match=msg):
        build_policy({**raw, "tiers": tiers})


def test_tiers_cli_evaluate_history_and_bad_input(tmp_path, capsys):
    from host.cli.app import main
    db = str(tmp_path / "s.db")
    assert main(["--db", db, "init"]) == 0
    main(["--db", db, "member", "add", "--name", "A", "--consent-terms", "t1"])
    main(["--db", db, "member", "edit", "1", "--tier", "gold"])
    capsys.readouterr()
    assert main(["--db", db, "--json", "tiers", "evaluate"]) == 0
    assert '"changes": []' in capsys.readouterr().out
    assert main(["--db", db, "tiers", "history", "1"]) == 0
    assert "manual override" in capsys.readouterr().out
    for argv in (["tiers", "history", "9"], ["tiers", "history", "x"], ["tiers", "nope"]):
        assert main(["--db", db, *argv]) == 2
        assert capsys.readouterr().err.count("\n") == 1
