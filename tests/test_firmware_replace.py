"""A replaced reader end to end: the real firmware under MicroPython, the PN532 emulator and
the real daemon. ``tapkiosk device replace`` gives the id a new key and a new sequence epoch;
a wiped board under that id (fresh boot counter) is granted by the running daemon, and a frame
of the previous board is still refused."""

from __future__ import annotations

import sqlite3
import time

import pytest

from conftest import micropython_path, wait_until
from firmware_rig import CARD, KEY, cli, send_to_host, taps
from host.store.db import open_db
from host.store.devices import device_key
from protocol import framing
from protocol import packet as pk
from protocol import seq as seqs
from protocol.mac import Mac
from sim.run_device import SimBoard, make_config

pytestmark = [pytest.mark.micropython, pytest.mark.skipif(not micropython_path(), reason="micropython missing")]


def _refusals(db, device_id: str) -> dict[str, int]:
    with sqlite3.connect(db) as c:
        return dict(c.execute("SELECT cause, count FROM device_refusals WHERE device_id = ?",
                              (device_id,)).fetchall())


def test_wiped_board_under_a_replaced_id_is_granted_and_old_frames_stay_refused(rigs, tmp_path):
    rig = rigs(kind="gate")
    cli(rig.db, "device", "add", rig.device_id, "gate", "--anti-passback", "off")
    rig.boot()
    rig.tap(CARD)
    rows = rig.wait_taps(1)
    assert len(rows) == 1 and rows[0][2] == "grant", rig.console()
    old_seq = rows[0][0]
    # What someone on the line recorded from the old board: a TAP under the old key, its seq
    # above the old one (new to a window that forgot the old epoch).
    captured = framing.encode(pk.encode(pk.TAP, old_seq + 1, rig.device_id, {
        "uid": bytes.fromhex(CARD), "sak": 0, "flags": 0, "direction": 0, "service": 0,
        "amount": 0, "device_time": 0, "secure": b""}, Mac(KEY), pk.UP))
    first_tap_at = time.monotonic()
    rig.board.kill()

    out = cli(rig.db, "device", "replace", rig.device_id)
    assert out["device_id"] == rig.device_id
    new_key = device_key(open_db(rig.db), rig.device_id)
    assert new_key != KEY

    # A wiped board: empty flash (boot counter from 1), the replaced identity.
    board = SimBoard(tmp_path / "board2", make_config(rig.device_id, "gate", new_key))
    board.env = {**rig.board.env, "TAPKIOSK_SIM_PINS": str(board.pins)}
    rig.board = board
    rig.boot()
    time.sleep(max(0.0, 6.0 - (time.monotonic() - first_tap_at)))  # past the duplicate window
    rig.tap(CARD)
    rows = rig.wait_taps(2)
    assert len(rows) == 2, rig.console()
    assert rows[1][2] == "grant", rig.console()
    with sqlite3.connect(rig.db) as c:
        base = c.execute("SELECT seq_base FROM devices WHERE device_id = ?",
                         (rig.device_id,)).fetchone()[0]
    assert rows[1][0] > old_seq and seqs.boot_of(rows[1][0] - base) == 1, rows

    before = _refusals(rig.db, rig.device_id).get("bad_mac", 0)
    send_to_host(rig.cable, captured)
    assert wait_until(lambda: _refusals(rig.db, rig.device_id).get("bad_mac", 0) > before,
                      timeout=15), rig.console()
    assert len(taps(rig.db, rig.device_id)) == 2
