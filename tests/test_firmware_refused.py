"""End to end: a TAP the host refuses with ERROR `replay` is kept by the real firmware and applied once.

MicroPython unix port + PN532 emulator + the real host daemon over a simulated cable. A TAP is
refused as a replay when a newer frame of the device reached the host first (a PING or EVENT
encoded after the TAP was made but sent before it) and the last HELLO's resend_floor did not
cover it. That race is rare and timing-bound, so here the daemon is made to refuse the first
N TAPs it sees, exactly as its replay window does (a wrapper around `host.daemon` whose
`ReplayWindow.check` raises `ReplayError` N times for a TAP; everything else is the real
daemon). The device must keep the tap, resync (HELLO with resend_floor = the tap's seq) and
resend it; the host then applies it once, as a late outbox delivery. Refused more than the
firmware's limit, the frame counts as final and the slot is cleared (nothing is applied).
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import pytest

import firmware_rig
from conftest import micropython_path, poll_until
from firmware_rig import CARD, RELAY, taps, wait_pulse
from protocol import codes
from sim.cards import UidCard
from sim.pinlog import pulses, read_events

pytestmark = [pytest.mark.micropython,
              pytest.mark.skipif(micropython_path() is None, reason="needs the MicroPython unix port")]

REFUSING_DAEMON = r"""
import os, runpy, sys
from protocol import replay
from protocol.errors import ReplayError

left = [int(os.environ["TK_TEST_REFUSE_TAPS"])]
check = replay.ReplayWindow.check

def refusing_check(self, seq, raw, is_tap=False):
    if is_tap and raw[1] == 0x03 and left[0] > 0:   # a TAP (not a VOID)
        left[0] -= 1
        raise ReplayError("seq %d refused by the test (%d more)" % (seq, left[0]))
    return check(self, seq, raw, is_tap)

replay.ReplayWindow.check = refusing_check
sys.argv = ["host.daemon"] + sys.argv[1:]
runpy.run_module("host.daemon", run_name="__main__", alter_sys=True)
"""


def refusing_daemon(n: int):
    class RefusingDaemon(firmware_rig.Daemon):
        def __init__(self, tmp: Path, db: Path, *link: str, **kw) -> None:
            super().__init__(tmp, db, *link, **kw)
            self.args = [sys.executable, "-c", REFUSING_DAEMON] + self.args[3:]  # drop -m host.daemon

        def start(self) -> "RefusingDaemon":
            import os
            os.environ["TK_TEST_REFUSE_TAPS"] = str(n)
            try:
                return super().start()
            finally:
                del os.environ["TK_TEST_REFUSE_TAPS"]

    return RefusingDaemon


def test_refused_tap_is_resent_after_resync_and_applied_once(rigs, monkeypatch):
    monkeypatch.setattr(firmware_rig, "Daemon", refusing_daemon(1))
    rig = rigs(kind="gate")
    rig.boot()
    mark = len(rig.board.output())
    rig.tap(CARD)
    rows = rig.wait_taps(1)
    assert len(rows) == 1 and rows[0][1] == CARD and rows[0][2] == "grant", rig.console()
    assert rig.board.wait_for("overtaken; resent after resync", 5, mark), rig.console()
    assert "refused cause=replay" in rig.daemon.err.read_text(), rig.console()
    # The member got the answer (the resync fits in decision_ms): one relay pulse, no VOID.
    assert len(wait_pulse(rig.board, 1)) == 1, rig.console()
    assert rig.board.wait_for("DISPLAY: Welcome A*", 5, mark), rig.console()
    time.sleep(1.5)  # deliberate: a VOID or a give-up for the resent tap would show within 1.5 s
    out = rig.board.output()[mark:]
    assert not any("voided as" in line or "given up" in line for line in out), rig.console()
    assert len(taps(rig.db, rig.device_id)) == 1
    assert len(pulses(read_events(rig.board.pins), RELAY, 1)) == 1


def test_tap_refused_every_time_becomes_final_and_is_never_applied(rigs, monkeypatch):
    monkeypatch.setattr(firmware_rig, "Daemon", refusing_daemon(1000))
    rig = rigs(kind="gate")
    rig.boot()
    mark = len(rig.board.output())
    rig.tap(CARD)
    # Three resyncs, then the fourth refusal is final: the slot is cleared, nothing starts.
    assert rig.board.wait_for("given up after host error %d" % codes.ERR_REPLAY, 15, mark), rig.console()
    out = rig.board.output()[mark:]
    assert sum("overtaken; resent after resync" in line for line in out) == 3, rig.console()
    assert rig.board.wait_for("DISPLAY: No answer", 5, mark), rig.console()
    time.sleep(1.0)  # deliberate: a tap applied or a relay pulse would show within 1 s
    assert taps(rig.db, rig.device_id) == []
    assert pulses(read_events(rig.board.pins), RELAY, 1) == []
    # Nothing is left to resend: no further refusals once the slot is cleared.
    n = rig.daemon.err.read_text().count("refused cause=replay")
    time.sleep(3.0)  # deliberate: a resend would be refused again within 3 s
    assert rig.daemon.err.read_text().count("refused cause=replay") == n, rig.console()


def test_mqtt_taps_while_the_broker_is_paused_are_each_settled_once(rigs, broker):
    # The broker stops (SIGSTOP) with the device connected: PUBACKs stop, the device's MQTT
    # in-flight slots fill up and its publishes wait for one, while new taps are stored. Every
    # tap must reach the host with its own bytes (its own UID) and be settled exactly once
    # (each one timed out on the device, so each is voided: applied-then-reversed or tombstoned).
    import os
    import signal

    # decision_ms 400 (not 1500): the three taps must all be made before the device counts
    # the host as lost (two resync HELLOs unanswered, 2 s apart, after the first VOID went
    # unanswered for 2 s); at 1500 ms a loaded machine did not always make it.
    rig = rigs(kind="gate", link="mqtt", broker=broker, decision_ms=400)
    rig.boot()
    # Three taps, each a TAP, a VOID, and with the PING and resync HELLOs more publishes than
    # the client's 8 in-flight slots, before the device counts the host as lost.
    uids = ["04A1B2C3", "04D1E2F3A4B5C6", "04112233"]
    mark = len(rig.board.output())
    os.kill(broker.proc.pid, signal.SIGSTOP)
    try:
        for uid in uids:
            at = len(rig.board.output())
            # The card stays on the reader until the device has given up on it: a reader task
            # held up by a publish waiting for a slot missed a card held a fixed 0.3 s.
            rig.emu.place(UidCard(bytes.fromhex(uid)))
            try:
                assert rig.board.wait_for("voided as", 10, at), rig.console()
            finally:
                rig.emu.remove()
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
    poll_until(lambda: sum("voided by the host" in line for line in rig.board.output()[mark:])
               >= len(uids), 40, 0.2)
    out = rig.board.output()[mark:]
    assert sum("voided by the host" in line for line in out) == len(uids), rig.console()
    time.sleep(1.0)  # deliberate: a late duplicate TAP or VOID would reach the ledger within 1 s
    with sqlite3.connect(rig.db) as c:
        rows = c.execute("SELECT seq, uid FROM taps WHERE device_id = ? ORDER BY seq",
                         (rig.device_id,)).fetchall()
        voids = c.execute("SELECT tap_seq, outcome FROM tap_voids ORDER BY tap_seq").fetchall()
    # One VOID per tap, each settling a distinct tap seq; a TAP that arrived was applied once,
    # under its own UID, and reversed.
    assert len(voids) == len(uids) and len({v[0] for v in voids}) == len(uids), rig.console()
    applied = [r for r in rows if r[1]]
    assert len({r[0] for r in rows}) == len(rows)
    assert sorted(r[1] for r in applied) == sorted(set(r[1] for r in applied)), rig.console()
    assert set(r[1] for r in applied) <= set(uids), rig.console()
    for seq, uid in applied:
        assert uids.index(uid) == [v[0] for v in voids].index(seq), rig.console()
    assert pulses(read_events(rig.board.pins), RELAY, 1) == []
