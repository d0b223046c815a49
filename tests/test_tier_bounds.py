# Runs on CPython (pytest + hypothesis): the tap's cheap tier checks (bounds before activity) decide as activity does.
"""A tap's upgrade check reads bounds of the member's activity first
(``host.ledger.tiers._cannot_meet``: one window read) and ``activity`` only when the bounds
leave the rule possible; the purchases count it skips on is that of the tiers above the
member's (``Policy.upgrade_purchases_above``). These tests hold the shortcuts to the exact
answer: random purchases, voids and pass sales, then every rule checked both ways."""

from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from host.ledger import tiers
from host.rules.engine import Tap
from host.rules.policy import load_policy
from host.rules.voids import void_tap
from site_support import TZ, UID, make_site


def _kiosk(engine, seq, fen):
    return engine.decide(Tap("K1", seq, UID, amount_fen=fen))


step = st.one_of(
    st.tuples(st.just("tap"), st.integers(1, 30_000), st.integers(0, 40)),   # fen, days later
    st.tuples(st.just("void"), st.integers(0, 30), st.integers(0, 3)),       # which tap back
    st.tuples(st.just("pass"), st.sampled_from(["gym_month", "wash10"]), st.integers(0, 20)),
)
#: A rule near the member's own activity (purchases and spend off by a little), in a window.
rule = st.tuples(st.integers(-1, 1), st.sampled_from([-300, -5, -1, 0, 1, 5, 300]),
                 st.integers(1, 120))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=25), st.lists(rule, min_size=1, max_size=6))
def test_bounds_never_rule_out_a_rule_activity_meets(steps, rules):
    db, admin, engine, clock, mid = make_site(topup_fen=4_000_000)
    at = datetime(2026, 3, 10, 12, 0, tzinfo=TZ)
    seqs: list[int] = []
    for kind, a, days in steps:
        at += timedelta(days=days)
        clock.now = at
        if kind == "tap":
            seq = len(seqs) + 1
            if _kiosk(engine, seq, a).verdict == "grant":
                seqs.append(seq)
        elif kind == "void" and seqs:
            void_tap(engine, "K1", seqs[a % len(seqs)], void_seq=10_000 + len(seqs) + a)
        elif kind == "pass":
            sold = admin.sell_pass(mid, a)
            if days % 3 == 0:
                admin.cancel_pass(sold["pass_id"])
    ts = int(at.timestamp())
    pol = admin.policy
    for dp, ds, days in rules:
        n, fen = tiers.activity(db.conn, pol, mid, ts - days * 86400, ts)
        purchases, spend = max(n + dp, 0), max(fen + ds, 0)
        why = tiers._cannot_meet(db.conn, pol, mid, ts, purchases, spend, days)
        if n >= purchases and fen >= spend:
            assert why is None, (why, n, fen, purchases, spend)


def test_a_regular_below_the_spend_rule_costs_one_window_read():
    """A gold member with more purchases than diamond's 12 but far below its spend: each tap's
    upgrade check is the bound read, not activity's reversal scan."""
    db, admin, engine, clock, mid = make_site(topup_fen=1_000_000)
    for seq in range(1, 14):
        assert _kiosk(engine, seq, 600).verdict == "grant"
    assert db.execute("SELECT tier, qualifying FROM members WHERE id = ?", (mid,)).fetchone() \
        == ("gold", 13)
    stmts: list[str] = []
    db.conn.set_trace_callback(stmts.append)
    try:
        assert _kiosk(engine, 14, 600).verdict == "grant"
    finally:
        db.conn.set_trace_callback(None)
    assert sum("CASE WHEN currency = 'qualifying'" in s for s in stmts) == 1
    sales = [s for s in stmts if "FROM passes WHERE member_id" in s]
    assert len(sales) == 1 and "CASE WHEN" in sales[0]   # the sales, inside that one read
    assert not any("NOT IN (SELECT reverses" in s for s in stmts)
    assert db.execute("SELECT tier FROM members WHERE id = ?", (mid,)).fetchone()[0] == "gold"


def test_a_gold_member_below_diamonds_count_reads_no_window():
    db, admin, engine, clock, mid = make_site(topup_fen=1_000_000)
    for seq in range(1, 5):
        assert _kiosk(engine, seq, 600).verdict == "grant"
    assert db.execute("SELECT tier FROM members WHERE id = ?", (mid,)).fetchone()[0] == "gold"
    stmts: list[str] = []
    db.conn.set_trace_callback(stmts.append)
    try:
        _kiosk(engine, 5, 600)
    finally:
        db.conn.set_trace_callback(None)
    assert not any("FROM ledger WHERE member_id" in s for s in stmts), stmts


@pytest.mark.parametrize("tier,want", [(None, 3), ("silver", 3), ("gold", 12), ("diamond", 1 << 62),
                                       ("no-such-tier", 3)])
def test_min_upgrade_counts_the_tiers_above(tier, want):
    pol = load_policy()
    assert pol.upgrade_purchases_above(tier) == want
    assert pol.upgrade_purchases_above(tier) == want   # the cached answer


def test_the_regulars_upgrade_still_happens_when_the_spend_is_met():
    db, admin, engine, clock, mid = make_site(topup_fen=4_000_000)
    for seq in range(1, 13):
        _kiosk(engine, seq, 20_000)                 # 12 purchases, 200 yuan each at gold price
    assert db.execute("SELECT tier FROM members WHERE id = ?", (mid,)).fetchone()[0] == "diamond"
