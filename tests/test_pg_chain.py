# Runs on CPython (pytest): two daemons on one PostgreSQL, one member tapping at both; kill -9 of a daemon and of PostgreSQL mid-stream.
"""Issue 17's done-when test: two stores, each with its own daemon and broker, on one
PostgreSQL; one member with 15.00 taps at both at once. Mid-stream the first daemon is
killed with SIGKILL and restarted, then PostgreSQL itself is killed with SIGKILL and
restarted; the readers resend what is still in their outbox, as the firmware does. While
PostgreSQL is down each daemon decides from its offline journal (allowance 0.00: stored
value is refused) and replays it once PostgreSQL is back, whether or not taps keep coming;
the readers keep tapping through it all until the last daemon restart is behind them. Then
every tap a reader saw decided is stored exactly once, the balance never went below zero,
no tap was charged twice, and ``tapkiosk verify`` passes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import pg_support
from conftest import Broker, wait_until
from daemon_support import CARD, KEY_A, KEY_B, DaemonProcess
from host.admin import Admin
from host.cli import app as cli
from host.privacy import keyfile
from host.store.db import open_db
from host.store.devices import register_device
from protocol import codes
from sim.device import MqttTransport, NoReply, Refused, SimDevice

N_TAPS = 40          # at least this many per reader: taps of 1.00 against 15.00, most denied
START_FEN = 1500


@pytest.fixture
def chain(tmp_path: Path, monkeypatch):
    """A PostgreSQL server of its own (this test kills it), with a seeded chain database."""
    why = pg_support.unavailable()
    if why:
        pytest.skip(why)
    server = pg_support.PgServer().init().start()
    try:
        key = str(tmp_path / "chain.key")
        keyfile.create(key)
        monkeypatch.setenv(keyfile.ENV, key)
        server.admin("CREATE DATABASE chain")
        url = server.url("chain")
        db = open_db(url, upgrade=True)
        register_device(db, "kiosk-1", "kiosk", key=KEY_A)
        register_device(db, "kiosk-2", "kiosk", key=KEY_B)
        admin = Admin(db)
        mid = admin.add_member("Ada", consent_terms="t1")["member_id"]
        admin.enroll_card(mid, CARD)
        admin.topup(mid, START_FEN)
        db.close()
        yield server, url, mid
    finally:
        server.cleanup()


def _reader(dev: SimDevice, results: dict, errors: list, stop: threading.Event,
            enough: threading.Event) -> None:
    """A reader's outbox: each tap resent (same bytes) until it is decided; an ERROR
    ``internal`` (the store was down) leaves it in the outbox, like the firmware. Taps until
    ``enough`` is set (and at least N_TAPS), finishing the tap in its outbox; ``stop``
    aborts."""
    try:
        while not stop.is_set():
            try:
                dev.hello()
                break
            except (NoReply, Refused):
                time.sleep(0.2)
        while not stop.is_set() and (len(results) < N_TAPS or not enough.is_set()):
            seq, raw = dev.tap_frame(CARD, amount_fen=100)
            while not stop.is_set():
                try:
                    results[seq] = dev.deliver(raw, attempts=8, timeout=0.5)
                    break
                except NoReply:
                    continue
                except Refused as e:
                    if e.code != codes.ERR_INTERNAL:
                        raise
                    time.sleep(0.1)
            time.sleep(0.02)
    except BaseException as e:  # noqa: BLE001 - reported by the main thread
        errors.append(e)


def test_two_daemons_one_member_kill9_daemon_and_postgresql(chain, tmp_path: Path) -> None:
    server, url, mid = chain
    (tmp_path / "b1").mkdir()
    (tmp_path / "b2").mkdir()
    brokers = [Broker(tmp_path / "b1"), Broker(tmp_path / "b2")]
    argv = [["--db", url, "--mqtt", b.address, "--no-http"] for b in brokers]
    daemons = [DaemonProcess(argv[i], tmp_path / f"d{i + 1}.log",
                             tmp_path / f"journal{i + 1}.db") for i in range(2)]
    devs = [SimDevice(f"kiosk-{i + 1}", key, "kiosk", MqttTransport(b.host, b.port))
            for i, (key, b) in enumerate(zip((KEY_A, KEY_B), brokers))]
    results: list[dict[int, dict]] = [{}, {}]
    errors: list[BaseException] = []
    stop, enough = threading.Event(), threading.Event()
    threads = [threading.Thread(target=_reader,
                                args=(devs[i], results[i], errors, stop, enough))
               for i in range(2)]
    for t in threads:
        t.start()
    decided = lambda: sum(map(len, results))  # noqa: E731
    try:
        wait_until(lambda: decided() >= 8, 60, what="eight decisions")
        daemons[0].kill()                                   # SIGKILL a daemon mid-stream
        daemons[0].close()
        daemons[0] = DaemonProcess(argv[0], tmp_path / "d1b.log", tmp_path / "journal1.db")
        at_kill = decided()
        wait_until(lambda: decided() >= at_kill + 8, 60, what="decisions after the restart")
        server.kill9()                                      # SIGKILL PostgreSQL mid-stream
        time.sleep(0.5)
        server.start()
        # Both daemons went offline and came back: their journals replayed.
        wait_until(lambda: all("outage 1 over" in d.log() for d in daemons), 60,
                   what="both daemons back online")
        at_pg = decided()
        wait_until(lambda: decided() >= at_pg + 8, 60, what="decisions after PostgreSQL")
        daemons[1].kill()                                   # and the other store's daemon
        daemons[1].close()
        daemons[1] = DaemonProcess(argv[1], tmp_path / "d2b.log", tmp_path / "journal2.db")
        at_kill2 = decided()
        wait_until(lambda: decided() >= at_kill2 + 8, 60, what="decisions after the restart")
        enough.set()
        for t in threads:
            t.join(180)
        assert not any(t.is_alive() for t in threads) and not errors, errors
    finally:
        stop.set()
        for d in devs:
            d.close()
        for d in daemons:
            d.close()
        for b in brokers:
            b.stop()
    assert all(len(r) >= N_TAPS for r in results)
    logs = {n: (tmp_path / f"{n}.log").read_text() for n in ("d1", "d1b", "d2", "d2b")}
    # Each kill landed mid-stream: the killed daemons and their successors all decided taps,
    # and the daemons running when PostgreSQL died decided from their journals meanwhile.
    assert all("tap device=kiosk-" in text for text in logs.values())
    assert all("deciding taps from the local journal" in logs[n] for n in ("d1b", "d2"))
    db = open_db(url)
    try:
        for i, r in enumerate(results):
            stored = db.execute("SELECT seq, verdict, charged_fen, balance_fen FROM taps "
                                "WHERE device_id = ? ORDER BY seq", (f"kiosk-{i + 1}",)).fetchall()
            # Every tap the reader saw decided is stored exactly once, as the reader saw it.
            assert [s for s, *_ in stored] == sorted(r)
            for seq, verdict, _charged, bal in stored:
                assert (verdict == "grant") == (r[seq]["verdict"] == codes.GRANT)
                assert bal >= 0 and r[seq]["balance"] >= 0       # never negative
        charged, grants = db.execute("SELECT sum(charged_fen), count(*) FROM taps "
                                     "WHERE verdict = 'grant'").fetchone()
        left = db.execute("SELECT principal_fen + bonus_fen FROM members WHERE id = ?",
                          (mid,)).fetchone()[0]
        assert left == START_FEN - charged and 0 <= left < 100   # spent down, never doubled
        # Both stores granted some of the taps: the member really tapped at both at once.
        assert all(any(d["verdict"] == codes.GRANT for d in r.values()) for r in results)
        spends = db.execute("SELECT count(DISTINCT tap_id), count(*) FROM ledger "
                            "WHERE kind = 'spend' AND currency = 'principal'").fetchone()
        assert spends[0] == grants == spends[1]                  # one spend per granted tap
    finally:
        db.close()
    assert cli.main(["--db", url, "verify"]) == 0
