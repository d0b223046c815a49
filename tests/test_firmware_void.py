"""End to end: the real firmware gives up on a tap (VOID) and the real daemon never charges it.

MicroPython unix port + PN532 emulator + host daemon over a simulated cable (sim/cable.py).
The host's answer is lost (down direction dropped) or the TAP itself is lost (up direction
dropped): the device waits decision_ms, starts nothing, shows "No answer", and its VOID settles
the tap on the host (reversed or tombstoned). The relay never moves for it; `tapkiosk verify`
passes. The normal path still charges exactly once.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import poll_until, wait_until, ROOT, micropython_path, run_micropython

from sim.pinlog import pulses, read_events
from firmware_rig import CARD, RELAY, send_to_host, wait_pulse
from protocol import framing
from protocol import packet as pk
from protocol.mac import Mac

pytestmark = [pytest.mark.micropython,
              pytest.mark.skipif(micropython_path() is None, reason="needs the MicroPython unix port")]


def query(db: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(db) as c:
        return c.execute(sql, args).fetchall()


def verify_ok(db: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "host.cli", "--db", str(db), "verify"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def wait_rows(db: Path, sql: str, n: int, timeout: float = 20) -> list[tuple]:
    def enough():
        rows = query(db, sql)
        return [rows] if len(rows) >= n else None  # wrapped: no rows is an answer for n = 0

    got = poll_until(enough, timeout, 0.1)
    return got[0] if got else query(db, sql)


def test_wash_answer_lost_is_voided_and_never_started(rigs):
    rig = rigs(kind="wash", service=1)
    rig.boot()
    uses = "SELECT uses_left FROM passes"
    assert query(rig.db, uses) == [(10,)]
    mark = len(rig.board.output())
    rig.cable.set_faults("ba", drop=1.0)          # the host hears the TAP; its answer is lost
    rig.tap(CARD)
    assert rig.board.wait_for("voided as", 15, mark), rig.console()
    assert rig.board.wait_for("DISPLAY: No answer", 5, mark), rig.console()
    # The host applied the tap (a punch-card use), then the VOID gave the use back.
    voids = wait_rows(rig.db, "SELECT tap_seq, outcome FROM tap_voids", 1)
    assert len(voids) == 1 and voids[0][1] == "reversed", rig.console()
    tap = query(rig.db, "SELECT seq, verdict FROM taps")
    assert tap == [(voids[0][0], "grant")]
    assert query(rig.db, uses) == [(10,)]
    rig.cable.set_faults("ba")
    # Resync: the VOID goes again and its answer clears the slot.
    assert rig.board.wait_for("voided by the host", 30, mark), rig.console()
    time.sleep(1.0)  # deliberate: a relay pulse for the voided tap would show within 1 s
    assert pulses(read_events(rig.board.pins), RELAY, 1) == [], rig.console()
    assert not any("DISPLAY: Basic" in line for line in rig.board.output()[mark:]), rig.console()
    verify_ok(rig.db)
    # The normal path still works, right away (the voided wash is not "already done"), once.
    time.sleep(1.2)  # the reader's debounce: away long enough to tap again
    rig.tap(CARD)
    rows = wait_rows(rig.db, "SELECT seq, verdict FROM taps", 2)
    assert [r[1] for r in rows] == ["grant", "grant"], rig.console()
    assert len(wait_pulse(rig.board, 1)) == 1, rig.console()
    time.sleep(1.0)  # deliberate: a second pulse for the same tap would show within 1 s
    assert len(pulses(read_events(rig.board.pins), RELAY, 1)) == 1
    assert query(rig.db, uses) == [(9,)]
    verify_ok(rig.db)


def test_forged_frames_under_our_seqs_do_not_cancel_the_void(rigs):
    # Issue #12 (1). The line is cut after the TAP (the host charged it, its answer was lost);
    # the device gives up and its VOID is lost on the cut line too. Someone on the line sends
    # the host frames with a bad MAC under the device's next seqs. The host refuses them
    # without an answer (an authenticated ERROR naming their seqs would have made the old
    # firmware drop its VOID; the firmware no longer drops a frame on bad_mac either, see
    # test_firmware_units). The VOID must survive: once the line is whole again it goes out
    # and reverses the charge.
    rig = rigs(kind="wash", service=1)
    rig.boot()
    uses = "SELECT uses_left FROM passes"
    mark = len(rig.board.output())
    rig.cable.set_faults("ba", drop=1.0)              # the answer is lost
    rig.tap(CARD)
    tap_seq = wait_rows(rig.db, "SELECT seq FROM taps", 1)[0][0]
    rig.cable.set_faults("ab", drop=1.0)              # and now everything the device sends
    line = rig.board.wait_for("voided as", 15, mark)
    assert line is not None, rig.console()
    void_seq = int(line.rsplit(" ", 1)[1])
    assert query(rig.db, uses) == [(9,)], rig.console()   # charged, not reversed yet
    rig.cable.set_faults("ba")
    forger = Mac(bytes(32))
    for seq in range(tap_seq + 1, void_seq + 3):
        send_to_host(rig.cable, framing.encode(
            pk.encode(pk.PING, seq, rig.device_id, {"nonce": seq}, forger, pk.UP)))
    wait_until(lambda: "refused cause=bad_mac device=%s seq=%d" % (rig.device_id, void_seq)
               in rig.console(), 10, what="the host refusing the forged frame")
    assert "host error" not in "\n".join(rig.board.output()[mark:]), rig.console()
    rig.cable.set_faults("ab")
    assert rig.board.wait_for("voided by the host", 40, mark), rig.console()
    voids = wait_rows(rig.db, "SELECT tap_seq, outcome FROM tap_voids", 1)
    assert voids == [(tap_seq, "reversed")], rig.console()
    assert query(rig.db, uses) == [(10,)]
    assert pulses(read_events(rig.board.pins), RELAY, 1) == [], rig.console()
    verify_ok(rig.db)


def test_kiosk_charges_once_and_a_lost_tap_is_tombstoned(rigs):
    rig = rigs(kind="kiosk", amount=1200)
    rig.boot()
    balance = "SELECT principal_fen + bonus_fen FROM members WHERE name = 'A*'"
    start = query(rig.db, balance)[0][0]
    # Normal path: charged once.
    rig.tap(CARD)
    rows = wait_rows(rig.db, "SELECT seq, verdict, charged_fen FROM taps", 1)
    assert len(rows) == 1 and rows[0][1] == "grant" and rows[0][2] > 0, rig.console()
    charged = rows[0][2]
    time.sleep(1.0)  # deliberate: a second charge for the same tap would show within 1 s
    assert query(rig.db, balance)[0][0] == start - charged
    assert len(query(rig.db, "SELECT seq FROM taps")) == 1
    # The TAP is lost on the way up: the device gives up, its VOID arrives after the cable
    # heals and tombstones the tap; nothing more is charged.
    time.sleep(1.2)  # the reader's debounce: away long enough to tap again
    mark = len(rig.board.output())
    rig.cable.set_faults("ab", drop=1.0)
    rig.tap(CARD)
    assert rig.board.wait_for("voided as", 15, mark), rig.console()
    rig.cable.set_faults("ab")
    assert rig.board.wait_for("voided by the host", 40, mark), rig.console()
    voids = query(rig.db, "SELECT outcome FROM tap_voids")
    assert voids == [("tombstone",)], rig.console()
    rows = query(rig.db, "SELECT verdict, reason, charged_fen FROM taps ORDER BY id")
    assert rows == [("grant", "ok", charged), ("deny", "voided", 0)], rig.console()
    assert query(rig.db, balance)[0][0] == start - charged
    verify_ok(rig.db)


def test_outbox_void_replaces_the_tap_in_its_slot_and_survives_a_reboot(tmp_path: Path) -> None:
    program = str(ROOT / "tests" / "mpy" / "outbox_void_slot.py")
    r = run_micropython([program, "make"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert "SLOT 0 FLOOR 2" in r.stdout.decode()   # the VOID's seq is newer than tap 2's
    r = run_micropython([program, "check"], cwd=tmp_path)
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    # Ring order kept (the VOID sits where tap 1 was), ref read back from the VOID's body.
    assert "PENDING 4/1/1 2/2/0 3/3/0 FLOOR 2 TAP1 0 DONE True LEFT 2" in out, out
