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

from conftest import ROOT, micropython_env, micropython_path, run_micropython

from sim.run_device import SimBoard, make_config

pytestmark = pytest.mark.skipif(micropython_path() is None, reason="needs the MicroPython unix port")

OUTBOX_SCRIPT = r"""
import sys, struct
from outbox import Outbox
from protocol.mac import Mac
from protocol.packet import TapWriter
step = sys.argv[1]
tw = TapWriter("gate-01", Mac(bytes(range(32))))
def tap(seq):
    return tw.tap(seq, b"\x04\xa1\xb2\xc3", 8, 0, 0, 0, 0, 0)
ob = Outbox("ob.bin", 8)
if step == "fill":
    for n in range(1, 11):             # 10 taps into 8 slots: seqs 1 and 2 are dropped
        lost = ob.add(0x10000 | n, tap(0x10000 | n))
        if lost:
            print("LOST", lost & 0xFFFF)
    ob.done(0x10005)
    print("DROPPED", ob.dropped)
elif step == "check":
    order = []
    for k in range(ob.n):
        i = ob.order(k)
        if ob.state[i] == 1:
            raw = bytes(ob.read(i))
            ok = raw == bytes(tap(ob.seq[i]))
            order.append("%d%s" % (ob.seq[i] & 0xFFFF, "" if ok else "!"))
    print("PENDING", " ".join(order))
    print("RECOVERED", ob.recovered, "FLOOR", ob.oldest_seq() & 0xFFFF)
    lost = ob.add(0x20001, tap(0x20001))
    print("NEXT", lost & 0xFFFF)
"""


def test_outbox_ring_survives_reopen_and_drops_oldest(tmp_path: Path) -> None:
    (tmp_path / "ob_check.py").write_text(OUTBOX_SCRIPT)
    r = run_micropython([str(tmp_path / "ob_check.py"), "fill"], cwd=tmp_path)
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert "LOST 1" in out and "LOST 2" in out and "DROPPED 2" in out
    size = (tmp_path / "ob.bin").stat().st_size
    r = run_micropython([str(tmp_path / "ob_check.py"), "check"], cwd=tmp_path)
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    # Oldest first, identical bytes, seq 5 was decided, 1 and 2 overwritten.
    assert "PENDING 3 4 6 7 8 9 10\n" in out
    assert "RECOVERED 7 FLOOR 3" in out
    assert "NEXT 3" in out  # ring order survives the reopen: the next write replaces seq 3
    assert (tmp_path / "ob.bin").stat().st_size == size  # preallocated, never grows


def test_outbox_torn_slot_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "ob_check.py").write_text(OUTBOX_SCRIPT)
    assert run_micropython([str(tmp_path / "ob_check.py"), "fill"], cwd=tmp_path).returncode == 0
    data = bytearray((tmp_path / "ob.bin").read_bytes())
    # Slot of seq 7 (slot index 6): flip a byte of the stored packet, as a cut mid-write would.
    off = 16 + 6 * 192 + 16 + 20
    data[off] ^= 0xFF
    (tmp_path / "ob.bin").write_bytes(bytes(data))
    out = run_micropython([str(tmp_path / "ob_check.py"), "check"], cwd=tmp_path).stdout.decode()
    assert "PENDING 3 4 6 8 9 10\n" in out


READ_WHILE_ADD_SCRIPT = r"""
from outbox import Outbox
from protocol.mac import Mac
from protocol.packet import TapWriter
tw = TapWriter("gate-01", Mac(bytes(range(32))))
ob = Outbox("ob.bin", 4)
ob.add(0x10001, tw.tap(0x10001, b"\x04\xa1\xb2\xc3", 8, 0, 0, 0, 0, 0))
first = bytes(tw.tap(0x10001, b"\x04\xa1\xb2\xc3", 8, 0, 0, 0, 0, 0))
mv = ob.read(ob.find(0x10001))          # what the sender hands to link.send()
ob.add(0x10002, tw.tap(0x10002, b"\x04\xd1\xe2\xf3\xa4\xb5\xc6", 8, 0, 0, 0, 0, 0))
print("INTACT", bytes(mv) == first)
"""


def test_outbox_read_is_not_overwritten_by_a_new_tap(tmp_path: Path) -> None:
    # The packet being published (an MQTT publish may wait for a free in-flight slot) must
    # keep its bytes while the next tap is stored.
    (tmp_path / "ob_read.py").write_text(READ_WHILE_ADD_SCRIPT)
    r = run_micropython([str(tmp_path / "ob_read.py")], cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    assert "INTACT True" in r.stdout.decode()


BOOT_SCRIPT = r"""
import os, struct
import config as C
def files():
    return sorted(n for n in os.listdir() if n.startswith("boot.dat"))
print("FIRST", C.next_boot(), C.next_boot(), files())
# Power cut after the new number was written, before it replaced boot.dat (which a torn
# in-place write would also leave empty): the count goes on from the newer copy.
with open("boot.dat", "wb") as fh:
    pass
with open("boot.dat.tmp", "wb") as fh:
    fh.write(struct.pack(">H", 7))
print("TORN", C.next_boot(), files())
# Power cut while the temporary file was being written: the old boot.dat counts.
with open("boot.dat.tmp", "wb") as fh:
    fh.write(b"\x00")
print("PARTIAL", C.next_boot(), files())
"""


def test_boot_counter_survives_a_power_cut_mid_write(tmp_path: Path) -> None:
    # A boot counter that restarted at 1 would put every seq below what the host accepted.
    (tmp_path / "boot_check.py").write_text(BOOT_SCRIPT)
    r = run_micropython([str(tmp_path / "boot_check.py")], cwd=tmp_path)
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert "FIRST 1 2 ['boot.dat']" in out
    assert "TORN 8 ['boot.dat']" in out
    assert "PARTIAL 9 ['boot.dat']" in out


CLOCKS_SCRIPT = r"""
import config as C
from app import App
from outbox import Outbox
from protocol.compat import ticks_add, ticks_diff, ticks_ms
DAY = 86400000
class Link:
    connected = False
    on_packet = None
class Fb:
    def show(self, *a):
        pass
cfg = C.check({"device_id": "gate-01", "kind": "gate", "key": "00" * 32, "link": "serial",
               "serial": {"uart": 2}, "reader": {"bus": "hsu"}})
app = App(cfg, Link(), Fb(), Outbox("ob.bin", 4), 1, None, C.AllowList(), 0, False)
now = ticks_ms()
app.host_time = 1000000
app.time_ticks = ticks_add(now, -3 * DAY - 5000)
app.down_at = ticks_add(now, -9 * DAY)
for _ in range(20):
    app._age_clocks(now)
print("LAG", ticks_diff(now, app.time_ticks), "TIME", app.host_time + ticks_diff(now, app.time_ticks) // 1000)
print("OFFLINE_DAYS", ticks_diff(now, app.down_at) // DAY)
"""


def test_clock_anchors_stay_within_the_ticks_wrap(tmp_path: Path) -> None:
    # On the ESP32 ticks_diff is only right within ~6.2 days: a device offline for longer must
    # keep its host clock and still count as offline (an offline gate keeps granting).
    (tmp_path / "clocks.py").write_text(CLOCKS_SCRIPT)
    r = run_micropython([str(tmp_path / "clocks.py")], cwd=tmp_path)
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert "LAG 5000 TIME %d" % (1000000 + 3 * 86400 + 5) in out, out
    assert "OFFLINE_DAYS 1" in out, out


CONFIG_ACK_SCRIPT = r"""
import config as C
from app import App
from outbox import Outbox
from protocol import packet as P
from protocol.mac import Mac
KEY = bytes(range(32))
class Link:
    connected = True
    on_packet = None
class Fb:
    def show(self, *a):
        pass
cfg = C.check({"device_id": "gate-01", "kind": "gate", "key": KEY.hex(), "link": "serial",
               "serial": {"uart": 2}, "reader": {"bus": "hsu"}})
f = {"cfg_version": 5, "relay_ms": 900, "debounce_ms": 1000, "offline_after_s": 20,
     "heartbeat_s": 30, "allow_op": 1, "allow": [b"\x04\xa1\xb2\xc3"]}
for save in (False, True):
    allow = C.AllowList()
    app = App(cfg, Link(), Fb(), Outbox("ob.bin", 4), 1, None, allow, 0, save)
    app.on_packet(P.encode(P.CONFIG, 0x10001, "gate-01", f, Mac(KEY), P.DOWN))
    acks = [c for c in app._ctrl if c[0] == 3]
    print("SAVE", save, "ACKS", len(acks), "VERSION", app.params["cfg_version"], "ALLOW", allow.count)
"""


def test_config_is_acknowledged_only_when_kept(tmp_path: Path) -> None:
    # selfcheck runs an App that saves nothing: an ACK from it would make the host count the
    # CONFIG applied and never push it to the real firmware.
    (tmp_path / "cfg_ack.py").write_text(CONFIG_ACK_SCRIPT)
    r = run_micropython([str(tmp_path / "cfg_ack.py")], cwd=tmp_path)
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert "SAVE False ACKS 0 VERSION 0 ALLOW 0" in out, out
    assert "SAVE True ACKS 1 VERSION 5 ALLOW 1" in out, out


@pytest.mark.parametrize("problem", ["missing", "not json", "bad key", "short watchdog"])
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
    else:
        path.write_text(json.dumps({**cfg, "wdt_ms": 500}))  # would reset the board in a loop
    board.start()
    try:
        line = board.wait_for("FAULT", 10)
        assert line is not None, board.output()
        time.sleep(1.5)
        assert board.alive()  # parked, not a crash loop
        out = board.output()
        assert sum("FAULT" in x for x in out) == 1 and "Traceback" not in "\n".join(out)
        expected = {"missing": "config.json missing", "not json": "not valid JSON", "bad key": "key",
                "short watchdog": "wdt_ms"}[problem]
        assert expected in line
    finally:
        board.kill()


MQTT_SCRIPT = r"""
import asyncio, sys
from mqtt import MQTTClient
port = int(sys.argv[1])
n = int(sys.argv[2])
c = MQTTClient("dev-7", "127.0.0.1", port, keepalive=5,
               will=(b"tk/dev-7/status", b"offline", True, 1),
               birth=(b"tk/dev-7/status", b"online", True, 1),
               subs=((b"tk/dev-7/down", 1),))
got = []
c.on_message = lambda t, p: got.append(bytes(p))
async def main():
    asyncio.create_task(c.run())
    sent = 0
    while True:
        if c.connected and sent < n:
            if await c.publish(b"tk/dev-7/up", b"msg%d" % sent):
                sent += 1
        for m in got:
            print("DOWN", m.decode())
            if m == b"quit":
                await asyncio.sleep_ms(200)
                print("INFLIGHT", c.inflight(), "CONNECTS", c.connects)
                return
        got.clear()
        await asyncio.sleep_ms(20)
asyncio.run(main())
"""


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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if pred(self.msgs):
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_mqtt_client_against_mosquitto(tmp_path: Path, broker) -> None:
    (tmp_path / "mq.py").write_text(MQTT_SCRIPT)
    host = Host(broker.port)
    proc = subprocess.Popen([micropython_path(), str(tmp_path / "mq.py"), str(broker.port), "5"],
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
        proc = subprocess.Popen([micropython_path(), str(tmp_path / "mq.py"), str(broker.port), "0"],
                                env=micropython_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(1.0)
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
    (tmp_path / "mq.py").write_text(MQTT_SCRIPT)
    proc = subprocess.Popen([micropython_path(), str(tmp_path / "mq.py"), str(broker.port), "1"],
                            env=micropython_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        host = Host(broker.port)
        assert host.wait(lambda ms: any(t == "tk/dev-7/up" for t, _, _ in ms))
        host.close()
        broker.stop()
        time.sleep(1.0)
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


VOID_KEEP_SCRIPT = r"""
from outbox import Outbox
from protocol.mac import Mac
from protocol.packet import TapWriter
tw = TapWriter("wash-01", Mac(bytes(range(32))))
def tap(seq):
    return bytes(tw.tap(seq, b"\x04\xa1\xb2\xc3", 8, 0, 0, 1, 2500, 0))
ob = Outbox("ob.bin", 4)
for n in (1, 2, 3, 4):
    ob.add(n, tap(n))
# Taps 1 and 3 got no answer: their slots now hold VOIDs (seqs 101, 103).
for t in (1, 3):
    ob.replace_void(ob.find(t), 100 + t, tap(100 + t))
lost = []
for n in (5, 6):                      # full ring: must drop TAPs 2 and 4, keep both VOIDs
    lost.append(ob.add(n, tap(n)))
print("LOST", lost)
print("VOIDS", sorted(ob.seq[i] for i in range(ob.n) if ob.state[i] == 1 and ob.void[i]))
for t in (5, 6):
    ob.replace_void(ob.find(t), 100 + t, tap(100 + t))
print("ALLVOID_LOST", ob.add(7, tap(7)))  # only VOIDs left: the oldest (101) goes
"""


def test_full_outbox_drops_taps_before_voids(tmp_path: Path) -> None:
    (tmp_path / "ob_void.py").write_text(VOID_KEEP_SCRIPT)
    r = run_micropython([str(tmp_path / "ob_void.py")], cwd=tmp_path)
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr.decode()
    assert "LOST [2, 4]" in out
    assert "VOIDS [101, 103]" in out
    assert "ALLVOID_LOST 101" in out
