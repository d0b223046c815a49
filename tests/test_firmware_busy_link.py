"""End to end: the reader keeps reading cards while the MQTT link cannot send.

MicroPython unix port + PN532 emulator + real mosquitto + the real host daemon. The broker is
stopped (SIGSTOP) with the device connected: PUBACKs stop, the MQTT client's in-flight slots
fill up and a publish waits (up to 2 s) for a free one. A member told "No answer - please tap
again" taps again at once; the card must be read and answered although the link is stuck (the
VOID of the tap given up on, and any PING, go out from the link's own task, never from the
reader's), and once the broker is back every tap is settled exactly once.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import pytest

from conftest import micropython_path, poll_until
from firmware_rig import RELAY
from sim.cards import UidCard
from sim.pinlog import pulses, read_events

pytestmark = [pytest.mark.micropython,
              pytest.mark.skipif(micropython_path() is None, reason="needs the MicroPython unix port")]

# Distinct UIDs (no debounce between them), none enrolled: the host answers each VOID alike.
UIDS = ["04A1B2C3", "04D1E2F3A4B5C6", "04112233", "04445566", "04778899", "04AABBCC"]
HOLD_S = 1.0     # how long each card lies on the reader (many poll cycles of 0.1 s)
ANSWER_S = 10.0  # how long the test waits for the device's answer to a card it read
_IN_LIST = 0x4A  # PN532 InListPassiveTarget: one card poll


class Timeline:
    """What happened when (test clock), for the failure message and the report."""

    def __init__(self, rig) -> None:
        self.rig = rig
        self.t0 = time.monotonic()
        self.rows: list[str] = []

    def note(self, what: str) -> None:
        polls = self.rig.emu.commands.count(_IN_LIST)
        self.rows.append(f"{time.monotonic() - self.t0:7.3f}s  polls={polls:4d}  {what}")

    def __str__(self) -> str:
        return "\n".join(self.rows)


def present(rig, tl: Timeline, uid: str) -> str | None:
    """The card lies on the reader HOLD_S, then goes; the device's answer to it, or None."""
    at = len(rig.board.output())
    rig.emu.place(UidCard(bytes.fromhex(uid)))
    tl.note(f"card {uid} placed")
    t = time.monotonic()
    line = rig.board.wait_for("DISPLAY:", HOLD_S, at)
    if line:
        tl.note(f"answer: {line}")
    time.sleep(max(0.0, HOLD_S - (time.monotonic() - t)))  # deliberate: the card lies there HOLD_S
    rig.emu.remove()
    tl.note(f"card {uid} removed")
    if line is None:
        line = rig.board.wait_for("DISPLAY:", ANSWER_S, at)
        tl.note(f"answer after the card went: {line}")
    return line


def test_card_after_no_answer_is_read_while_the_mqtt_slots_are_full(rigs, broker):
    rig = rigs(kind="gate", link="mqtt", broker=broker, decision_ms=400)
    rig.boot()
    mark = len(rig.board.output())
    tl = Timeline(rig)
    os.kill(broker.proc.pid, signal.SIGSTOP)
    tl.note("broker stopped")
    try:
        # Each card right after the answer to the one before: TAP, VOID and the probe PING of
        # every tap fill the 8 in-flight slots within the first taps.
        for uid in UIDS:
            line = present(rig, tl, uid)
            assert line is not None, f"card {uid} was never read\n{tl}\n{rig.console()}"
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
        tl.note("broker resumed")
    print(tl)
    # Every tap made online was given up on (VOID); all are settled once the broker is back.
    out = rig.board.output()[mark:]
    voided = sum("voided as" in line for line in out)
    assert voided >= 1, rig.console()
    assert poll_until(lambda: sum("voided by the host" in line for line in rig.board.output()[mark:])
                      >= voided, 60, 0.2), f"{tl}\n{rig.console()}"
    time.sleep(1.0)  # deliberate: a late duplicate TAP or VOID would reach the ledger within 1 s
    with sqlite3.connect(rig.db) as c:
        voids = c.execute("SELECT tap_seq, outcome FROM tap_voids").fetchall()
        seqs = [r[0] for r in c.execute("SELECT seq FROM taps WHERE device_id = ?", (rig.device_id,))]
    out = rig.board.output()[mark:]
    assert sum("voided by the host" in line for line in out) == voided, rig.console()
    assert len(voids) == voided and len({v[0] for v in voids}) == voided, rig.console()
    assert len(set(seqs)) == len(seqs), rig.console()
    assert pulses(read_events(rig.board.pins), RELAY, 1) == []
