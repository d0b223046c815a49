"""Support for the over-the-air update tests (not a test module): several real firmware
boards (MicroPython unix port, each with its own PN532 emulator and serial cable) served by
ONE real daemon, and app bundles built from the tree (or from a changed copy of it)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT
from firmware_rig import CARD, KEY, Daemon, make_site, taps

from host.store.db import open_db
from host.store.devices import register_device
from protocol import framing
from protocol import packet as pk
from protocol.mac import Mac
from sim.cable import Cable
from sim.cards import UidCard
from sim.pn532 import PN532Emulator
from sim.run_device import SimBoard, make_config
from tools.appfiles import build_bundle, compile_app

OLD_APP = "tapkiosk-fw 0.1.0"


def bundle(tmp: Path, version: str, change=None) -> Path:
    """A bundle of the tree's app (bytecode only, for the unix port); ``change(root)`` may
    edit a copy of firmware/ and protocol/ first."""
    root = ROOT
    if change is not None:
        root = tmp / f"src-{version}"
        for d in ("firmware", "protocol"):
            shutil.copytree(ROOT / d, root / d, ignore=shutil.ignore_patterns("__pycache__"))
        change(root)
    out = tmp / f"{version}.bundle"
    out.write_bytes(build_bundle(compile_app(root, None), version))
    return out


class Reader:
    """One board with its emulator and cable."""

    def __init__(self, tmp: Path, device_id: str, trial_ms: int = 20000) -> None:
        self.device_id = device_id
        self.emu = PN532Emulator()
        self.cable = Cable().start()
        cfg = make_config(device_id, "gate", KEY, ota_trial_ms=trial_ms)
        self.board = SimBoard(tmp / device_id, cfg, pn532_tcp=self.emu.serve_tcp(),
                              pn532_bus=self.emu.serve_bus(), link_tcp=self.cable.port_a)

    def tap(self, uid: str = CARD, hold: float = 0.4) -> None:
        self.emu.place(UidCard(bytes.fromhex(uid)))
        time.sleep(hold)
        self.emu.remove()

    def to_device(self, pkt: bytes) -> None:
        """A frame on the line as the reader hears it (someone on the line)."""
        conn = self.cable._conns["a"]
        assert conn is not None
        conn.sendall(framing.encode(pkt))

    def close(self) -> None:
        self.board.kill()
        self.cable.stop()
        self.emu.close()


class Fleet:
    """``n`` gates (gate-01 ...) on one site database and one daemon."""

    def __init__(self, tmp: Path, n: int = 1, trial_ms: int = 20000) -> None:
        self.tmp = tmp
        self.db = make_site(tmp, "gate-01", "gate")
        ids = [f"gate-{i:02d}" for i in range(1, n + 1)]
        for d in ids[1:]:
            register_device(open_db(self.db), d, "gate", key=KEY)
        self.readers = [Reader(tmp, d, trial_ms) for d in ids]
        links = [a for r in self.readers for a in ("--serial", r.cable.url_b)]
        self.daemon = Daemon(tmp, self.db, *links).start()

    def boot(self, timeout: float = 40) -> None:
        for r in self.readers:
            r.board.start(supervise=True)
        for r in self.readers:
            assert r.board.wait_for("online", timeout), self.console()

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "host.cli", "--db", str(self.db), *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=timeout)

    def query(self, sql: str, *params) -> list[tuple]:
        with sqlite3.connect(self.db) as c:
            return c.execute(sql, params).fetchall()

    def status(self, device_id: str) -> tuple | None:
        rows = self.query("SELECT app, trial, outbox FROM fleet_status WHERE device_id = ?",
                          device_id)
        return rows[0] if rows else None

    def jobs(self) -> dict[str, tuple]:
        return {d: (s, h, detail) for d, s, h, detail in self.query(
            "SELECT device_id, state, have, detail FROM fleet_updates ORDER BY id")}

    def taps(self, device_id: str) -> list[tuple]:
        return taps(self.db, device_id)

    def daemon_log(self) -> str:
        return self.daemon.err.read_text()

    def console(self) -> str:
        parts = [f"--- {r.device_id}:\n" + "\n".join(r.board.output()[-60:]) for r in self.readers]
        return "\n".join(parts) + "\n--- daemon:\n" + self.daemon_log()[-6000:]

    def close(self) -> None:
        for r in self.readers:
            r.close()
        self.daemon.stop()


def forged(device_id: str, ptype: int, seq: int, fields: dict) -> bytes:
    """A host -> reader frame MAC'd with a key that is not the reader's."""
    return pk.encode(ptype, seq, device_id, fields, Mac(bytes(32 * [0x5A])), pk.DOWN)
