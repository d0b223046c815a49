"""End to end: the real firmware under the MicroPython unix port, the PN532 emulator, the real host daemon.

card placed on the emulator -> firmware/reader.py -> TAP -> serial (sim/cable.py, pyserial
socket://) or MQTT (real mosquitto) -> host.daemon -> DECISION -> relay pulse and LED pattern in
the pins log. Faults: a hung PN532, a cut cable, a power cut with taps in the outbox, flipped bits.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from conftest import micropython_path, poll_until
from firmware_rig import CARD, LED_R, OTHER, RELAY, check_grant_feedback, taps, wait_pulse

from sim.pinlog import levels, pulses, read_events

pytestmark = [pytest.mark.micropython,
              pytest.mark.skipif(micropython_path() is None, reason="needs the MicroPython unix port")]


def test_serial_gate_tap_reaches_daemon_and_pulses_relay(rigs):
    rig = rigs(kind="gate")
    rig.boot()
    rig.tap(CARD)
    rows = rig.wait_taps(1)
    assert len(rows) == 1 and rows[0][1] == CARD and rows[0][2] == "grant", rig.console()
    check_grant_feedback(rig)
    assert rig.board.wait_for("DISPLAY: Welcome A*", 5), rig.console()
    # A denied card: red, no relay.
    rig.tap(OTHER)
    rows = rig.wait_taps(2)
    assert [r[2] for r in rows] == ["grant", "deny"], rig.console()
    time.sleep(1.0)  # deliberate: a relay pulse for the denied card would show within 1 s
    assert len(pulses(read_events(rig.board.pins), RELAY, 1)) == 1
    assert 1 in levels(read_events(rig.board.pins), LED_R)


def test_card_held_is_one_tap(rigs):
    rig = rigs(kind="gate")
    rig.boot()
    rig.tap(CARD, hold=2.5)  # many poll cycles with the same card on the reader
    time.sleep(1.0)  # deliberate: a second tap from the long hold would arrive within 1 s
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
    poll_until(lambda: "name=reader_ok" in rig.daemon.err.read_text(), 15, 0.1)
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
    time.sleep(2.5)  # deliberate: offline_after_s (2 s) must pass before the gate grants offline
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
    time.sleep(2.0)  # deliberate: a duplicate delivery of a queued tap would arrive within 2 s
    rows = taps(rig.db, rig.device_id)
    assert len(rows) == 3, rig.console()
    assert len({r[0] for r in rows}) == 3 and all(r[3] == 1 for r in rows)


def test_power_cut_with_taps_in_outbox_delivers_once(rigs):
    rig = rigs(kind="gate", offline_after_s=2)
    rig.boot()
    rig.cable.set_faults("ab", drop=1.0)
    rig.cable.set_faults("ba", drop=1.0)
    assert rig.board.wait_for("host lost", 15), rig.console()
    time.sleep(2.5)  # deliberate: offline_after_s (2 s) must pass before the gate grants offline
    for _ in range(2):
        rig.tap(CARD, hold=0.3)
        time.sleep(1.2)  # the reader's debounce: away long enough to tap again
    assert len(wait_pulse(rig.board, 2)) == 2, rig.console()
    rig.board.kill()  # power cut
    rig.cable.set_faults("ab")
    rig.cable.set_faults("ba")
    mark = len(rig.board.output())
    rig.board.start()
    assert rig.board.wait_for("from before the reboot", 10, mark), rig.console()
    rows = rig.wait_taps(2, 30)
    time.sleep(2.0)  # deliberate: a duplicate delivery of an outbox tap would arrive within 2 s
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
        time.sleep(1.2)  # the reader's debounce: away long enough to tap again
    rig.cable.set_faults("ab")
    rig.cable.set_faults("ba")
    # Every tap the device turned into a TAP frame (all but those it refused locally while it
    # had lost the host) reaches the host exactly once, after retries and resyncs.
    refused = sum("Offline - please try later" in line for line in rig.board.output()[mark:])
    made = len(cards) - refused
    assert made >= len(cards) // 2, rig.console()
    rows = rig.wait_taps(made, 40)
    time.sleep(2.0)  # deliberate: a duplicate delivery after a resync would arrive within 2 s
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
    assert 1 <= res["reader"]["tries"] <= 3, res
    assert res["link"]["ok"] is True and res["hello"]["ok"] is True, res
    # Without the daemon the HELLO goes unanswered, and the result says so.
    rig.daemon.stop()
    r = subprocess.run([exe, "-c", "import selfcheck; selfcheck.run(2000)"], cwd=rig.board.dir,
                       env=rig.board.env, capture_output=True, text=True, timeout=60)
    res = json.loads([x for x in r.stdout.splitlines() if x.startswith("{")][-1])
    assert res["reader"]["ok"] is True and res["hello"]["ok"] is False, res
