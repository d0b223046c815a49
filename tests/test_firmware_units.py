"""Firmware parts under the MicroPython unix port: outbox ring on flash, config faults, the asyncio MQTT client.

The MQTT client talks to a real mosquitto (the `broker` fixture); paho on the CPython side
plays the host.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from conftest import ROOT, micropython_env, micropython_path, poll_until, run_micropython

from sim.run_device import SimBoard, make_config

pytestmark = [pytest.mark.micropython,
              pytest.mark.skipif(micropython_path() is None, reason="needs the MicroPython unix port")]

MPY = ROOT / "tests" / "mpy"


def mpy(program: str, *args: str, cwd: Path) -> str:
    """Run tests/mpy/<program> with ``cwd`` as the board's filesystem; its stdout."""
    r = run_micropython([str(MPY / program), *args], cwd=cwd)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    return r.stdout.decode()

def test_outbox_ring_survives_reopen_and_drops_oldest(tmp_path: Path) -> None:
    out = mpy("outbox_ring.py", "fill", cwd=tmp_path)
    assert "LOST 1" in out and "LOST 2" in out and "DROPPED 2" in out
    size = (tmp_path / "ob.bin").stat().st_size
    out = mpy("outbox_ring.py", "check", cwd=tmp_path)
    # Oldest first, identical bytes, seq 5 was decided, 1 and 2 overwritten.
    assert "PENDING 3 4 6 7 8 9 10\n" in out
    assert "RECOVERED 7 FLOOR 3" in out
    assert "NEXT 3" in out  # ring order survives the reopen: the next write replaces seq 3
    assert (tmp_path / "ob.bin").stat().st_size == size  # preallocated, never grows


def test_outbox_torn_slot_is_ignored(tmp_path: Path) -> None:
    mpy("outbox_ring.py", "fill", cwd=tmp_path)
    data = bytearray((tmp_path / "ob.bin").read_bytes())
    # Slot of seq 7 (slot index 6): flip a byte of the stored packet, as a cut mid-write would.
    off = 16 + 6 * 192 + 16 + 20
    data[off] ^= 0xFF
    (tmp_path / "ob.bin").write_bytes(bytes(data))
    out = mpy("outbox_ring.py", "check", cwd=tmp_path)
    assert "PENDING 3 4 6 8 9 10\n" in out


def test_outbox_read_is_not_overwritten_by_a_new_tap(tmp_path: Path) -> None:
    # The packet being published (an MQTT publish may wait for a free in-flight slot) must
    # keep its bytes while the next tap is stored.
    assert "INTACT True" in mpy("outbox_read.py", cwd=tmp_path)


def test_boot_counter_survives_a_power_cut_mid_write(tmp_path: Path) -> None:
    # A boot counter that restarted at 1 would put every seq below what the host accepted.
    out = mpy("boot_counter.py", cwd=tmp_path)
    assert "FIRST 1 2 ['boot.dat']" in out
    assert "TORN 8 ['boot.dat']" in out
    assert "PARTIAL 9 ['boot.dat']" in out


def test_boot_counter_never_wraps_and_a_new_key_starts_a_new_epoch(tmp_path: Path) -> None:
    # A wrapped count (65535 -> 1) would put every seq below what the host accepted: the host
    # would refuse the device until it was registered again.
    out = mpy("boot_counter.py", cwd=tmp_path)
    assert "EPOCH 1 2 1 2 1" in out, out
    assert "LAST 65535 0 0 ['boot.dat']" in out, out
    assert "KEPT 65535" in out, out


def test_clock_anchors_stay_within_the_ticks_wrap(tmp_path: Path) -> None:
    # On the ESP32 ticks_diff is only right within ~6.2 days: a device offline for longer must
    # keep its host clock and still count as offline (an offline gate keeps granting). Time
    # moves in steps the 32-bit port accepts (ticks_add refuses more than half the period).
    out = mpy("clock_anchors.py", cwd=tmp_path)
    assert "BAD_TIME 0 BAD_OFFLINE 0" in out, out
    lag, offline = (int(x) for x in out.split("MAX_LAG_H")[1].split()[::2][:2])
    assert lag < 24 and 24 <= offline < 48, out


def test_host_errors_clear_only_frames_in_flight_and_never_on_bad_mac(tmp_path: Path) -> None:
    # Issue #12 (1): forged frames under our seqs while the link is down earn authenticated
    # ERRORs naming them; they must not clear the pending TAP or the VOID that reverses it.
    out = mpy("error_handling.py", cwd=tmp_path)
    for line in ("UNSENT_BAD_MAC 1", "UNSENT_MALFORMED 1", "UNSENT_REPLAY 1 RESYNC False",
                 "SENT_BAD_MAC 1 IN_FLIGHT 1", "SENT_REPLAY 1 RESYNC True IN_FLIGHT 0",
                 "VOID_BAD_MAC 1 VOID 1", "VOID_MALFORMED 0 GIVEN_UP 1"):
        assert line in out, out


def test_unanswered_taps_never_wait_on_the_link_and_the_void_goes_before_the_ping(tmp_path: Path) -> None:
    # A link whose send does not return (MQTT in-flight slots full): two taps in a row go
    # unanswered, and each returns (the reader reads the next card) instead of waiting on
    # the link for the VOID or the PING. Once the link sends again: every frame once, in seq
    # order (the give-up VOIDs before the probe PING: no replay refusal, no resync).
    out = mpy("tap_busy_link.py", cwd=tmp_path)
    assert out.count("TAP_RETURNED 5") == 2 and "TAP_BLOCKED" not in out, out
    assert "SENT TAP:1 VOID:2 VOID:4 PING:5\n" in out, out
    assert "ORDERED 1 ONCE 1" in out and "VOIDS 2 VOIDED 2" in out, out


def test_selfcheck_tries_the_reader_three_times(tmp_path: Path) -> None:
    # One missed ACK deadline is not a broken reader (the reader task takes 3 errors in a
    # row for a fault): begin() is tried again, at most 3 times, the last error is the answer.
    out = mpy("selfcheck_begin.py", cwd=tmp_path)
    assert "FAILS 0 OK 1 6 TRIES 1 CALLS 1" in out, out
    assert "FAILS 2 OK 1 6 TRIES 3 CALLS 3" in out, out
    assert "FAILS 3 ERROR PN532 did not answer in 30 ms CALLS 3" in out, out


def test_config_is_acknowledged_only_when_kept(tmp_path: Path) -> None:
    # selfcheck runs an App that saves nothing: an ACK from it would make the host count the
    # CONFIG applied and never push it to the real firmware.
    out = mpy("config_ack.py", cwd=tmp_path)
    assert "SAVE False ACKS 0 VERSION 0 ALLOW 0" in out, out
    assert "SAVE True ACKS 1 VERSION 5 ALLOW 1" in out, out


@pytest.mark.parametrize("problem", ["missing", "not json", "bad key", "short watchdog", "boots used up"])
def test_bad_config_is_one_line_and_a_safe_state(tmp_path: Path, problem: str) -> None:
    cfg = make_config("gate-01", "gate", bytes(32))
    board = SimBoard(tmp_path / "board", cfg)
    path = board.dir / "config.json"
    if problem == "missing":
        path.unlink()
    elif problem == "not json":
        path.write_text("{device_id: gate-01")
    elif problem == "bad key":
        path.write_text(json.dumps({**cfg, "key": "abc"}))
    elif problem == "short watchdog":
        path.write_text(json.dumps({**cfg, "wdt_ms": 500}))  # would reset the board in a loop
    else:
        (board.dir / "boot.dat").write_bytes(b"\xff\xff")  # boot 65535 was the last one
    board.start()
    try:
        line = board.wait_for("FAULT", 10)
        assert line is not None, board.output()
        time.sleep(1.5)  # deliberate: a crash loop would have restarted the board within 1.5 s
        assert board.alive()  # parked, not a crash loop
        out = board.output()
        assert sum("FAULT" in x for x in out) == 1 and "Traceback" not in "\n".join(out)
        expected = {"missing": "config.json missing", "not json": "not valid JSON", "bad key": "key",
                    "short watchdog": "wdt_ms", "boots used up": "boot counter used up"}[problem]
        assert expected in line
    finally:
        board.kill()


class Host:
    """paho on the CPython side: records everything under tk/#."""

    def __init__(self, port: int) -> None:
        self.msgs: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="host-test")
        self.c.on_message = self._on
        self.c.connect("127.0.0.1", port)
        self.c.subscribe("tk/#", 1)
        self.c.loop_start()

    def _on(self, client, userdata, m) -> None:
        with self.lock:
            self.msgs.append((m.topic, m.payload, m.retain))

    def wait(self, pred, timeout: float = 10.0) -> bool:
        def seen() -> bool:
            with self.lock:
                return bool(pred(self.msgs))

        return bool(poll_until(seen, timeout))

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_mqtt_client_against_mosquitto(tmp_path: Path, broker) -> None:
    host = Host(broker.port)
    proc = subprocess.Popen([micropython_path(), str(MPY / "mqtt_echo.py"), str(broker.port), "5"],
                            env=micropython_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert host.wait(lambda ms: sum(t == "tk/dev-7/up" for t, _, _ in ms) >= 5)
        assert ("tk/dev-7/status", b"online", False) in host.msgs
        ups = [p for t, p, _ in host.msgs if t == "tk/dev-7/up"]
        assert ups == [b"msg%d" % i for i in range(5)]  # QoS 1, in order
        # A power cut: the broker publishes the retained last will.
        proc.kill()
        proc.wait(5)
        assert host.wait(lambda ms: ("tk/dev-7/status", b"offline", False) in ms, 10)
        # Persistent session (clean_session=0): QoS 1 messages for the device wait in the broker.
        host.c.publish("tk/dev-7/down", b"while-away", qos=1).wait_for_publish(5)
        proc = subprocess.Popen([micropython_path(), str(MPY / "mqtt_echo.py"), str(broker.port), "0"],
                                env=micropython_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        # Back online (its second birth message): the session's queued message is on its way.
        assert host.wait(lambda ms: ms.count(("tk/dev-7/status", b"online", False)) >= 2, 10)
        host.c.publish("tk/dev-7/down", b"quit", qos=1).wait_for_publish(5)
        out = proc.communicate(timeout=15)[0].decode()
        assert "DOWN while-away" in out and "DOWN quit" in out, out
        assert out.index("DOWN while-away") < out.index("DOWN quit")
        assert "INFLIGHT 0" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
        host.close()


def test_mqtt_client_reconnects_after_broker_restart(tmp_path: Path, broker) -> None:
    proc = subprocess.Popen([micropython_path(), str(MPY / "mqtt_echo.py"), str(broker.port), "1"],
                            env=micropython_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        host = Host(broker.port)
        assert host.wait(lambda ms: any(t == "tk/dev-7/up" for t, _, _ in ms))
        host.close()
        broker.stop()
        time.sleep(1.0)  # deliberate: the broker stays down a while, so the client sees it gone
        broker.start()  # same port; persistence is off, so the session is new
        host = Host(broker.port)
        # The client comes back by itself and announces itself again (retained "online").
        assert host.wait(lambda ms: ("tk/dev-7/status", b"online", True) in ms
                         or ("tk/dev-7/status", b"online", False) in ms, 20)
        time.sleep(0.5)  # its SUBSCRIBE went out before the birth message
        host.c.publish("tk/dev-7/down", b"quit", qos=1).wait_for_publish(5)
        out = proc.communicate(timeout=15)[0].decode()
        assert "DOWN quit" in out and "CONNECTS 2" in out, out
        host.close()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_full_outbox_drops_taps_before_voids(tmp_path: Path) -> None:
    out = mpy("outbox_voids.py", cwd=tmp_path)
    assert "LOST [2, 4]" in out
    assert "VOIDS [101, 103]" in out
    assert "ALLVOID_LOST 101" in out


def test_mqtt_parser_on_canned_bytes(tmp_path: Path) -> None:
    # firmware/mqtt.py takes its stream from outside: short reads, an oversize packet (skipped,
    # the next one delivered), malformed PUBLISH and remaining length end the connection.
    out = mpy("mqtt_parser.py", "short", "oversize", "malformed", cwd=tmp_path)
    assert "SHORT [(b'tk/down', b'hello'), (b'tk/down', b'two')] PUBACK b'@\\x02\\x124' OSError" in out, out
    assert "OVERSIZE [(b'tk/down', b'after')] OSError" in out, out
    assert "MALFORMED [] MQTTError('malformed PUBLISH'" in out, out
    assert "BADLEN [] MQTTError('bad remaining length'" in out, out


def test_mqtt_stalled_connection_ends_in_a_reconnect(tmp_path: Path) -> None:
    # Issue #12 (13): drain() had no timeout, so a stalled connection hung the link task until
    # the watchdog reset the board.
    out = mpy("mqtt_parser.py", "stalled", cwd=tmp_path)
    assert "STALLED 2 [(b'tk/down', b'second')] CLOSED True OPENED 2" in out, out
