"""Support for the firmware end-to-end tests (not a test module): the real firmware under the
MicroPython unix port, the PN532 emulator and the real host daemon, wired as one `Rig`.

The `rigs` fixture in conftest.py makes them and closes them after the test.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, poll_until

from host.store.db import open_db
from host.store.devices import register_device
from sim.cable import Cable
from sim.cards import UidCard
from sim.pinlog import levels, pulses, read_events
from sim.pn532 import PN532Emulator
from sim.run_device import FEEDBACK, SimBoard, make_config

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
    cli(db, "init")  # the site data key: members' names are sealed with it
    ann = cli(db, "member", "add", "--consent-terms", "t1", "--name", "Ann")["member_id"]
    cli(db, "card", "enroll", str(ann), CARD)
    cli(db, "topup", str(ann), "500.00")
    cli(db, "pass", "sell", str(ann), "gym_month" if kind == "gate" else "wash10", "--from-balance")
    bob = cli(db, "member", "add", "--consent-terms", "t1", "--name", "Bob")["member_id"]
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
                     "--heartbeat-s", "2", "--offline-after-s", str(offline_after_s), "--debounce-ms", "400",
                     "--http", "127.0.0.1:0"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Daemon":
        self._fh = open(self.err, "a")
        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=self._fh, stderr=self._fh)

        def ready() -> bool:
            assert self.proc.poll() is None, self.err.read_text()
            return "daemon ready" in self.err.read_text()

        assert poll_until(ready, 20, 0.05), "daemon did not start: " + self.err.read_text()
        return self

    @property
    def api_url(self) -> str:
        """Base URL of the daemon's HTTP API (it serves on a free port: ``--http ...:0``)."""
        import re
        m = re.search(r"HTTP API on (\S+)/v1", self.err.read_text())
        assert m, "the daemon logged no HTTP API address: " + self.err.read_text()[-2000:]
        return m.group(1)

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
                 offline_after_s: int = 90, board_env: dict[str, str] | None = None,
                 **cfg_extra) -> None:
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
        self.board = SimBoard(tmp / "board", cfg, pn532_tcp=tcp, pn532_bus=bus, link_tcp=link_tcp,
                              env=board_env)

    def boot(self, timeout: float = 30) -> None:
        mark = len(self.board.output())
        self.board.start()
        assert self.board.wait_for("online", timeout, mark), self.console()

    def tap(self, uid: str, hold: float = 0.4) -> None:
        self.emu.place(UidCard(bytes.fromhex(uid)))
        time.sleep(hold)  # the card lies on the reader this long (poll cycles see it), then goes
        self.emu.remove()

    def console(self) -> str:
        daemon = self.daemon.err.read_text() if self.daemon.err.exists() else ""
        return "\n".join(self.board.output()) + "\n--- daemon:\n" + daemon[-4000:]

    def wait_taps(self, n: int, timeout: float = 20) -> list[tuple]:
        """The device's taps once there are at least n, or those there are after ``timeout``."""
        def enough():
            rows = taps(self.db, self.device_id)
            return [rows] if len(rows) >= n else None  # wrapped: no rows is an answer for n = 0

        got = poll_until(enough, timeout, 0.1)
        return got[0] if got else taps(self.db, self.device_id)

    def close(self) -> None:
        self.board.kill()
        self.daemon.stop()
        if self.cable:
            self.cable.stop()
        self.emu.close()


def wait_pulse(board: SimBoard, n: int = 1, timeout: float = 10) -> list[int]:
    """The relay's pulses once there are at least n, or those there are after ``timeout``."""
    def enough():
        p = pulses(read_events(board.pins), RELAY, 1)
        return [p] if len(p) >= n else None  # wrapped: no pulses is an answer for n = 0

    got = poll_until(enough, timeout, 0.05)
    return got[0] if got else pulses(read_events(board.pins), RELAY, 1)


def check_grant_feedback(rig: Rig) -> None:
    p = wait_pulse(rig.board)
    assert len(p) == 1, rig.console()
    # The relay is held at least the host's relay_ms (the pins log is the board's clock), and
    # released afterwards: a stuck relay would show no completed pulse at all.
    assert p[0] >= GATE_RELAY_MS
    ev = read_events(rig.board.pins)
    assert 1 in levels(ev, LED_G) and 1 not in levels(ev, LED_R)




def send_to_host(cable: Cable, data: bytes) -> None:
    """Bytes on the serial line as the daemon hears them: someone on the line between the
    device and the host, whatever the device sends. (sim/cable.py has no public injection
    point: this writes to its daemon-end connection.)"""
    conn = cable._conns["b"]
    assert conn is not None, "the daemon is not connected to the cable"
    conn.sendall(data)
