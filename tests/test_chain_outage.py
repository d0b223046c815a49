# Runs on CPython (pytest): a store cut off from the chain's database keeps serving within the offline allowance.
"""Issue 17 (chain), WAN outage on SQLite: the chain's database is made unreachable by a
store wrapper that raises ``StoreUnavailable`` (what the PostgreSQL backend raises on a lost
connection). The daemon's real Writer decides from the local journal, journals durably,
replays in order when the database is back, and reports what the database refused."""

from __future__ import annotations

import json
import sqlite3

import pytest

from host.admin import Admin
from host.ledger.book import verify
from host.rules.engine import Engine, Tap
from host.rules.policy import _default_raw, _merge, build_policy
from host.site.journal import Journal
from host.site.outage import Outage
from host.site.writer import Writer
from host.store.db import open_db
from host.store.devices import register_device
from host.store.outage import StoreUnavailable, unapplied
from conftest import wait_until
from site_support import UID, Clock

POLICY = build_policy(_merge(_default_raw(), {"offline": {"allowance": "30.00"}}))
BASIC = 25_00 * 95 // 100          # a basic wash at the silver price


class FlakyConn:
    """A connection to the chain's database that can be cut: while ``down``, every statement
    raises StoreUnavailable and an open transaction is lost (rolled back), as a dropped
    PostgreSQL connection is."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real = real
        self.down = False
        self.fail_after: int | None = None   # statements until the link drops

    def execute(self, *a):
        if self.fail_after is not None:
            self.fail_after -= 1
            if self.fail_after <= 0:
                self.down, self.fail_after = True, None
        if self.down:
            if self.real.in_transaction:
                self.real.execute("ROLLBACK")
            raise StoreUnavailable("connection to the chain's database lost")
        return self.real.execute(*a)

    def __getattr__(self, name):
        return getattr(self.real, name)


class FlakyDb:
    """A store whose connection is a :class:`FlakyConn`."""

    def __init__(self, db) -> None:
        self.real = db
        self.conn = FlakyConn(db.conn)

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.fixture
def chain(tmp_path):
    path = str(tmp_path / "chain.db")
    db = open_db(path)
    clock = Clock(2026, 3, 10, 12, 0)
    admin = Admin(db, POLICY, clock)
    register_device(db, "W1", "wash")
    register_device(db, "K1", "kiosk")
    register_device(db, "K9", "kiosk")     # another store's kiosk, online all along
    mid = admin.add_member()["member_id"]
    admin.enroll_card(mid, UID)
    admin.topup(mid, 100_00)
    holder = {}

    def factory(wdb):
        holder["db"] = FlakyDb(wdb)
        return Engine(holder["db"], POLICY, clock)

    journal = Journal(str(tmp_path / "store.journal"))
    outage = Outage(journal, retry_s=0.0)
    writer = Writer(path, policy=POLICY, engine_factory=factory, outage=outage).start()
    writer.call(lambda _db: None).result(10)     # the first snapshot is taken
    yield db, admin, writer, outage, holder, clock, mid
    writer.stop()
    db.conn.close()


def enc(tap, d):
    return f"{tap.device_id}/{tap.seq}/{d.verdict}/{d.reason}/{d.balance_fen}".encode()


def tap(writer, *args, **kw):
    """One tap through the writer, a minute after the last one (out of the duplicate window)."""
    clock = writer.engine.clock
    clock.now = clock.now.replace(minute=clock.now.minute + 1)
    return writer.submit_tap(Tap(*args, **kw), enc).result(10)


def balance(db, mid):
    return db.execute("SELECT principal_fen + bonus_fen FROM members WHERE id = ?",
                      (mid,)).fetchone()[0]


def test_outage_grants_within_allowance_and_reconciles_on_return(chain):
    db, admin, writer, outage, holder, clock, mid = chain
    assert tap(writer, "W1", 1, UID, service=1).balance_fen == 100_00 - BASIC   # online
    holder["db"].conn.down = True
    d = tap(writer, "W1", 2, UID, service=1)
    assert (d.verdict, d.balance_fen) == ("grant", 100_00 - 2 * BASIC) and outage.offline
    again = tap(writer, "W1", 2, UID, service=1)             # a retransmission
    assert again.replayed and again.reply == d.reply
    d = tap(writer, "W1", 3, UID, service=1)                 # 2 x 23.75 > 30.00
    assert (d.verdict, d.reason) == ("deny", "insufficient_balance")
    assert "Offline limit" in d.text
    assert tap(writer, "K1", 1, UID, amount_fen=5_00).verdict == "grant"  # 23.75 + 4.75
    assert tap(writer, "K1", 2, UID, amount_fen=2_00).verdict == "deny"   # over 30.00
    assert outage.journal.counts() == {"pending": 2, "applied": 0, "unapplied": 0,
                                       "denied": 2}
    # Meanwhile the member spends at another store, online: 60.00 of the 76.25 left.
    Engine(db, POLICY, clock).decide(Tap("K9", 1, UID, amount_fen=6315))
    assert balance(db, mid) == 100_00 - BASIC - 6315 * 95 // 100
    holder["db"].conn.down = False
    d = tap(writer, "W1", 4, UID, service=2)                 # replays first, then decides
    assert not outage.offline and d.reason == "insufficient_balance"
    # W1/2 (23.75) no longer fits: refused on replay and reported; K1/1 (4.75) applied.
    rows = {(r["device_id"], r["seq"]): r for r in unapplied(db)}
    assert set(rows) == {("W1", 2)}
    assert rows[("W1", 2)]["granted_fen"] == BASIC
    assert rows[("W1", 2)]["reason"] == "insufficient_balance"
    k1 = db.execute("SELECT verdict, charged_fen, reply FROM taps WHERE device_id = 'K1' "
                    "AND seq = 1").fetchone()
    assert k1[:2] == ("grant", 5_00 * 95 // 100)
    assert bytes(k1[2]).startswith(b"K1/1/grant")            # the reply the reader got
    # Refused offline: nothing applied, stored once as the refused tap the reader saw.
    k2 = db.execute("SELECT verdict, reason, charged_fen, reply FROM taps WHERE device_id = "
                    "'K1' AND seq = 2").fetchall()
    assert [r[:3] for r in k2] == [("deny", "insufficient_balance", 0)]
    assert bytes(k2[0][3]).startswith(b"K1/2/deny")
    assert outage.journal.counts()["pending"] == 0 and outage.journal.waiting() == 0
    assert verify(db) == []


def test_outage_ends_without_a_tap_when_the_database_is_back(chain):
    db, admin, writer, outage, holder, clock, mid = chain
    holder["db"].conn.down = True
    assert tap(writer, "K1", 1, UID, amount_fen=1_00).verdict == "grant"
    assert tap(writer, "K1", 2, UID, amount_fen=99_00).verdict == "deny"   # over 30.00
    assert outage.offline and outage.journal.waiting() == 2
    holder["db"].conn.down = False
    # No tap comes: the idle writer replays the journal on its own.
    wait_until(lambda: not outage.offline, 10, what="the idle writer's replay")
    assert outage.journal.waiting() == 0
    rows = db.execute("SELECT seq, verdict, charged_fen FROM taps WHERE device_id = 'K1' "
                      "ORDER BY seq").fetchall()
    assert rows == [(1, "grant", 1_00 * 95 // 100), (2, "deny", 0)]
    # The reader resending the refused tap now gets the reply it was given offline.
    again = tap(writer, "K1", 2, UID, amount_fen=99_00)
    assert again.replayed and again.reason == "insufficient_balance"
    assert again.reply.startswith(b"K1/2/deny")
    assert balance(db, mid) == 100_00 - 1_00 * 95 // 100 and verify(db) == []


def test_replay_after_a_crash_applies_each_tap_once(chain):
    db, admin, writer, outage, holder, clock, mid = chain
    holder["db"].conn.down = True
    tap(writer, "W1", 1, UID, service=1)
    tap(writer, "K1", 1, UID, amount_fen=1_00)
    holder["db"].conn.down = False
    tap(writer, "K1", 2, UID, amount_fen=1_00)
    before = (balance(db, mid), db.execute("SELECT count(*) FROM ledger").fetchone()[0],
              db.execute("SELECT count(*) FROM taps").fetchone()[0])
    # A crash after the engine committed but before the journal said so: replayed again.
    outage.journal.conn.execute("UPDATE journal SET state = 'pending' WHERE verdict = 'grant'")
    assert writer.call(lambda _db: outage.replay(writer.engine)).result(10) == 2
    after = (balance(db, mid), db.execute("SELECT count(*) FROM ledger").fetchone()[0],
             db.execute("SELECT count(*) FROM taps").fetchone()[0])
    assert after == before and verify(db) == []
    assert before[0] == 100_00 - BASIC - 2 * (1_00 * 95 // 100)


def test_outage_mid_transaction_writes_nothing_and_a_blocked_card_is_reported(chain):
    db, admin, writer, outage, holder, clock, mid = chain
    holder["db"].conn.fail_after = 6          # the link drops inside the tap's transaction
    assert tap(writer, "W1", 1, UID, service=1).verdict == "grant"
    assert outage.offline
    assert db.execute("SELECT count(*) FROM taps").fetchone()[0] == 0
    admin.set_card_status(UID, "blocked")
    holder["db"].conn.down = False
    tap(writer, "K1", 1, UID, amount_fen=1_00)
    rows = unapplied(db)
    assert [(r["device_id"], r["reason"]) for r in rows] == [("W1", "blocked")]
    assert balance(db, mid) == 100_00 and verify(db) == []


def test_gate_and_punch_offline_from_the_snapshot(chain):
    db, admin, writer, outage, holder, clock, mid = chain
    register_device(db, "G1", "gate")
    register_device(db, "G2", "gate")
    admin.sell_pass(mid, "gym10")                           # a 10-entry punch card
    writer.call(lambda _db: outage.prime(writer.engine)).result(10)
    holder["db"].conn.down = True
    assert tap(writer, "G1", 1, UID, direction="out").verdict == "grant"  # nobody locked in
    d = tap(writer, "G1", 2, UID, direction="in")
    assert (d.verdict, d.uses_left) == ("grant", 9)
    assert tap(writer, "G2", 1, UID, direction="in").reason == "passback"  # inside
    assert tap(writer, "G1", 3, UID, direction="out").verdict == "grant"
    assert tap(writer, "G2", 2, UID, direction="in").uses_left == 8      # counted offline
    assert tap(writer, "ZZ", 1, UID).reason == "unknown_device"
    holder["db"].conn.down = False
    tap(writer, "K1", 1, UID, amount_fen=1_00)
    assert db.execute("SELECT uses_left FROM passes WHERE member_id = ?", (mid,)
                      ).fetchone()[0] == 8
    assert verify(db) == []


def test_report_offline_and_doctor_show_refused_replays(chain, tmp_path, capsys):
    db, admin, writer, outage, holder, clock, mid = chain
    from host.cli.app import main
    from host.site import doctor
    path = writer.db_path
    assert doctor.offline_replays(db, clock.now.timestamp()) == []
    holder["db"].conn.down = True
    tap(writer, "W1", 1, UID, service=1)
    admin.set_card_status(UID, "blocked")
    holder["db"].conn.down = False
    tap(writer, "K1", 1, UID, amount_fen=1_00)
    assert main(["--db", path, "--json", "report", "offline"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["device_id"], r["seq"], r["reason"], r["granted_fen"]) for r in rows] == [
        ("W1", 1, "blocked", BASIC)]
    assert main(["--db", path, "report", "offline", "--csv"]) == 0
    assert "W1,1," in capsys.readouterr().out
    import time
    [check] = doctor.offline_replays(db, time.time())
    assert check.status == "FAIL" and "tapkiosk report offline" in check.note


@pytest.fixture
def own_pg():
    """A PostgreSQL server of this test's own, so that stopping it touches no other test."""
    import pg_support

    with pg_support.running_server() as server:
        yield server


def restart(server) -> None:
    """Start the server again; after a kill -9 its dying backends may hold the lock file a
    moment, so a failed start is tried again."""
    import subprocess
    import time
    for _ in range(20):
        try:
            server.start()
            return
        except subprocess.CalledProcessError:
            time.sleep(0.5)
    server.start()


@pytest.mark.parametrize("how", ["fast", "kill9"])
def test_postgresql_stopped_and_restarted(own_pg, tmp_path, how):
    url = own_pg.new_database()
    db = open_db(url)
    clock = Clock(2026, 3, 10, 12, 0)
    admin = Admin(db, POLICY, clock)
    register_device(db, "W1", "wash")
    register_device(db, "K1", "kiosk")
    mid = admin.add_member()["member_id"]
    admin.enroll_card(mid, UID)
    admin.topup(mid, 100_00)
    outage = Outage(Journal(str(tmp_path / "store.journal")), retry_s=0.0)
    writer = Writer(url, policy=POLICY, engine_factory=lambda d: Engine(d, POLICY, clock),
                    outage=outage).start()
    try:
        assert tap(writer, "W1", 1, UID, service=1).verdict == "grant"
        own_pg.kill9() if how == "kill9" else own_pg.stop("fast")
        assert tap(writer, "W1", 2, UID, service=1).verdict == "grant"
        assert outage.offline
        assert tap(writer, "K1", 1, UID, amount_fen=5_00).verdict == "grant"
        assert tap(writer, "K1", 2, UID, amount_fen=5_00).reason == "insufficient_balance"
        assert tap(writer, "K1", 2, UID, amount_fen=5_00).replayed
        tap(writer, "W1", 3, UID, service=1)       # still down: decided offline too
        restart(own_pg)
        d = tap(writer, "K1", 3, UID, amount_fen=1_00)
        assert d.verdict == "grant" and not outage.offline
        db.conn.close()
        db = open_db(url)       # this test's own connection died with the server
        rows = db.execute("SELECT device_id, seq, verdict FROM taps ORDER BY device_id, seq"
                          ).fetchall()
        assert rows == [("K1", 1, "grant"), ("K1", 2, "deny"), ("K1", 3, "grant"),
                        ("W1", 1, "grant"), ("W1", 2, "grant"), ("W1", 3, "deny")]
        assert balance(db, mid) == 100_00 - 2 * BASIC - (5_00 + 1_00) * 95 // 100
        assert unapplied(db) == [] and verify(db) == []
    finally:
        writer.stop()
        db.conn.close()


def test_a_journal_left_waiting_is_replayed_before_the_next_tap(chain, tmp_path):
    db, admin, writer, outage, holder, clock, mid = chain
    holder["db"].conn.down = True
    assert tap(writer, "K1", 1, UID, amount_fen=2_00).verdict == "grant"
    writer.stop()                     # the daemon is killed before the journal is replayed
    holder["db"].conn.down = False
    again = Outage(Journal(outage.journal.path), retry_s=60.0)   # the restarted daemon
    assert again.offline and again.outage == 1
    engine = Engine(db, POLICY, clock)
    d = again.decide_many(engine, [(Tap("K1", 2, UID, amount_fen=1_00), None)])[0]
    assert d.verdict == "grant" and not again.offline
    assert db.execute("SELECT seq FROM taps WHERE device_id = 'K1' ORDER BY id"
                      ).fetchall() == [(1,), (2,)]            # the journaled tap first
    assert balance(db, mid) == 100_00 - 3_00 * 95 // 100 and verify(db) == []


def test_default_journal_is_per_database_and_per_daemon(tmp_path, monkeypatch):
    from host.site.outage import JOURNAL_ENV, default_journal, outage_for
    url = "postgresql://tapkiosk:secret@db.example/chain"
    north, south = ["mqtt:127.0.0.1:1883"], ["mqtt:127.0.0.1:1884"]
    names = {default_journal(url, north), default_journal(url, south),
             default_journal("postgresql://tapkiosk@db.example/other", north)}
    assert len(names) == 3                       # two stores, or two chains: two journals
    assert default_journal(url, north) == default_journal(
        "postgresql://tapkiosk:changed@db.example/chain", north)   # the password is left out
    assert "secret" not in default_journal(url, north)
    monkeypatch.delenv(JOURNAL_ENV, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    a, b = outage_for(url, north), outage_for(url, south)
    try:
        assert a.journal.path != b.journal.path
        assert a.journal.path.startswith(str(tmp_path / "tapkiosk"))
        assert outage_for(url, north).journal.path == a.journal.path  # a restart: the same
    finally:
        a.journal.close()
        b.journal.close()
    assert outage_for(str(tmp_path / "site.db"), north) is None     # SQLite: unchanged
    monkeypatch.setenv(JOURNAL_ENV, str(tmp_path / "mine.journal"))
    assert outage_for(url, north).journal.path == str(tmp_path / "mine.journal")


def test_another_journal_of_the_database_with_taps_waiting_is_named(tmp_path, monkeypatch,
                                                                      caplog):
    from host.site.outage import JOURNAL_ENV, default_journal, outage_for
    url = "postgresql://tapkiosk@db.example/chain"
    monkeypatch.delenv(JOURNAL_ENV, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    (tmp_path / "tapkiosk").mkdir()
    old = Journal(str(tmp_path / "tapkiosk" / default_journal(url, ["mqtt:old:1883"])))
    old.conn.execute("INSERT INTO journal (outage, device_id, seq, uid, service, amount_fen, "
                     "device_time, ts, kind, verdict, reason, text, charged_fen, uses_left, "
                     "balance_fen, relay_ms, pattern, reply) VALUES (1, 'K1', 1, ?, 0, 100, 0, "
                     "0, 'kiosk', 'grant', 'ok', '', 95, -1, 0, 0, 0, x'')", (UID,))
    old.close()
    with caplog.at_level("WARNING", logger="tapkiosk.outage"):
        outage_for(url, ["mqtt:new:1883"]).journal.close()
    assert "holds 1 taps not replayed" in caplog.text and old.path in caplog.text


def test_started_offline_without_a_snapshot_denies_saying_so(tmp_path):
    db = open_db(str(tmp_path / "chain.db"))
    register_device(db, "K1", "kiosk")
    flaky = FlakyDb(db)
    flaky.conn.down = True                      # unreachable from the start
    engine = Engine(flaky, POLICY, Clock(2026, 3, 10, 12, 0))
    outage = Outage(Journal(str(tmp_path / "store.journal")), retry_s=60.0)
    outage.prime(engine)
    assert outage.offline and outage.journal.taken_at() is None
    d = outage.decide_many(engine, [(Tap("K1", 1, UID, amount_fen=1_00), None)])[0]
    assert (d.verdict, d.reason, d.text) == ("deny", "no_snapshot", "Offline, no data yet")
    db.conn.close()


def test_the_writer_replays_only_once_the_probe_found_the_database(tmp_path):
    """A WAN that drops packets makes a connection attempt hang for its whole timeout: the
    writer must not make one while offline. The probe, on a thread of its own, says when
    the database answers; only then does the writer replay."""
    db = open_db(str(tmp_path / "chain.db"))
    clock = Clock(2026, 3, 10, 12, 0)
    admin = Admin(db, POLICY, clock)
    register_device(db, "K1", "kiosk")
    mid = admin.add_member()["member_id"]
    admin.enroll_card(mid, UID)
    admin.topup(mid, 100_00)
    flaky = FlakyDb(db)
    engine = Engine(flaky, POLICY, clock)
    answers = {"up": False, "asked": 0}

    def probe() -> bool:
        answers["asked"] += 1
        return answers["up"]

    outage = Outage(Journal(str(tmp_path / "store.journal")), retry_s=0.0, probe=probe)
    outage.prime(engine)
    flaky.conn.down = True
    job = lambda seq: [(Tap("K1", seq, UID, amount_fen=1_00), None)]  # noqa: E731
    assert outage.decide_many(engine, job(1))[0].verdict == "grant" and outage.offline
    flaky.conn.down = False                       # back, but the probe has not seen it yet
    wait_until(lambda: answers["asked"] >= 2, 10, what="the probe asking")
    assert outage.decide_many(engine, job(2))[0].verdict == "grant"
    assert outage.offline and outage.journal.waiting() == 2   # no attempt by the writer
    assert db.execute("SELECT count(*) FROM taps").fetchone()[0] == 0
    answers["up"] = True
    wait_until(lambda: (outage.decide_many(engine, job(3)) and not outage.offline), 10,
               what="the replay once the probe found the database")
    assert [r[0] for r in db.execute("SELECT seq FROM taps ORDER BY id")] == [1, 2, 3]
    assert balance(db, mid) == 100_00 - 3 * (1_00 * 95 // 100) and verify(db) == []
    db.conn.close()
