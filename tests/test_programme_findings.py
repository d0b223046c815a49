# Runs on CPython (pytest): the store manager's findings of issue 16, each as a test that failed before its fix.
import csv
import io
import json

import pytest

from host.errors import Conflict
from host.ledger import book as ledger
from host.rules.engine import Tap
from host.store import reports
from site_support import UID, make_site

# Every test of this module runs on SQLite and on PostgreSQL (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("both_backends")


@pytest.fixture
def run(site_cli):
    return site_cli


def j(run, *argv):
    code, out, err = run("--json", *argv)
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def member(run):
    j(run, "member", "add", "--name", "Li", "--consent-terms", "t1")
    j(run, "card", "enroll", "1", UID)
    for dev, kind in (("K1", "kiosk"), ("W1", "wash"), ("G1", "gate")):
        j(run, "device", "add", dev, kind)
    return 1


def refused(run, *argv):
    """The command exits 2 with one error line and changes nothing."""
    before = run("export")[1]
    code, out, err = run(*argv)
    assert code == 2, (argv, code, out, err)
    assert err.count("\n") == 1 and err.startswith("tapkiosk: error:"), err
    assert run("export")[1] == before
    return err


def test_plain_verify_lists_problems_without_traceback(run, member):
    j(run, "topup", "1", "10.00")
    from host.store.db import open_db
    db = open_db(run.db)
    db.execute("UPDATE members SET principal_fen = 5 WHERE id = 1")
    db.conn.close()
    code, out, err = run("verify")
    assert code == 1 and err == ""
    assert "member 1 principal: projection 5, ledger 1000" in out


def test_report_members_csv_has_every_column(run, member):
    code, out, err = run("report", "members", "--csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert "points_redemption_rate" in rows[0] and rows[-1]["tier"] == "total"


def test_csv_escapes_formula_names():
    from host.cli.render import write_csv
    out = io.StringIO()
    write_csv([{"name": "=1+2", "balance_fen": -500}, {"name": "@x", "balance_fen": 0},
               {"name": "+cmd", "balance_fen": 1}, {"name": "-x", "balance_fen": 2}], out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["name"] for r in rows] == ["'=1+2", "'@x", "'+cmd", "'-x"]
    assert rows[0]["balance_fen"] == "-5.00"      # money stays a number


def test_name_with_newline_refused_and_listing_one_line_per_member(run, member):
    refused(run, "member", "add", "--name", "Evil\nInjected", "--consent-terms", "t1")
    code, out, _ = run("member", "list")
    assert code == 0 and len(out.splitlines()) == 2
    from host.cli.render import human
    from zoneinfo import ZoneInfo
    assert human("name", "a\nb", ZoneInfo("UTC")) == "a\\nb"


def test_suspended_member_cannot_gift_or_redeem(run, member):
    j(run, "member", "add", "--name", "Wang", "--consent-terms", "t1")
    j(run, "topup", "1", "100.00")
    j(run, "member", "edit", "1", "--status", "suspended")
    assert "suspended" in refused(run, "points", "gift", "1", "2", "10")
    assert "suspended" in refused(run, "points", "redeem", "1", "10", "--to-balance")
    assert "suspended" in refused(run, "points", "gift", "2", "1", "1")


@pytest.mark.parametrize("argv,word", [(["tap", "K1", UID], "--amount"),
                                       (["tap", "W1", UID], "--service"),
                                       (["tap", "K1", UID, "--direction", "out",
                                         "--amount", "1.00"], "gates")])
def test_tap_without_required_option_is_a_usage_error(run, member, argv, word):
    assert word in refused(run, *argv)


def test_pass_from_balance_short_says_yuan(run, member):
    j(run, "topup", "1", "146.75")
    err = refused(run, "pass", "sell", "1", "wash_year", "--from-balance")
    assert "146.75" in err and "1699.00" in err and "14675" not in err


def test_lots_and_ledger_deltas_are_labelled(run, member):
    j(run, "topup", "1", "200.00")
    code, out, _ = run("member", "show", "1")
    assert code == 0
    lots = j(run, "member", "show", "1")["lots"]
    assert {"currency": "bonus", "expires_at": 0, "remaining_fen": 2000,
            "remaining_count": None} in lots
    rows = j(run, "ledger", "list", "1")
    assert {(r["currency"], r["delta_fen"], r["delta_count"]) for r in rows} == {
        ("principal", 20000, None), ("bonus", 2000, None)}
    code, out, _ = run("ledger", "list", "1")
    assert "200.00" in out and "20000" not in out


def test_card_expiry_in_the_past_refused(run, member):
    assert "future" in refused(run, "card", "enroll", "1", "04A1B2C3D4E5F9",
                               "--expires", "2000-01-01")


def test_member_list_unknown_tier_refused(run, member):
    assert "platinum" in refused(run, "member", "list", "--tier", "platinum")


def test_site_policy_location_stored_and_env(run, member, tmp_path, monkeypatch):
    pol = tmp_path / "site.toml"
    pol.write_text('[site]\ntimezone = "UTC"\n')
    assert j(run, "policy", "show")["source"] == "defaults"
    assert "no site policy" in j(run, "policy", "show")["warning"]
    refused(run, "policy", "set", str(tmp_path / "missing.toml"))
    assert j(run, "policy", "set", str(pol))["source"] == "site"
    shown = j(run, "policy", "show")
    assert (shown["source"], shown["timezone"], shown["warning"]) == ("site", "UTC", "")
    other = tmp_path / "env.toml"
    other.write_text('[site]\ntimezone = "Europe/Paris"\n')
    monkeypatch.setenv("TAPKIOSK_POLICY", str(other))
    assert j(run, "policy", "show")["timezone"] == "Europe/Paris"
    from host.store.settings import stored_policy_path
    monkeypatch.delenv("TAPKIOSK_POLICY")
    assert stored_policy_path(run.db, None) == str(pol)


# ------------------------------------------------------------------ engine-level findings
def test_pass_bought_early_continues_from_current_end():
    db, admin, engine, clock, mid = make_site(topup_fen=500000)
    first = admin.sell_pass(mid, "gym_month")
    clock.set(2026, 4, 1, 12, 0)
    second = admin.sell_pass(mid, "gym_month")
    row = db.execute("SELECT starts_at, ends_at FROM passes WHERE id = ?",
                     (second["pass_id"],)).fetchone()
    assert row[0] == first["ends_at"] and second["ends_at"] == row[1] > first["ends_at"]


def test_pass_cancel_refunds_pro_rata_and_stops_the_pass():
    db, admin, engine, clock, mid = make_site(topup_fen=100000)
    sold = admin.sell_pass(mid, "gym_month", from_balance=True)      # 299.00, 03-10 .. 04-10
    assert engine.decide_local(Tap("G1", 0, UID, direction="in")).verdict == "grant"
    clock.set(2026, 3, 25, 12, 0)                                     # 16 of 31 days left
    before = sold["balance_fen"]
    out = admin.cancel_pass(sold["pass_id"])
    assert out["refunded_fen"] == 29900 * 16 // 31 and out["refunded_to"] == "balance"
    assert out["balance_fen"] == before + out["refunded_fen"]
    clock.set(2026, 3, 26, 12, 0)
    d = engine.decide_local(Tap("G1", 0, UID, direction="in"))
    assert (d.verdict, d.reason) == ("deny", "no_pass")
    with pytest.raises(Conflict):
        admin.cancel_pass(sold["pass_id"])
    assert ledger.verify(db) == []


def test_pass_cancel_cash_paid_punch_card_counts_as_refund():
    db, admin, engine, clock, mid = make_site()
    sold = admin.sell_pass(mid, "gym10")                              # cash, 10 uses
    engine.decide_local(Tap("G1", 0, UID, direction="in"))            # one use
    out = admin.cancel_pass(sold["pass_id"])
    assert out["refunded_fen"] == 28000 * 9 // 10 and out["refunded_to"] == "cash"
    assert db.execute("SELECT uses_left FROM passes").fetchone()[0] == 0
    day = reports.daily(db, admin.policy, clock().date(), 1)[0]
    assert day["refunds_fen"] == out["refunded_fen"]
    assert ledger.verify(db) == []


def test_reversing_a_pass_payment_points_to_pass_cancel():
    db, admin, engine, clock, mid = make_site(topup_fen=100000)
    admin.sell_pass(mid, "gym_month", from_balance=True)
    entry = db.execute("SELECT id FROM ledger WHERE kind = 'pass_sale' AND "
                       "currency = 'principal'").fetchone()[0]
    with pytest.raises(Conflict, match="pass cancel"):
        admin.reverse(entry)


def test_stored_value_spent_on_a_pass_is_in_the_daily_report():
    db, admin, engine, clock, mid = make_site(topup_fen=100000)
    admin.sell_pass(mid, "gym_month", from_balance=True)
    day = reports.daily(db, admin.policy, clock().date(), 1)[0]
    assert day["pass_sales_from_balance_fen"] == 29900 and day["pass_sales_fen"] == 0


def test_reversed_refund_is_no_cash_out():
    db, admin, engine, clock, mid = make_site(topup_fen=10000)
    admin.refund(mid, 3000)
    entry = db.execute("SELECT id FROM ledger WHERE kind = 'refund'").fetchone()[0]
    admin.reverse(entry, reason="keyed by mistake")
    day = reports.daily(db, admin.policy, clock().date(), 1)[0]
    assert day["refunds_fen"] == 0 and day["revenue_fen"] == 10000
    assert ledger.verify(db) == []


def test_gate_presence_expires_after_policy_hours():
    db, admin, engine, clock, mid = make_site()
    admin.sell_pass(mid, "gym_month")
    assert engine.decide_local(Tap("G1", 0, UID, direction="in")).verdict == "grant"
    clock.set(2026, 3, 10, 20, 0)
    assert engine.decide_local(Tap("G1", 0, UID, direction="in")).reason == "passback"
    clock.set(2026, 3, 11, 9, 0)                      # 21 h later, never tapped out
    assert engine.decide_local(Tap("G1", 0, UID, direction="in")).verdict == "grant"
    clock.set(2026, 3, 12, 9, 0)                      # a long stay may still leave
    assert engine.decide_local(Tap("G1", 0, UID, direction="out")).verdict == "grant"


def test_pass_cancel_cli_and_bad_input(run, member):
    j(run, "topup", "1", "100.00")
    sold = j(run, "pass", "sell", "1", "wash10")
    out = j(run, "pass", "cancel", str(sold["pass_id"]))
    assert (out["refunded_fen"], out["refunded_to"]) == (20000, "cash")
    assert "cancelled already" in refused(run, "pass", "cancel", str(sold["pass_id"]))
    assert "unknown pass" in refused(run, "pass", "cancel", "99")
    refused(run, "pass", "cancel", "x")
    refused(run, "pass", "cancel", "0")


def test_terminal_warns_when_no_site_policy(run, member, monkeypatch, tmp_path):
    import sys
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    code, out, err = run("member", "list")
    assert code == 0 and err.startswith("tapkiosk: warning: no site policy set")
    pol = tmp_path / "p.toml"
    pol.write_text("")
    j(run, "policy", "set", str(pol))
    assert run("member", "list")[2] == ""
