"""End to end: the real firmware under the MicroPython unix port, the PN532 emulator, the real host daemon.

card placed on the emulator -> firmware/reader.py -> TAP -> serial (sim/cable.py, pyserial
socket://) or MQTT (real mosquitto) -> host.daemon -> DECISION -> relay pulse and LED pattern in
the pins log. Faults: a hung PN532, a cut cable, a power cut with taps in the outbox, flipped bits.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, micropython_path

from host.store.db import open_db
from host.store.devices import register_device
from protocol import codes
from sim.cable import Cable
from sim.cards import UidCard
from sim.pinlog import levels, pulses, read_events
from sim.pn532 import PN532Emulator
from sim.run_device import FEEDBACK, SimBoard, make_config

pytestmark = pytest.mark.skipif(micropython_path() is None, reason="needs the MicroPython unix port")

KEY = bytes(range(32))
CARD = "04A1B2C3"
OTHER = "04D1E2F3A4B5C6"  # enrolled, no pass: the gate denies it
RELAY, LED_R, LED_G = str(FEEDBACK["relay"]), str(FEEDBACK["led_r"]), str(FEEDBACK["led_g"])
GATE_RELAY_MS = 800  # host policy default for gates (host/rules/policy_default.toml)


def cli(db: Path, *args: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "host.cli", "--db", str(db), "--json", *args],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def make_site(tmp: Path, device_id: str, kind: str) -> Path:
    """A site DB with one device, a member with a pass (card CARD) and one without (OTHER)."""
    db = tmp / "site.db"
    register_device(open_db(db), device_id, kind, key=KEY)
    ann = cli(db, "member", "add", "--name", "Ann")["member_id"]
    cli(db, "card", "enroll", str(ann), CARD)
    cli(db, "topup", str(ann), "500.00")
    cli(db, "pass", "sell", str(ann), "gym_month" if kind == "gate" else "wash10", "--from-balance")
    bob = cli(db, "member", "add", "--name", "Bob")["member_id"]
    cli(db, "card", "enroll", str(bob), OTHER)
    return db


def taps(db: Path, device_id: str) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT seq, uid, verdict, offline FROM taps WHERE device_id = ? ORDER BY seq",
                         (device_id,)).fetchall()


class Daemon:
    def __init__(self, tmp: Path, db: Path, *link: str, offline_after_s: int = 90) -> None:
        self.err = tmp / "daemon.log"
        self.args = [sys.executable, "-m", "host.daemon", "--db", str(db), *link,
                     "--heartbeat-s", "2", "--offline-after-s", str(offline_after_s), "--debounce-ms", "400"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Daemon":
        self._fh = open(self.err, "a")
        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=self._fh, stderr=self._fh)
        deadline = time.monotonic() + 20
        while "daemon ready" not in self.err.read_text():
            assert self.proc.poll() is None, self.err.read_text()
            assert time.monotonic() < deadline, "daemon did not start: " + self.err.read_text()
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._fh.close()


class Rig:
    """Emulator + board (+ cable for serial) + daemon, torn down by the fixture."""

    def __init__(self, tmp: Path, kind: str = "gate", link: str = "serial", broker=None,
                 offline_after_s: int = 90, **cfg_extra) -> None:
        self.tmp = tmp
        self.device_id = {"gate": "gate-01", "wash": "wash-1", "kiosk": "kiosk-1"}[kind]
        self.db = make_site(tmp, self.device_id, kind)
        self.emu = PN532Emulator()
        tcp, bus = self.emu.serve_tcp(), self.emu.serve_bus()
        self.cable = None
        if link == "serial":
            self.cable = Cable().start()
            self.daemon = Daemon(tmp, self.db, "--serial", self.cable.url_b, offline_after_s=offline_after_s)
            cfg = make_config(self.device_id, kind, KEY, **cfg_extra)
            link_tcp = self.cable.port_a
        else:
            self.daemon = Daemon(tmp, self.db, "--mqtt", broker.address, offline_after_s=offline_after_s)
            cfg = make_config(self.device_id, kind, KEY, link="mqtt", broker=broker.address, **cfg_extra)
            link_tcp = None
        self.daemon.start()
        self.board = SimBoard(tmp / "board", cfg, pn532_tcp=tcp, pn532_bus=bus, link_tcp=link_tcp)

    def boot(self, timeout: float = 30) -> None:
        mark = len(self.board.output())
        self.board.start()
        assert self.board.wait_for("online", timeout, mark), self.console()

    def tap(self, uid: str, hold: float = 0.4) -> None:
        self.emu.place(UidCard(bytes.fromhex(uid)))
        time.sleep(hold)
        self.emu.remove()

    def console(self) -> str:
        daemon = self.daemon.err.read_text() if self.daemon.err.exists() else ""
        return "\n".join(self.board.output()) + "\n--- daemon:\n" + daemon[-4000:]

    def wait_taps(self, n: int, timeout: float = 20) -> list[tuple]:
        deadline = time.monotonic() + timeout
        while True:
            rows = taps(self.db, self.device_id)
            if len(rows) >= n or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)

    def close(self) -> None:
        self.board.kill()
        self.daemon.stop()
        if self.cable:
            self.cable.stop()
        self.emu.close()


@pytest.fixture
def rigs(tmp_path):
    made: list[Rig] = []

    def make(**kw) -> Rig:
        r = Rig(tmp_path, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def wait_pulse(board: SimBoard, n: int = 1, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        p = pulses(read_events(board.pins), RELAY, 1)
        if len(p) >= n or time.monotonic() > deadline:
            return p
        time.sleep(0.05)


def check_grant_feedback(rig: Rig) -> None:
    p = wait_pulse(rig.board)
    assert len(p) == 1, rig.console()
    # The relay is held at least the host's relay_ms (the pins log is the board's clock), and
    # released afterwards: a stuck relay would show no completed pulse at all.
    assert p[0] >= GATE_RELAY_MS
    ev = read_events(rig.board.pins)
    assert 1 in levels(ev, LED_G) and 1 not in levels(ev, LED_R)


def test_serial_gate_tap_reaches_daemon_and_pulses_relay(rigs):
    rig = rigs(kind="gate")
    rig.boot()
    rig.tap(CARD)
    rows = rig.wait_taps(1)
    assert len(rows) == 1 and rows[0][1] == CARD and rows[0][2] == "grant", rig.console()
    check_grant_feedback(rig)
    assert rig.board.wait_for("DISPLAY: Welcome Ann", 5), rig.console()
    # A denied card: red, no relay.
    rig.tap(OTHER)
    rows = rig.wait_taps(2)
    assert [r[2] for r in rows] == ["grant", "deny"], rig.console()
    time.sleep(1.0)
    assert len(pulses(read_events(rig.board.pins), RELAY, 1)) == 1
    assert 1 in levels(read_events(rig.board.pins), LED_R)


def test_card_held_is_one_tap(rigs):
    rig = rigs(kind="gate")
    rig.boot()
    rig.tap(CARD, hold=2.5)  # many poll cycles with the same card on the reader
    time.sleep(1.0)
    assert len(rig.wait_taps(1)) == 1, rig.console()
    assert len(taps(rig.db, rig.device_id)) == 1


def test_mqtt_wash_tap_reaches_daemon_and_starts_the_wash(rigs, broker):
    rig = rigs(kind="wash", link="mqtt", broker=broker, service=1)
    rig.boot()
    rig.tap(CARD)
    rows = rig.wait_taps(1)
    assert len(rows) == 1 and rows[0][2] == "grant", rig.console()
    p = wait_pulse(rig.board)
    assert len(p) == 1 and p[0] > 0, rig.console()


def test_hung_reader_is_reset_and_reported(rigs):
    rig = rigs(kind="gate")
    rig.boot()
    resets = rig.emu.resets
    rig.emu.hang()
    assert rig.board.wait_for("reader fault", 20), rig.console()
    assert rig.board.wait_for("reader ok", 20), rig.console()
    assert rig.emu.resets > resets  # the driver pulsed RSTPDN
    deadline = time.monotonic() + 15
    while "name=reader_ok" not in rig.daemon.err.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = rig.daemon.err.read_text()
    # Both EVENTs reached the host, fault first.
    assert "name=reader_fault" in log and "name=reader_ok" in log, rig.console()
    assert log.index("name=reader_fault") < log.index("name=reader_ok")
    # And it still reads cards.
    rig.tap(CARD)
    assert len(rig.wait_taps(1)) == 1, rig.console()


def test_cut_cable_taps_queue_and_arrive_once(rigs):
    # The daemon announces offline_after_s=2 so the gate goes offline quickly.
    rig = rigs(kind="gate", offline_after_s=2)
    rig.boot()
    rig.cable.set_faults("ab", drop=1.0)
    rig.cable.set_faults("ba", drop=1.0)
    assert rig.board.wait_for("host lost", 15), rig.console()
    time.sleep(2.5)
    mark = len(rig.board.output())
    for _ in range(3):
        rig.tap(CARD, hold=0.3)
        time.sleep(1.2)  # the reader's debounce: away long enough to tap again
    assert rig.board.wait_for("DISPLAY: Welcome (offline)", 5, mark), rig.console()
    assert taps(rig.db, rig.device_id) == []
    assert len(wait_pulse(rig.board, 1)) >= 1
    rig.cable.set_faults("ab")
    rig.cable.set_faults("ba")
    rows = rig.wait_taps(3, 30)
    time.sleep(2.0)
    rows = taps(rig.db, rig.device_id)
    assert len(rows) == 3, rig.console()
    assert len({r[0] for r in rows}) == 3 and all(r[3] == 1 for r in rows)


def test_power_cut_with_taps_in_outbox_delivers_once(rigs):
    rig = rigs(kind="gate", offline_after_s=2)
    rig.boot()
    rig.cable.set_faults("ab", drop=1.0)
    rig.cable.set_faults("ba", drop=1.0)
    assert rig.board.wait_for("host lost", 15), rig.console()
    time.sleep(2.5)
    for _ in range(2):
        rig.tap(CARD, hold=0.3)
        time.sleep(1.2)
    assert len(wait_pulse(rig.board, 2)) == 2, rig.console()
    rig.board.kill()  # power cut
    rig.cable.set_faults("ab")
    rig.cable.set_faults("ba")
    mark = len(rig.board.output())
    rig.board.start()
    assert rig.board.wait_for("from before the reboot", 10, mark), rig.console()
    rows = rig.wait_taps(2, 30)
    time.sleep(2.0)
    rows = taps(rig.db, rig.device_id)
    assert len(rows) == 2 and len({r[0] for r in rows}) == 2, rig.console()
    # Seqs carry the boot counter of the boot that made them, not the new one.
    assert all((r[0] >> 16) == 1 for r in rows)


def test_corrupted_serial_bytes_lose_nothing(rigs):
    rig = rigs(kind="gate")
    rig.boot()
    mark = len(rig.board.output())
    rig.cable.set_faults("ab", flip=0.002)
    rig.cable.set_faults("ba", flip=0.002)
    cards = [CARD, OTHER] * 4
    for uid in cards:
        rig.tap(uid, hold=0.3)
        time.sleep(1.2)
    rig.cable.set_faults("ab")
    rig.cable.set_faults("ba")
    # Every tap the device turned into a TAP frame (all but those it refused locally while it
    # had lost the host) reaches the host exactly once, after retries and resyncs.
    refused = sum("Offline - please try later" in line for line in rig.board.output()[mark:])
    made = len(cards) - refused
    assert made >= len(cards) // 2, rig.console()
    rows = rig.wait_taps(made, 40)
    time.sleep(2.0)
    rows = taps(rig.db, rig.device_id)
    assert len(rows) == made, rig.console()
    assert len({r[0] for r in rows}) == made
    assert rig.cable.stats["flipped"] > 0


def test_selfcheck_reports_reader_link_and_hello(rigs):
    rig = rigs(kind="gate")
    exe = micropython_path()
    r = subprocess.run([exe, "-c", "import selfcheck; selfcheck.run()"], cwd=rig.board.dir,
                       env=rig.board.env, capture_output=True, text=True, timeout=60)
    lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
    assert r.returncode == 0 and lines, r.stdout + r.stderr
    res = json.loads(lines[-1])
    assert res["reader"]["ok"] is True and "PN532 v1.6" in res["reader"]["version"], res
    assert res["link"]["ok"] is True and res["hello"]["ok"] is True, res
    # Without the daemon the HELLO goes unanswered, and the result says so.
    rig.daemon.stop()
    r = subprocess.run([exe, "-c", "import selfcheck; selfcheck.run(2000)"], cwd=rig.board.dir,
                       env=rig.board.env, capture_output=True, text=True, timeout=60)
    res = json.loads([x for x in r.stdout.splitlines() if x.startswith("{")][-1])
    assert res["reader"]["ok"] is True and res["hello"]["ok"] is False, res
