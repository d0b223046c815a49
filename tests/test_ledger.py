# Runs on CPython (pytest): ledger primitives — spend split, lot order, expiry, gifts, verify.
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, strategies as st

from host.ledger import book as ledger
from host.admin import Admin
from host.errors import InsufficientFunds
from host.rules.policy import build_policy, load_policy
from host.store.db import open_db, transaction

TZ = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize("p,b,amount,order,want", [
    (800, 200, 500, "prorated", (400, 100)),
    (800, 200, 500, "bonus_first", (300, 200)),
    (800, 200, 500, "principal_first", (500, 0)),
    (0, 200, 150, "prorated", (0, 150)),
    (999, 1, 1000, "prorated", (999, 1)),
    (3, 3, 5, "prorated", (2, 3)),
])
def test_split_spend(p, b, amount, order, want):
    assert ledger.split_spend(p, b, amount, order) == want


@given(st.integers(0, 10**9), st.integers(0, 10**9), st.integers(1, 2 * 10**9),
       st.sampled_from(["prorated", "bonus_first", "principal_first"]))
def test_split_spend_never_overdraws(p, b, amount, order):
    if amount > p + b:
        with pytest.raises(InsufficientFunds):
            ledger.split_spend(p, b, amount, order)
        return
    pp, bb = ledger.split_spend(p, b, amount, order)
    assert pp + bb == amount and 0 <= pp <= p and 0 <= bb <= b


def _site(store_url):
    db = open_db(store_url)
    clock = [datetime(2026, 1, 15, 12, 0, tzinfo=TZ)]
    admin = Admin(db, load_policy(), lambda: clock[0])
    mid = admin.add_member("A", consent_terms="t1")["member_id"]
    other = admin.add_member("B", consent_terms="t1")["member_id"]
    return db, admin, clock, mid, other


def test_lots_used_soonest_expiry_first_never_expiring_last(store_url):
    db, admin, clock, mid, _ = _site(store_url)
    ts = 1_800_000_000
    with transaction(db) as conn:
        ledger.credit(conn, ts, mid, "points", 100, "earn", expires_at=0)
        late = ledger.credit(conn, ts, mid, "points", 100, "earn", expires_at=ts + 2000)
        ledger.credit(conn, ts, mid, "points", 100, "earn", expires_at=ts + 1000)
        taken = ledger.debit(conn, ts, mid, "points", 150, "redeem")
    assert [(t.expires_at, t.amount) for t in taken] == [(ts + 1000, 100), (ts + 2000, 50)]
    assert late  # lot rows exist
    assert ledger.verify(db) == []


def test_credit_same_expiry_shares_a_lot(store_url):
    db, admin, clock, mid, _ = _site(store_url)
    with transaction(db) as conn:
        ledger.credit(conn, 1, mid, "points", 5, "earn", expires_at=99)
        ledger.credit(conn, 2, mid, "points", 7, "earn", expires_at=99)
    assert db.execute("SELECT amount, remaining FROM lots").fetchall() == [(12, 12)]


def test_debit_more_than_held_writes_nothing(store_url):
    db, admin, clock, mid, _ = _site(store_url)
    admin.topup(mid, 1000)
    n = db.execute("SELECT count(*) FROM ledger").fetchone()[0]
    with pytest.raises(InsufficientFunds):
        with transaction(db) as conn:
            ledger.spend(conn, 1, mid, 1001, "prorated", "spend")
    assert db.execute("SELECT count(*) FROM ledger").fetchone()[0] == n


def test_spend_refused_by_short_lots_writes_nothing_in_the_open_transaction(store_url):
    # Projection says 10 bonus fen, the lot holds 9: the refusal must leave no principal
    # debit behind, since the engine goes on to the next payment method in the same
    # transaction (e.g. order = ["balance", "punch"]).
    db, admin, clock, mid, _ = _site(store_url)
    admin.topup(mid, 20000)                       # 200.00 + a bonus lot
    db.execute("UPDATE lots SET remaining = remaining - 1")
    bal = ledger.balances(db.conn, mid)
    with transaction(db) as conn:
        n = conn.execute("SELECT count(*) FROM ledger").fetchone()[0]
        pending = ledger.Pending(mid, *bal.values())
        with pytest.raises(InsufficientFunds):
            ledger.spend(conn, 1, mid, bal["principal_fen"] + bal["bonus_fen"], "prorated",
                         "spend", pending=pending)
        assert pending.delta == {"principal": 0, "bonus": 0, "points": 0, "qualifying": 0}
        with pytest.raises(InsufficientFunds):
            ledger.spend(conn, 1, mid, bal["principal_fen"] + bal["bonus_fen"], "prorated",
                         "spend")
        assert conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == n
        assert ledger.balances(conn, mid) == bal


def test_gift_keeps_expiry_and_sweep_expires(store_url):
    db, admin, clock, mid, other = _site(store_url)
    ts = int(clock[0].timestamp())
    with transaction(db) as conn:
        ledger.credit(conn, ts, mid, "points", 30, "earn", expires_at=ts + 100)
        ledger.credit(conn, ts, mid, "points", 30, "earn", expires_at=0)
    admin.gift_points(mid, other, 40)
    lots = db.execute("SELECT expires_at, remaining FROM lots WHERE member_id = ? "
                      "ORDER BY expires_at", (other,)).fetchall()
    assert lots == [(0, 10), (ts + 100, 30)]
    with transaction(db) as conn:
        assert ledger.sweep_expired(conn, ts + 100) == 1
    assert ledger.balances(db.conn, other)["points"] == 10
    assert ledger.balances(db.conn, mid)["points"] == 20
    assert ledger.verify(db) == []


def test_bonus_expiry_from_policy(store_url):
    raw = load_policy().raw
    pol = build_policy({**raw, "stored_value": {**raw["stored_value"], "bonus_expiry_days": 30}})
    db = open_db(store_url)
    clock = [datetime(2026, 1, 15, 12, 0, tzinfo=TZ)]
    admin = Admin(db, pol, lambda: clock[0])
    mid = admin.add_member("A", consent_terms="t1")["member_id"]
    admin.topup(mid, 20000)                              # +20.00 bonus, expires in 30 days
    clock[0] = datetime(2026, 2, 16, 0, 0, tzinfo=TZ)
    r = admin.topup(mid, 100)
    assert r["bonus_fen"] == 0 and r["principal_fen"] == 20100
    kinds = [k for (k,) in db.execute("SELECT kind FROM ledger ORDER BY id")]
    assert "expire" in kinds and ledger.verify(db) == []


def test_referral_paid_once_on_first_qualifying_topup(store_url):
    db, admin, clock, mid, _ = _site(store_url)
    new = admin.add_member("C", referrer_id=mid, consent_terms="t1")["member_id"]
    before = ledger.balances(db.conn, mid)
    assert admin.topup(new, 1)["referral_points"] == 0          # below referral.min_purchase
    assert admin.topup(new, 10000)["referral_points"] == 50
    assert admin.topup(new, 10000)["referral_points"] == 0
    after = ledger.balances(db.conn, mid)
    assert after["points"] - before["points"] == 50
    assert after["bonus_fen"] - before["bonus_fen"] == 500
    mine = ledger.balances(db.conn, new)
    assert (mine["points"], mine["bonus_fen"]) == (50, 500)


def test_verify_reports_lot_mismatch(store_url):
    db, admin, clock, mid, _ = _site(store_url)
    admin.topup(mid, 20000)
    db.execute("UPDATE lots SET remaining = remaining - 1")
    problems = ledger.verify(db)
    assert any(p.startswith("lot 1") for p in problems)
    assert any("lots hold 1999" in p for p in problems)


def _tap_row(db, tap_id, seq, charged_fen, member_id):
    db.execute("INSERT INTO taps (id, ts, device_id, seq, uid, member_id, charged_fen, verdict,"
               " reason, relay_ms, pattern, text, balance_fen, points, uses_left) "
               "VALUES (?, 0, 'K1', ?, 'AA', ?, ?, 'grant', 'ok', 0, 0, '', 0, 0, -1)",
               (tap_id, seq, member_id, charged_fen))


def test_verify_compares_each_taps_charge_with_its_ledger_rows(store_url):
    db, admin, clock, mid, _ = _site(store_url)
    admin.topup(mid, 1000)
    with transaction(db) as conn:
        _tap_row(db, 1, 1, 300, mid)                               # says charged, no rows
        _tap_row(db, 2, 2, 200, mid)
        ledger.spend(conn, 0, mid, 250, "prorated", "spend", tap_id=2)   # rows say 250
        _tap_row(db, 3, 3, 100, mid)
        ledger.spend(conn, 0, mid, 100, "prorated", "spend", tap_id=3)   # consistent
        ledger.credit(conn, 0, mid, "principal", 50, "topup")
        ledger.debit(conn, 0, mid, "principal", 40, "spend", tap_id=9)   # no such tap
    problems = ledger.verify(db)
    assert "tap 1 (K1/1): charged_fen 300, ledger 0" in problems
    assert "tap 2 (K1/2): charged_fen 200, ledger 250" in problems
    assert "tap 9 (missing): charged_fen 0, ledger 40" in problems
    assert not any(p.startswith("tap 3 ") for p in problems)
    assert len([p for p in problems if p.startswith("tap ")]) == 3


def test_points_expiry_remembered_per_month_is_the_computed_one():
    """rewards.points_expiry keeps one value per month and zone: for days across months,
    years and two zones it is what months_later_start gives."""
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo
    from host.ledger import rewards
    from host.ledger.periods import months_later_start
    from host.rules.policy import load_policy
    policy = load_policy()
    months = policy.points_expiry_months
    assert months > 0
    for tz in (ZoneInfo("Asia/Shanghai"), ZoneInfo("Europe/Berlin")):
        day = datetime(2026, 11, 28, 23, 30, tzinfo=tz)
        for _ in range(70):
            day += timedelta(days=1, hours=1)
            want = int(months_later_start(day, months).timestamp())
            assert rewards.points_expiry(policy, day) == want, day
