# Runs on CPython (pytest): the rules a store's daemon applies offline — daily caps, anti-passback, hours, duplicates.
"""Issue 17 (chain), WAN outage: the daemon's real Writer decides taps offline from its
snapshot and journal with the online rules it can know locally (host/rules/offline.py):
a pass's daily cap (the snapshot's count of the day plus the offline grants since), gate
anti-passback, the reader's and its store's opening hours, the duplicate window, the
deny-reason priority of the online payment; the replay then reconciles and ``verify``
passes. The chain's database is cut by the FlakyDb wrapper of tests/test_chain_outage.py."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest

from host.admin import Admin
from host.ledger.book import verify
from host.rules.engine import Engine, Tap
from host.rules.policy import _default_raw, _merge, build_policy
from host.site.journal import Journal
from host.site.outage import Outage
from host.site.writer import Writer
from host.store import stores
from host.store.db import open_db
from host.store.devices import register_device
from host.store.outage import unapplied
from site_support import UID, Clock
from test_chain_outage import FlakyDb, enc

POLICY = build_policy(_merge(_default_raw(), {
    "offline": {"allowance": "30.00"},
    "stores": {"north": {"hours": "08:00-22:00"}}}))
BASIC = 25_00 * 95 // 100          # a basic wash at the silver price


@pytest.fixture
def store(tmp_path):
    path = str(tmp_path / "chain.db")
    db = open_db(path)
    clock = Clock(2026, 3, 10, 12, 0)
    admin = Admin(db, POLICY, clock)
    stores.add_store(db, "north", actor="t")
    for dev, kind, settings in (("W1", "wash", {}), ("G1", "gate", {}), ("G2", "gate", {}),
                                ("GX", "gate", {"direction": "out"}),
                                ("W2", "wash", {"hours": "06:00-20:00"}),
                                ("W3", "wash", {"duplicate_window_s": 600}),
                                ("N1", "kiosk", {}), ("K1", "kiosk", {}),
                                ("K3", "kiosk", {"fixed_price": False})):
        register_device(db, dev, kind, **settings)
    stores.set_device_store(db, "N1", "north", actor="t")
    mid = admin.add_member()["member_id"]
    admin.enroll_card(mid, UID)
    admin.topup(mid, 100_00)
    holder = {}

    def factory(wdb):
        holder["db"] = FlakyDb(wdb)
        return Engine(holder["db"], POLICY, clock)

    outage = Outage(Journal(str(tmp_path / "store.journal")), retry_s=0.0)
    writer = Writer(path, policy=POLICY, engine_factory=factory, outage=outage).start()
    writer.call(lambda _db: None).result(10)
    s = SimpleNamespace(db=db, admin=admin, writer=writer, outage=outage, mid=mid,
                        clock=clock, link=lambda: holder["db"].conn)
    yield s
    writer.stop()
    db.conn.close()


def tap(s, *args, minutes: int = 1, **kw):
    """One tap through the writer, ``minutes`` after the last one."""
    s.clock.now += timedelta(minutes=minutes)
    return s.writer.submit_tap(Tap(*args, **kw), enc).result(10)


def prime(s):
    s.writer.call(lambda _db: s.outage.prime(s.writer.engine)).result(10)


def test_daily_cap_counts_the_snapshot_day_and_offline_grants(store):
    s = store
    s.admin.sell_pass(s.mid, "wash_month")                   # time pass, daily cap 2
    assert tap(s, "W1", 1, UID, service=1).balance_fen == 100_00      # online: pass use 1
    prime(s)
    s.link().down = True
    d = tap(s, "W1", 2, UID, service=1)                      # pass use 2, offline
    assert (d.verdict, d.balance_fen) == ("grant", 100_00) and s.outage.offline
    d = tap(s, "W1", 3, UID, service=1)                      # capped: paid from stored value
    assert (d.verdict, d.balance_fen) == ("grant", 100_00 - BASIC)
    d = tap(s, "W1", 4, UID, service=1)                      # capped, over the allowance
    assert (d.verdict, d.reason) == ("deny", "daily_cap")
    s.clock.now = s.clock.now.replace(hour=0, minute=30) + timedelta(days=1)
    assert tap(s, "W1", 5, UID, service=1).text == "Pass (offline)"   # a new day
    s.link().down = False
    tap(s, "K1", 1, UID, amount_fen=1_00)
    rows = s.db.execute("SELECT seq, pass_id IS NOT NULL, charged_fen FROM taps WHERE "
                        "device_id = 'W1' ORDER BY seq").fetchall()
    # the tap refused offline is stored too, as refused: nothing charged
    assert rows == [(1, 1, 0), (2, 1, 0), (3, 0, BASIC), (4, 0, 0), (5, 1, 0)]
    assert unapplied(s.db) == [] and verify(s.db) == []


def test_a_snapshot_of_yesterday_does_not_cap_today(store):
    s = store
    s.admin.sell_pass(s.mid, "wash_month")
    tap(s, "W1", 1, UID, service=1)
    tap(s, "W1", 2, UID, service=1)                          # capped for the 10th
    prime(s)
    s.link().down = True
    assert tap(s, "W1", 3, UID, service=1).balance_fen == 100_00 - BASIC  # capped offline
    assert s.outage.journal.find("W1", 3).charged_fen == BASIC
    s.clock.now += timedelta(days=1)
    assert tap(s, "W1", 4, UID, service=1).text == "Pass (offline)"


def test_anti_passback_offline_and_a_fixed_exit_reader(store):
    s = store
    s.admin.sell_pass(s.mid, "gym_month")
    assert tap(s, "G1", 1, UID, direction="in").verdict == "grant"   # online: inside
    prime(s)
    s.link().down = True
    d = tap(s, "G2", 1, UID, direction="in")
    assert (d.verdict, d.reason) == ("deny", "passback") and s.outage.offline
    assert tap(s, "GX", 1, UID).verdict == "grant"           # the exit reader: out
    assert s.outage.journal.find("GX", 1).direction == "out"
    assert tap(s, "G2", 2, UID, direction="in").verdict == "grant"
    assert tap(s, "G1", 2, UID, direction="in").reason == "passback"
    assert tap(s, "G1", 3, UID, direction="out").verdict == "grant"
    assert tap(s, "G1", 4, UID, direction="out").verdict == "grant"  # nobody locked in
    s.link().down = False
    tap(s, "K1", 1, UID, amount_fen=1_00)
    assert s.db.execute("SELECT inside FROM presence WHERE member_id = ?", (s.mid,)
                        ).fetchone()[0] == 0
    assert s.db.execute("SELECT direction FROM taps WHERE device_id = 'GX'").fetchone()[0] \
        == "out"
    assert verify(s.db) == []


def test_anti_passback_entry_expires_offline(store):
    s = store
    s.admin.sell_pass(s.mid, "gym_month")
    tap(s, "G1", 1, UID, direction="in")
    prime(s)
    s.link().down = True
    assert tap(s, "G1", 2, UID, direction="in").reason == "passback"
    s.clock.now += timedelta(hours=POLICY.presence_expiry_hours)
    assert tap(s, "G1", 3, UID, direction="in").verdict == "grant"


def test_reader_and_store_hours_offline(store):
    s = store
    s.link().down = True
    s.clock.now = s.clock.now.replace(hour=21)
    d = tap(s, "W2", 1, UID, service=1)                      # the reader closes at 20:00
    assert (d.verdict, d.reason, d.text) == ("deny", "closed", "Closed, hours 06:00-20:00")
    assert tap(s, "N1", 1, UID, amount_fen=1_00).verdict == "grant"   # north open till 22
    assert tap(s, "K1", 1, UID, amount_fen=1_00).verdict == "grant"
    s.clock.now = s.clock.now.replace(hour=22, minute=30)
    d = tap(s, "N1", 2, UID, amount_fen=1_00)
    assert (d.reason, d.text) == ("closed", "Closed, hours 08:00-22:00")
    assert tap(s, "K1", 2, UID, amount_fen=1_00).verdict == "grant"   # no store hours
    assert s.outage.journal.counts()["denied"] == 2


def test_duplicate_window_offline(store):
    s = store
    s.link().down = True
    assert tap(s, "W3", 1, UID, service=1).verdict == "grant"
    assert tap(s, "W3", 2, UID, service=1, minutes=5).reason == "duplicate"
    assert tap(s, "W1", 1, UID, service=2, minutes=0).verdict == "deny"  # over allowance
    assert tap(s, "W3", 3, UID, service=1, minutes=11).reason == "insufficient_balance"


def test_a_kiosk_without_fixed_price_wants_a_sale_offline(store):
    s = store
    s.link().down = True
    d = tap(s, "K3", 1, UID, amount_fen=1_00)
    assert (d.verdict, d.reason) == ("deny", "no_sale")
    assert tap(s, "K1", 1, UID, amount_fen=1_00).verdict == "grant"


def test_a_journal_file_of_an_earlier_version_gets_the_new_snapshot_columns(tmp_path):
    import sqlite3
    path = tmp_path / "old.journal"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE snap_passes (id INTEGER PRIMARY KEY, member_id INTEGER NOT NULL, "
        "kind TEXT NOT NULL, covers TEXT NOT NULL, starts_at INTEGER NOT NULL, "
        "ends_at INTEGER NOT NULL, uses_left INTEGER, created_at INTEGER NOT NULL);"
        "CREATE TABLE snap_devices (device_id TEXT PRIMARY KEY, kind TEXT NOT NULL, store TEXT);"
        "INSERT INTO snap_devices VALUES ('G1', 'gate', NULL);")
    old.close()
    j = Journal(str(path))
    try:
        assert j.device("G1") == ("gate", None, {})
        cols = {r[1] for r in j.conn.execute("PRAGMA table_info(snap_passes)")}
        assert "daily_cap" in cols
    finally:
        j.close()


def test_online_taps_after_the_snapshot_count_offline(store):
    """Taps decided online at this store after the last snapshot (up to 30 s before the WAN
    drops) count offline: a daily cap, a punch card's uses, anti-passback, the balance."""
    s = store
    s.admin.sell_pass(s.mid, "wash_month")                   # time pass, daily cap 2
    s.admin.sell_pass(s.mid, "gym10")                        # punch card for the gate
    prime(s)                                                 # the snapshot: nothing used
    assert "pass to" in tap(s, "W1", 1, UID, service=1).text      # online, after it
    assert "pass to" in tap(s, "W1", 2, UID, service=1).text      # the cap is reached
    assert tap(s, "G1", 1, UID, direction="in").uses_left == 9       # online entry
    left = 100_00 - 2_00 * 95 // 100                         # silver price, online
    assert tap(s, "K1", 1, UID, amount_fen=2_00).balance_fen == left
    s.link().down = True
    d = tap(s, "W1", 3, UID, service=1)          # capped: paid from stored value, not the pass
    assert (d.verdict, d.balance_fen) == ("grant", left - BASIC) and s.outage.offline
    d = tap(s, "G2", 1, UID, direction="in")     # still inside from the online entry
    assert (d.verdict, d.reason) == ("deny", "passback")
    tap(s, "G1", 2, UID, direction="out")
    assert tap(s, "G2", 2, UID, direction="in").uses_left == 8      # the online use counted
    s.link().down = False
    tap(s, "K1", 2, UID, amount_fen=1_00)
    assert unapplied(s.db) == [] and verify(s.db) == []
    assert s.outage.journal.conn.execute("SELECT count(*) FROM snap_recent").fetchone() \
        == (0,)                                              # the refresh holds them now


def test_online_taps_after_the_snapshot_survive_a_restart_offline(store, tmp_path):
    s = store
    s.admin.sell_pass(s.mid, "wash_month")
    prime(s)
    tap(s, "W1", 1, UID, service=1)
    tap(s, "W1", 2, UID, service=1)                          # capped, online
    left = tap(s, "K1", 1, UID, amount_fen=2_00).balance_fen
    s.link().down = True
    tap(s, "K1", 2, UID, amount_fen=1_00)                    # offline from here
    s.writer.stop()
    j = Journal(str(tmp_path / "store.journal"))             # the daemon restarted offline
    try:
        day = int(s.clock.now.replace(hour=0, minute=0).timestamp())
        card = j.card(UID)
        local = j.local(s.mid, j.next_outage() - 1, "W1", day)
        assert left < 100_00 and card.balance_fen == left and local.spent_fen == 95
        assert sorted(local.day_uses.values()) == [2] and local.last_here is not None
    finally:
        j.close()
