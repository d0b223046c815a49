# Runs on CPython (pytest + hypothesis): random sequences of every programme operation keep the books and tables consistent.
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, example, given, settings, strategies as st

from host.admin import Admin
from host.errors import HostError
from host.ledger import book as ledger
from host.rules.engine import Engine, Tap
from host.rules.policy import build_policy, load_policy
from host.rules.voids import void_tap
from host.store.db import open_db
from host.store.devices import register_device

TZ = ZoneInfo("Asia/Shanghai")
_RAW = load_policy().raw
POLICY = build_policy({
    **_RAW,
    "coupons": {
        "five_off": {"kind": "amount_off", "value": "5.00", "min_spend": "20.00"},
        "pct": {"kind": "percent_off", "value": 15, "covers": ["kiosk", "wash"]},
        "free_wash": {"kind": "free_service", "covers": ["wash"]},
        "free_entry": {"kind": "free_service", "covers": ["gate"], "valid_days": 3},
        "mug": {"kind": "gift_item", "item": "mug"}},
    "coupon_rules": {**_RAW["coupon_rules"], "signup": "five_off", "referral": "pct",
                     "birthday": "free_wash", "winback": "pct", "winback_days": 10,
                     "topup": [{"min": "100.00", "coupon": "free_entry"}]},
    "campaigns": {"feb": {"starts": "2026-02-01", "ends": "2026-02-10", "points_multiplier": 2,
                          "extra_discount_pct": 10, "coupon": "mug",
                          "ladder": [{"min": "50.00", "bonus": "8.00"}]}},
    "referral": {"referrer_points": 50, "referrer_bonus": "5.00", "referee_points": 50,
                 "referee_bonus": "5.00", "min_purchase": "50.00"},
})
UIDS = ["04000000000001", "04000000000002", "04000000000003"]
TEMPLATES = sorted(POLICY.coupon_templates)

member = st.integers(1, 3)
op = st.one_of(
    st.tuples(st.just("topup"), member, st.integers(1, 60_000)),
    st.tuples(st.just("kiosk"), member, st.integers(1, 8_000)),
    st.tuples(st.just("kiosk_points"), member,
              st.tuples(st.integers(1, 8_000), st.sampled_from([-1, 100, 250, 5000]))),
    st.tuples(st.just("wash"), member, st.integers(1, 2)),
    st.tuples(st.just("gate"), member, st.sampled_from(["in", "out"])),
    st.tuples(st.just("refund"), member, st.one_of(st.none(), st.integers(1, 20_000))),
    st.tuples(st.just("void"), st.sampled_from(["K1", "W1", "G1"]), st.integers(0, 3)),
    st.tuples(st.just("sell"), member, st.sampled_from(sorted(POLICY.plans))),
    st.tuples(st.just("sell_balance"), member, st.sampled_from(sorted(POLICY.plans))),
    st.tuples(st.just("cancel"), st.integers(1, 6), st.just(0)),
    st.tuples(st.just("coupon"), member, st.sampled_from(TEMPLATES)),
    st.tuples(st.just("counter"), st.integers(1, 12), st.just(0)),
    st.tuples(st.just("redeem"), member, st.integers(1, 3)),
    st.tuples(st.just("gift"), member, member),
    st.tuples(st.just("grant"), member, st.integers(1, 2_000)),
    st.tuples(st.just("reverse"), st.integers(1, 80), st.just(0)),
    st.tuples(st.just("daily"), st.just(0), st.just(0)),
    st.tuples(st.just("time"), st.integers(0, 6 * 86400), st.just(0)),
)


def snapshot(db):
    """Everything a refused request must leave as it was."""
    return tuple(db.execute(sql).fetchall() for sql in (
        "SELECT count(*) FROM ledger", "SELECT count(*) FROM coupons",
        "SELECT count(*) FROM coupon_events", "SELECT count(*) FROM catalogue_moves",
        "SELECT count(*) FROM payments", "SELECT count(*) FROM tier_changes",
        "SELECT id, principal_fen, bonus_fen, points, qualifying, tier FROM members ORDER BY id",
        "SELECT id, uses_left, ends_at, cancelled_at FROM passes ORDER BY id"))


def check_tables(db):
    """Raw-table invariants besides ``verify``."""
    q = lambda sql: db.execute(sql).fetchall()  # noqa: E731
    assert q("SELECT id FROM members WHERE principal_fen < 0 OR bonus_fen < 0 OR points < 0") == []
    # A coupon is used at most once at a time, never given back more than it was used.
    assert q("SELECT coupon_id FROM coupon_events GROUP BY coupon_id HAVING "
             "sum(event = 'redeem') - sum(event = 'unredeem') NOT IN (0, 1)") == []
    # A coupon used by a tap names a stored tap; a tap's saving never exceeds a price.
    assert q("SELECT id FROM coupon_events WHERE tap_id IS NOT NULL AND tap_id NOT IN "
             "(SELECT id FROM taps)") == []
    # Limited catalogue stock never goes below zero.
    assert q("SELECT i.id FROM catalogue_items i JOIN catalogue_moves m ON m.item_id = i.id "
             "WHERE i.limited GROUP BY i.id HAVING sum(m.delta) < 0") == []
    # A cancelled pass is stopped at once and a cancelled punch card has no uses left.
    assert q("SELECT id FROM passes WHERE cancelled_at IS NOT NULL AND (ends_at > cancelled_at "
             "OR coalesce(uses_left, 0) <> 0)") == []
    # The last tier change of each member is the member's tier.
    assert q("SELECT m.id FROM members m JOIN tier_changes t ON t.id = (SELECT max(id) FROM "
             "tier_changes WHERE member_id = m.id) WHERE t.new_tier <> m.tier") == []
    # Points paying part of a sale (host/rules/pay_points.py): only by a granted tap, at least
    # min_points, worth whole fen, within the share cap of the tap's price.
    pp = POLICY.points_payment
    assert q("SELECT p.tap_id FROM tap_points p LEFT JOIN taps t ON t.id = p.tap_id WHERE "
             "t.verdict IS NOT 'grant' OR p.points < %d OR p.fen <> p.points * %d OR "
             "p.fen * 100 > t.amount_fen * %d" % (pp.min_points, pp.fen_per_point,
                                                  pp.max_share_pct)) == []
    # A voided tap gave back every point it paid with.
    assert q("SELECT l.id FROM ledger l JOIN tap_voids v ON v.tap_id = l.tap_id WHERE "
             "v.outcome = 'reversed' AND l.kind = 'pay' AND l.reverses IS NULL AND l.id NOT IN "
             "(SELECT reverses FROM ledger WHERE reverses IS NOT NULL)") == []
    # Referral rewards are paid at most once per referred member.
    assert q("SELECT note FROM ledger WHERE kind = 'referral' AND currency = 'points' AND "
             "reverses IS NULL GROUP BY member_id, note HAVING count(*) > 1") == []


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=40))
# A sale paid partly with points, then voided, is always among the sequences tried.
@example([("topup", 1, 50_000), ("grant", 1, 2_000), ("kiosk_points", 1, (4_000, -1)),
          ("void", "K1", 0), ("kiosk_points", 1, (4_000, 250))])
def test_random_programme_operations_keep_books_and_tables_consistent(ops):
    db = open_db(None)
    now = [datetime(2026, 1, 30, 10, 0, tzinfo=TZ)]
    clock = lambda: now[0]  # noqa: E731
    admin, engine = Admin(db, POLICY, clock), Engine(db, POLICY, clock)
    for dev, kind in (("K1", "kiosk"), ("W1", "wash"), ("G1", "gate")):
        register_device(db, dev, kind, duplicate_window_s=0)
    for i, uid in enumerate(UIDS, start=1):
        admin.add_member(f"m{i}", consent_terms="t1", birthday="02-05",
                         referrer_id=1 if i > 1 else None)
        admin.enroll_card(i, uid)
    admin.add_item("mugs", 30, stock_units=2)
    seqs = {"K1": 0, "W1": 0, "G1": 0}

    def tap(dev, m, **kw):
        seqs[dev] += 1
        d = engine.decide(Tap(dev, seqs[dev], UIDS[m - 1], **kw))
        assert d.balance_fen >= 0 and d.points >= 0

    for kind, a, b in ops:
        start = snapshot(db)
        try:
            if kind == "topup":
                admin.topup(a, b)
            elif kind == "kiosk":
                tap("K1", a, amount_fen=b)
            elif kind == "kiosk_points":
                tap("K1", a, amount_fen=b[0], use_points=b[1])
            elif kind == "wash":
                tap("W1", a, service=b)
            elif kind == "gate":
                tap("G1", a, direction=b)
            elif kind == "refund":
                admin.refund(a, b)
            elif kind == "void":
                if seqs[a] > b:
                    void_tap(engine, a, seqs[a] - b, void_seq=seqs[a] + 1000 + len(ops))
            elif kind in ("sell", "sell_balance"):
                admin.sell_pass(a, b, from_balance=kind == "sell_balance")
            elif kind == "cancel":
                admin.cancel_pass(a)
            elif kind == "coupon":
                admin.issue_coupon(a, b)
            elif kind == "counter":
                admin.redeem_coupon(a)
            elif kind == "redeem":
                admin.redeem_points(a, item="mugs", qty=b)
            elif kind == "gift":
                admin.gift_points(a, b, 10)
            elif kind == "grant":
                admin.grant_points(a, b, "test")
            elif kind == "reverse":
                admin.reverse(a)
            elif kind == "daily":
                admin.run_coupon_rules()
                admin.evaluate_tiers()
                admin.expire()
            elif kind == "time":
                now[0] = now[0] + timedelta(seconds=a)
        except HostError:
            assert snapshot(db) == start  # a refused request writes nothing
        assert ledger.verify(db) == []
        check_tables(db)
