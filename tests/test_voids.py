# Runs on CPython (pytest): host/rules/voids.py — a tap the device gave up on is reversed or tombstoned, never charged.

import pytest

from host.ledger import book as ledger
from host.rules.engine import Tap
from host.errors import InputError
from host.store.db import open_db
from host.rules.voids import VoidRefused, void_tap
from site_support import UID, make_site


@pytest.fixture
def site(store_url):
    """K1/W1/G1 and member Li with card UID and 100.00 of balance; on both backends."""
    return make_site(topup_fen=10000, db=store_url)


def enc(d):
    return b"DECISION:" + d.reason.encode() + d.balance_fen.to_bytes(4, "big", signed=True)


def state(db, mid):
    """Everything a tap can change for a member: balances, lots, passes, presence."""
    return (ledger.balances(db.conn, mid),
            db.execute("SELECT id, remaining FROM lots WHERE member_id = ? AND remaining > 0 "
                       "ORDER BY id",
                       (mid,)).fetchall(),
            db.execute("SELECT id, uses_left FROM passes WHERE member_id = ? ORDER BY id",
                       (mid,)).fetchall(),
            db.execute("SELECT inside FROM presence WHERE member_id = ?", (mid,)).fetchall())


def test_void_after_applied_kiosk_charge_restores_everything(site):
    db, admin, engine, clock, mid = site
    before = state(db, mid)
    d = engine.decide(Tap("K1", 0x10001, UID, amount_fen=2000), enc)
    assert d.verdict == "grant" and d.balance_fen == 10000 - 1900 and d.points == 19
    rows_before = db.execute("SELECT count(*) FROM ledger").fetchone()[0]
    v = void_tap(engine, "K1", 0x10001, enc, void_seq=0x10002)
    assert (v.verdict, v.reason, v.relay_ms, v.outcome, v.replayed) == (
        "deny", "voided", 0, "reversed", False)
    assert v.balance_fen == 10000 and v.points == 0 and v.member_id == mid
    assert v.reply == enc(v)
    assert state(db, mid) == before
    # Append-only: the tap's rows are still there, each with a reversing row.
    tap_id = db.execute("SELECT id FROM taps WHERE device_id = 'K1' AND seq = ?",
                        (0x10001,)).fetchone()[0]
    wrote = db.execute("SELECT id FROM ledger WHERE tap_id = ?", (tap_id,)).fetchall()
    assert len(wrote) >= 3  # principal, points, qualifying
    revs = db.execute("SELECT reverses FROM ledger WHERE kind = 'reversal'").fetchall()
    assert sorted(r[0] for r in revs) == sorted(r[0] for r in wrote)
    assert db.execute("SELECT count(*) FROM ledger").fetchone()[0] == rows_before + len(wrote)
    assert ledger.verify(db) == []
    # The original TAP re-sent later gets its original bytes back, and is not applied again.
    again = engine.decide(Tap("K1", 0x10001, UID, amount_fen=2000), enc)
    assert again.replayed and again.reply == d.reply
    assert state(db, mid) == before


def test_void_before_tap_tombstones_and_late_tap_is_never_applied(site):
    db, admin, engine, clock, mid = site
    before = state(db, mid)
    v = void_tap(engine, "W1", 0x20005, enc, void_seq=0x20006)
    assert (v.verdict, v.reason, v.outcome) == ("deny", "voided", "tombstone")
    late = engine.decide(Tap("W1", 0x20005, UID, service=1), lambda d: b"must not be used")
    assert late.replayed and (late.verdict, late.reason) == ("deny", "voided")
    assert late.reply == v.reply
    assert state(db, mid) == before
    assert db.execute("SELECT count(*) FROM ledger WHERE kind <> 'topup'").fetchone()[0] == 0
    assert ledger.verify(db) == []


def test_void_twice_returns_the_same_reply_and_writes_nothing(site):
    db, admin, engine, clock, mid = site
    engine.decide(Tap("K1", 7, UID, amount_fen=500), enc)
    first = void_tap(engine, "K1", 7, enc, void_seq=8)
    n = db.execute("SELECT count(*) FROM ledger").fetchone()[0]
    clock.set(2026, 3, 10, 12, 30)
    second = void_tap(engine, "K1", 7, lambda d: b"other bytes", void_seq=9)
    assert second.replayed and second.reply == first.reply and second.outcome == "reversed"
    assert second.balance_fen == first.balance_fen == 10000
    assert db.execute("SELECT count(*) FROM ledger").fetchone()[0] == n
    assert db.execute("SELECT count(*) FROM tap_voids").fetchone()[0] == 1
    # Same for a tombstone.
    t1 = void_tap(engine, "K1", 20, enc, void_seq=21)
    t2 = void_tap(engine, "K1", 20, enc, void_seq=21)
    assert t2.replayed and t2.reply == t1.reply and t2.outcome == "tombstone"
    assert db.execute("SELECT count(*) FROM taps WHERE device_id = 'K1' AND seq = 20"
                      ).fetchone()[0] == 1


def test_void_of_wash_punch_use_restores_the_use(site):
    db, admin, engine, clock, mid = site
    pid = admin.sell_pass(mid, "wash10")["pass_id"]
    before = state(db, mid)
    d = engine.decide(Tap("W1", 1, UID, service=1), enc)
    assert d.verdict == "grant" and d.uses_left == 9
    v = void_tap(engine, "W1", 1, enc, void_seq=2)
    assert v.uses_left == 10 and v.outcome == "reversed"
    assert db.execute("SELECT uses_left FROM passes WHERE id = ?", (pid,)).fetchone()[0] == 10
    assert state(db, mid) == before
    assert ledger.verify(db) == []
    # The voided wash does not count as "already done": tapping again right away works.
    clock.set(2026, 3, 10, 12, 0, 2)
    d2 = engine.decide(Tap("W1", 3, UID, service=1), enc)
    assert d2.verdict == "grant" and d2.uses_left == 9


def test_voided_time_pass_wash_does_not_count_toward_the_daily_cap(site):
    db, admin, engine, clock, mid = site
    admin.sell_pass(mid, "wash_month")    # daily cap 2
    for seq, minute in ((1, 1), (2, 2)):
        clock.set(2026, 3, 10, 13, minute)
        assert engine.decide(Tap("W1", seq, UID, service=1), enc).verdict == "grant"
    void_tap(engine, "W1", 2, enc, void_seq=3)
    clock.set(2026, 3, 10, 13, 5)
    d = engine.decide(Tap("W1", 4, UID, service=1), enc)
    assert d.verdict == "grant" and "pass" in d.text


def test_void_of_online_gate_entry_lets_the_member_in_again(site):
    db, admin, engine, clock, mid = site
    admin.sell_pass(mid, "gym10")
    before = state(db, mid)
    assert engine.decide(Tap("G1", 1, UID, direction="in"), enc).verdict == "grant"
    void_tap(engine, "G1", 1, enc, void_seq=2)
    assert state(db, mid)[:3] == before[:3]
    assert db.execute("SELECT inside FROM presence WHERE member_id = ?", (mid,)).fetchone()[0] == 0
    clock.set(2026, 3, 10, 12, 0, 3)   # within the duplicate window and no passback
    assert engine.decide(Tap("G1", 3, UID, direction="in"), enc).verdict == "grant"
    assert ledger.verify(db) == []


def test_void_of_offline_gate_tap_is_refused_and_writes_nothing(site):
    db, admin, engine, clock, mid = site
    admin.sell_pass(mid, "gym10")
    d = engine.decide(Tap("G1", 1, UID, direction="in", offline=True), enc)
    assert d.verdict == "grant" and d.uses_left == 9
    after = state(db, mid)
    n = db.execute("SELECT count(*) FROM ledger").fetchone()[0]
    with pytest.raises(VoidRefused, match="offline"):
        void_tap(engine, "G1", 1, enc, void_seq=2)
    assert state(db, mid) == after
    assert db.execute("SELECT count(*) FROM ledger").fetchone()[0] == n
    assert db.execute("SELECT count(*) FROM tap_voids").fetchone()[0] == 0
    assert not db.conn.in_transaction


def test_void_keeps_points_already_spent_but_restores_the_money(site):
    db, admin, engine, clock, mid = site
    admin.topup(mid, 100000)
    before = ledger.balances(db.conn, mid)
    d = engine.decide(Tap("K1", 1, UID, amount_fen=50000), enc)
    assert d.points == 475
    admin.redeem_points(mid, d.points, item="mug")   # spends the points the tap earned
    v = void_tap(engine, "K1", 1, enc, void_seq=2)
    assert v.balance_fen == before["principal_fen"] + before["bonus_fen"]
    assert v.points == 0 and v.text == "Voided, points kept"
    assert ledger.balances(db.conn, mid) == before
    kept = db.execute("SELECT kept FROM tap_voids").fetchone()[0]
    assert "points +475" in kept
    assert ledger.verify(db) == []


def test_void_refuses_a_tap_seq_that_is_not_before_the_void(site):
    db, admin, engine, clock, mid = site
    for tap_seq, void_seq in ((5, 5), (6, 5), (0, 1)):
        with pytest.raises(InputError):
            void_tap(engine, "K1", tap_seq, enc, void_seq=void_seq)
    assert db.execute("SELECT count(*) FROM taps").fetchone()[0] == 0
    # Works on a bare database too (the daemon's writer passes the engine; tools may not).
    assert void_tap(db, "K1", 9, enc).outcome == "tombstone"


# ------------------------------------------------------------------ through the daemon
def test_daemon_answers_voids_over_a_cable(db_url):
    """A kiosk's DECISION is lost on the way back; its VOID gives the money back. A VOID for
    a tap that never arrived tombstones it, and the late TAP is answered 'voided'."""
    from protocol import codes
    from protocol import packet as pk
    from sim.cable import Cable
    from sim.device import Refused, SerialTransport, SimDevice
    from daemon_support import (CARD, CARD2, KEY_A, InProcessDaemon, balance, ledger_ok,
                                     make_site, tap_count, wait_for)

    path = db_url
    ids = make_site(path)
    start = balance(path, ids["m1"])
    cable = Cable().start()
    d = InProcessDaemon(["--db", str(path), "--serial", cable.url_b])
    try:
        # The cable's accept and the link's open (see test_daemon_serial.py).
        wait_for(lambda: cable.connected["b"].is_set() and d.daemon.links[0].opened.is_set(),
                 what="daemon on the cable, its line open")
        dev = SimDevice("kiosk-1", KEY_A, "kiosk", SerialTransport(cable.url_a), timeout=5)
        w = dev.hello()
        # The CONFIG pushed after the WELCOME is in (else it could be the frame dropped below).
        wait_for(lambda: dev.cfg_version == w["cfg_version"], what="CONFIG applied")
        # 1. Applied, answer lost: the host charged, the device gave up.
        cable.set_faults("ba", drop=1.0)
        tap_seq, raw = dev.tap_frame(CARD, amount_fen=1500)
        dev.send(raw)
        wait_for(lambda: tap_count(path, "kiosk-1") == 1, what="tap applied")
        assert balance(path, ids["m1"]) < start
        # Applied is not answered yet: clear the fault only once the DECISION met it (its
        # bytes still on their way came through after the clearing, and the VOID below was
        # answered with the tap's grant; loaded). A chunk is mangled whole, so the rest of a
        # DECISION split across reads reaches the device damaged, never as a DECISION.
        wait_for(lambda: cable.stats["dropped"] > 0, what="the DECISION dropped on the cable")
        cable.set_faults("ba")
        _vseq, vraw = dev.frame(pk.VOID, {"tap_seq": tap_seq})
        r = dev.void(tap_seq, raw=vraw)
        assert (r["verdict"], codes.reason_name(r["reason"]), r["relay_ms"]) == (
            codes.DENY, "voided", 0)
        assert r["balance"] == start == balance(path, ids["m1"])
        reply = dev.raw_in[-1]
        # The same VOID again (its answer lost): the same bytes, nothing written.
        again = dev.void(tap_seq, raw=vraw)
        assert again == r and dev.raw_in[-1] == reply
        # 2. Never arrived: the VOID tombstones it, the late TAP is never applied.
        lost_seq, lost_raw = dev.tap_frame(CARD, amount_fen=900)
        r2 = dev.void(lost_seq)
        assert codes.reason_name(r2["reason"]) == "voided"
        late = dev.deliver(lost_raw)
        assert codes.reason_name(late["reason"]) == "voided" and late["verdict"] == codes.DENY
        assert balance(path, ids["m1"]) == start
        # 3. A tap granted offline is not voided: ERROR unsupported, nothing written.
        off_seq, _ = dev.tap_frame(CARD2, offline=True)
        dev.deliver(dev.outbox[off_seq])
        with pytest.raises(Refused) as e:
            dev.void(off_seq)
        assert e.value.code == codes.ERR_UNSUPPORTED
        m = d.metrics
        assert m.value("tapkiosk_voids_total", outcome="reversed") == 1
        assert m.value("tapkiosk_voids_total", outcome="tombstone") == 1
        assert m.value("tapkiosk_voids_total", outcome="refused") == 1
        dev.close()
    finally:
        d.stop()
        cable.stop()
    assert ledger_ok(path)
    db = open_db(path)
    try:
        voids = db.execute("SELECT tap_seq, outcome FROM tap_voids ORDER BY id").fetchall()
        assert voids == [(tap_seq, "reversed"), (lost_seq, "tombstone")]
        assert db.execute("SELECT count(*) FROM taps WHERE device_id = 'kiosk-1' AND "
                          "charged_fen > 0").fetchone()[0] == 1   # the one reversed
    finally:
        db.conn.close()


def test_reports_leave_voided_taps_out_of_consumption_and_grants(site):
    from host.store import reports
    db, admin, engine, clock, mid = site
    engine.decide(Tap("K1", 1, UID, amount_fen=1000), enc)
    engine.decide(Tap("K1", 2, UID, amount_fen=2000), enc)
    void_tap(engine, "K1", 2, enc, void_seq=3)
    void_tap(engine, "K1", 5, enc, void_seq=6)        # tombstone
    day = reports.daily(db, engine.policy, clock.now.date(), days=1)[0]
    assert day["consumption_fen"] == 950 and day["granted"] == 1 and day["taps"] == 3
    dev = [r for r in reports.devices(db, engine.policy, clock.now) if r["device_id"] == "K1"][0]
    assert (dev["taps"], dev["granted"], dev["charged_fen"]) == (3, 1, 950)
