# Runs on CPython (pytest + hypothesis): random operation sequences keep the ledger consistent.
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings, strategies as st

from host.ledger import book as ledger
from host.admin import Admin
from host.rules.engine import Engine, Tap
from host.errors import HostError
from host.rules.policy import load_policy
from host.store.db import open_db
from host.store.devices import register_device

TZ = ZoneInfo("Asia/Shanghai")
POLICY = load_policy()
UIDS = ["04000000000001", "04000000000002", "04000000000003", "04000000000004",
        "04000000000005", "04000000000006"]

member = st.integers(1, 3)
op = st.one_of(
    st.tuples(st.just("topup"), member, st.integers(1, 120_000), st.sampled_from([None, "k1", "k2"])),
    st.tuples(st.just("kiosk"), member, st.integers(-5, 20_000), st.integers(1, 12)),
    st.tuples(st.just("wash"), member, st.integers(0, 3), st.integers(1, 12)),
    st.tuples(st.just("gate"), member, st.sampled_from(["in", "out"]), st.integers(1, 12)),
    st.tuples(st.just("refund"), member, st.one_of(st.none(), st.integers(1, 50_000)),
              st.sampled_from([None, "r1"])),
    st.tuples(st.just("redeem"), member, st.integers(1, 300), st.booleans()),
    st.tuples(st.just("gift"), member, member, st.integers(1, 200)),
    st.tuples(st.just("sell"), member, st.sampled_from(sorted(POLICY.plans)), st.booleans()),
    st.tuples(st.just("replace"), member, st.just(0), st.just(0)),
    st.tuples(st.just("time"), st.integers(0, 40 * 86400), st.just(0), st.just(0)),
    st.tuples(st.just("reverse"), st.integers(1, 60), st.just(0), st.just(0)),
)


def state(db):
    return (db.execute("SELECT count(*) FROM ledger").fetchone()[0],
            db.execute("SELECT principal_fen, bonus_fen, points, qualifying FROM members "
                       "ORDER BY id").fetchall(),
            db.execute("SELECT id, uses_left FROM passes ORDER BY id").fetchall())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=40))
def test_random_operations_keep_ledger_consistent(ops):
    db = open_db(None)
    now = [datetime(2026, 1, 30, 10, 0, tzinfo=TZ)]
    clock = lambda: now[0]  # noqa: E731
    admin, engine = Admin(db, POLICY, clock), Engine(db, POLICY, clock)
    register_device(db, "K1", "kiosk")
    register_device(db, "W1", "wash", duplicate_window_s=0)
    register_device(db, "G1", "gate", duplicate_window_s=0)
    card = {}
    spare = iter(UIDS[3:])
    for i, uid in enumerate(UIDS[:3], start=1):
        admin.add_member(f"m{i}", birthday="02-18", referrer_id=1 if i > 1 else None, consent_terms="t1")
        admin.enroll_card(i, uid)
        card[i] = uid
    seqs: dict[str, int] = {"K1": 0, "W1": 0, "G1": 0}
    keys: dict[str, dict] = {}

    def tap(dev, m, **kw):
        seqs[dev] += 1
        t = Tap(dev, seqs[dev], card[m], **kw)
        d = engine.decide(t)
        before = state(db)
        again = engine.decide(t)          # a retransmission: must change nothing
        assert again.replayed and state(db) == before
        assert again.verdict == d.verdict and again.balance_fen == d.balance_fen
        assert d.balance_fen >= 0 and d.points >= 0

    for kind, a, b, c in ops:
        start = state(db)
        try:
            if kind == "topup":
                r = admin.topup(a, b, key=c)
                if c is not None:
                    before = state(db)
                    again = admin.topup(a, b, key=c)
                    assert again["replayed"] and state(db) == before
                    assert again["balance_fen"] == r["balance_fen"] or r["replayed"]
            elif kind == "kiosk":
                tap("K1", a, amount_fen=b)
            elif kind == "wash":
                tap("W1", a, service=b)
            elif kind == "gate":
                tap("G1", a, direction=b)
            elif kind == "refund":
                admin.refund(a, b, key=c)
            elif kind == "redeem":
                admin.redeem_points(a, b * 10 if c else b, item=None if c else "gift",
                                    to_balance=c)
            elif kind == "gift":
                admin.gift_points(a, b, c)
            elif kind == "sell":
                admin.sell_pass(a, b, from_balance=c)
            elif kind == "replace":
                new = next(spare, None)
                if new:
                    admin.replace_card(card[a], new)
                    card[a] = new
            elif kind == "reverse":
                admin.reverse(a)
            elif kind == "time":
                now[0] = now[0] + timedelta(seconds=a)
        except HostError:
            assert state(db) == start  # a refused request writes nothing
        assert ledger.verify(db) == []
    neg = db.execute("SELECT count(*) FROM members WHERE principal_fen < 0 OR bonus_fen < 0 "
                     "OR points < 0").fetchone()[0]
    assert neg == 0
    # Every stored tap seq is unique per device and every ledger row of a tap belongs to one.
    assert db.execute("SELECT count(*) FROM ledger WHERE tap_id IS NOT NULL AND tap_id NOT IN "
                      "(SELECT id FROM taps)").fetchone()[0] == 0
