"""Issue 19: the MQTT link's paho in a child process (``mqtt_process``, the default).

kill -9 of the link process mid-stream: the daemon starts another, no tap is lost or applied
twice; a link process that stops reading is killed after the send timeout, the same; kill -9
of the daemon: its link process exits (systemd restarts the daemon as a whole); SIGTERM stops
both; the daemon's events reach MQTT through the link process; the records survive any split
of the byte stream; ``mqtt_process = false`` still serves taps in-process; both serve taps
over TLS.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
import pytest

from conftest import wait_until
from daemon_support import (CARD, KEY_A, DaemonProcess, InProcessDaemon, TapStream, balance,
                            ledger_ok, make_site, tap_count)
from host.site.links import mqtt_pipe
from host.site.links.mqtt_child import Records, record
from protocol import codes
from sim.device import MqttTransport, SimDevice

N_TAPS = 40


def _child(pid: int) -> int:
    """The one child process of ``pid`` (the MQTT link process)."""
    kids: list[int] = []

    def found() -> bool:
        # /proc/PID/task/TID/children lists what that thread started: the reader thread
        # starts a new link process.
        kids[:] = [int(x) for t in Path(f"/proc/{pid}/task").iterdir()
                   for x in (t / "children").read_text().split() if _alive(int(x))]
        return len(kids) == 1
    wait_until(found, what="the daemon's link process")
    return kids[0]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_records_survive_any_split_of_the_stream() -> None:
    recs = [record(b"M", "tapkiosk/v1/k1/up", bytes(range(40)), 12.5),
            record(b"U", ""), record(b"D", "cannot connect: refused"),
            record(b"P", "tapkiosk/v1/k1/down", b"\x00" * 300)]
    stream = b"".join(recs)
    for cut in range(1, len(stream)):
        r = Records()
        got = r.feed(stream[:cut]) + r.feed(stream[cut:])
        assert [(k, t) for k, _, t, _ in got] == [
            (b"M", "tapkiosk/v1/k1/up"), (b"U", ""), (b"D", "cannot connect: refused"),
            (b"P", "tapkiosk/v1/k1/down")]
        assert got[0][1] == 12.5 and got[0][3] == bytes(range(40))
        assert got[3][3] == b"\x00" * 300


def test_link_process_killed_mid_stream_is_restarted_nothing_lost(tmp_path: Path,
                                                                  broker) -> None:
    path = tmp_path / "site.db"
    ids = make_site(path)
    d = DaemonProcess(["--db", str(path), "--mqtt", broker.address], tmp_path / "d.log")
    dev = SimDevice("kiosk-1", KEY_A, "kiosk", MqttTransport(broker.host, broker.port))
    stream = TapStream(dev, N_TAPS, attempts=80).start()
    try:
        first = _child(d.proc.pid)
        wait_until(lambda: len(stream.results) >= 10, 20, what="ten decisions")
        os.kill(first, 9)                              # SIGKILL the link process mid-stream
        stream.join(60)
        second = _child(d.proc.pid)
        assert second != first and d.proc.poll() is None
        assert "link process exited" in d.log()
        assert d.terminate() == 0
        wait_until(lambda: not _alive(second), what="the link process stopped with the daemon")
    finally:
        dev.close()
        d.close()
    stream.assert_applied_once(path, ids["m1"], "kiosk-1")


def test_link_process_that_stops_reading_is_killed_restarted_nothing_lost(
        tmp_path: Path, broker, monkeypatch) -> None:  # noqa: ANN001
    """A link process that stops reading (SIGSTOP) while taps are in flight: a send to it
    blocks at most ``SEND_TIMEOUT_S``, then the child is killed and another started; every
    tap is still answered and applied once. (The thread that leads a batch sends its
    DECISIONs itself, so a wedged child must never hold it for longer than that.)"""
    monkeypatch.setattr(mqtt_pipe, "SEND_TIMEOUT_S", 1.0)
    path = tmp_path / "site.db"
    ids = make_site(path)
    d = InProcessDaemon(["--db", str(path), "--mqtt", broker.address])
    link = d.daemon.links[0]
    dev = SimDevice("kiosk-1", KEY_A, "kiosk", MqttTransport(broker.host, broker.port))
    try:
        wait_until(link.connected.is_set, what="daemon subscribed")
        stream = TapStream(dev, N_TAPS, attempts=80).start()
        wait_until(lambda: len(stream.results) >= 10, 20, what="ten decisions")
        first = link.child.pid
        os.kill(first, signal.SIGSTOP)                 # the link process stops reading
        t0 = time.monotonic()
        with pytest.raises(ConnectionError):           # more than the socket buffers hold
            for _ in range(200):
                link.publish_many([("tapkiosk/v1/test/fill", b"x" * 65536)])
        assert time.monotonic() - t0 < 10              # bounded by the send timeout
        wait_until(lambda: link.restarts >= 1 and link.child.pid != first, 20,
                   what="a new link process")
        stream.join(60)
    finally:
        dev.close()
        d.stop()
    assert not _alive(first)
    stream.assert_applied_once(path, ids["m1"], "kiosk-1")


def test_daemon_killed_its_link_process_exits(tmp_path: Path, broker) -> None:
    path = tmp_path / "site.db"
    make_site(path)
    d = DaemonProcess(["--db", str(path), "--mqtt", broker.address], tmp_path / "d.log")
    try:
        child = _child(d.proc.pid)
        assert _alive(child)
        d.kill()                                       # SIGKILL the daemon
        wait_until(lambda: not _alive(child), what="the orphaned link process exited")
    finally:
        d.close()


def _events(broker, got: list[tuple[str, dict]]) -> mqtt.Client:
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-events")
    ready = threading.Event()
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("tapkiosk/v1/events/#", qos=1)
    sub.on_subscribe = lambda *a: ready.set()
    sub.on_message = lambda c, u, m: got.append((m.topic, json.loads(m.payload)))
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    assert ready.wait(10)
    return sub


def test_both_modes_serve_taps_and_forward_events(tmp_path: Path, broker) -> None:
    for mode in ("on", "off"):
        path = tmp_path / f"site-{mode}.db"
        ids = make_site(path)
        got: list[tuple[str, dict]] = []
        sub = _events(broker, got)
        d = InProcessDaemon(["--db", str(path), "--mqtt", broker.address,
                             "--mqtt-process", mode])
        try:
            link = d.daemon.links[0]
            assert type(link).__name__ == ("MqttPipeLink" if mode == "on" else "MqttLink")
            bus_sub, local = d.daemon.bus.subscribe(), {}
            wait_until(link.connected.is_set, what="daemon subscribed")
            dev = SimDevice("kiosk-1", KEY_A, "kiosk", MqttTransport(broker.host, broker.port))
            dev.hello()
            rs = [dev.tap(CARD, amount_fen=300) for _ in range(3)]
            assert [r["verdict"] for r in rs] == [codes.GRANT] * 3
            assert rs[-1]["balance"] == balance(path, ids["m1"])
            # Lone TAPs on an idle writer: decided by the thread that read them (one may
            # queue behind the daemon's own periodic writes).
            assert 1 <= d.daemon.writer.led <= 3 == d.daemon.writer.taps
            wait_until(lambda: {"tapkiosk/v1/events/tap", "tapkiosk/v1/events/decision"}
                       <= {t for t, _ in got}, what=f"tap and decision events ({mode})")
            decision = next(e for t, e in got if t == "tapkiosk/v1/events/decision")
            assert decision["data"]["verdict"] == "grant"
            # on MQTT the very envelope the bus holds (mode "on": encoded by the link process)

            def drained() -> bool:
                e = bus_sub.get(0.1)
                if e is not None:
                    local[e.id] = json.loads(e.json)
                return {e["kind"] for e in local.values()} >= {"tap", "decision"}

            wait_until(drained, what=f"bus events ({mode})")
            matched = [e for _t, e in got if e["id"] in local]
            assert {e["kind"] for e in matched} >= {"tap", "decision"}
            assert all(e == local[e["id"]] for e in matched)
            dev.close()
        finally:
            d.stop()
            sub.disconnect()
            sub.loop_stop()
        assert tap_count(path, "kiosk-1") == 3 and ledger_ok(path)


def test_both_modes_serve_taps_over_tls(tmp_path: Path, broker, request) -> None:  # noqa: ANN001
    """``mqtt_tls`` with the site's CA, against a broker that speaks only TLS: the daemon's
    paho (in the link process or in-process) connects, and a device's tap over TLS is decided
    and stored once."""
    certs = Path(tempfile.mkdtemp(prefix="tapkiosk-tls-"))
    request.addfinalizer(lambda: shutil.rmtree(certs, ignore_errors=True))
    ca = broker.use_tls(certs)
    for mode in ("on", "off"):
        path = tmp_path / f"site-{mode}.db"
        ids = make_site(path)
        d = InProcessDaemon(["--db", str(path), "--mqtt", broker.address, "--mqtt-tls",
                             "--mqtt-ca", ca, "--mqtt-process", mode])
        try:
            wait_until(d.daemon.links[0].connected.is_set, what=f"daemon subscribed ({mode})")
            dev = SimDevice("kiosk-1", KEY_A, "kiosk",
                            MqttTransport(broker.host, broker.port, ca=ca))
            dev.hello()
            r = dev.tap(CARD, amount_fen=300)
            assert r["verdict"] == codes.GRANT and r["balance"] == balance(path, ids["m1"])
            dev.close()
        finally:
            d.stop()
        assert tap_count(path, "kiosk-1") == 1 and ledger_ok(path)


def test_the_writer_threads_sends_wait_for_its_flush_others_go_at_once() -> None:
    """DECISIONs sent on the writer's thread are buffered until it has answered its batch
    (``Writer.after_job`` calls ``flush``): one write for the batch; a send from any other
    thread (a refusal, a HELLO's WELCOME) is written at once, in order behind them."""
    import socket
    from types import SimpleNamespace

    from host.site.links.mqtt_pipe import MqttPipeLink
    from host.site.metrics import Metrics

    link = MqttPipeLink("127.0.0.1", 1, SimpleNamespace(metrics=Metrics()))  # never started
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    link._sock = ours
    me = threading.get_ident()
    link.defer_on(lambda: threading.get_ident() == me)
    for i in range(3):
        link.send_to("kiosk-1", bytes([i]) * 20)
    try:
        theirs.recv(1 << 16)
        raise AssertionError("the writer thread's sends went out before its flush")
    except BlockingIOError:
        pass
    link.flush()
    got = Records().feed(theirs.recv(1 << 16))
    assert [(k, t, p) for k, _, t, p in got] == [
        (b"P", "tapkiosk/v1/kiosk-1/down", bytes([i]) * 20) for i in range(3)]
    other = threading.Thread(target=link.send_to, args=("kiosk-2", b"welcome"))
    other.start()
    other.join(5)
    theirs.settimeout(5)   # written by the other thread itself, no flush from here
    assert [(t, p) for _, _, t, p in Records().feed(theirs.recv(1 << 16))] == [
        ("tapkiosk/v1/kiosk-2/down", b"welcome")]
    ours.close()
    theirs.close()


def test_the_link_process_encodes_the_events_and_skips_one_it_cannot() -> None:
    import marshal
    from types import SimpleNamespace

    from host.site.links.mqtt_child import Pump
    from host.web.events import event_json

    out: list[tuple[str, bytes]] = []
    pump = Pump.__new__(Pump)   # no sockets: only its event encoding
    pump.client = SimpleNamespace(publish_qos0=lambda t, p: out.append((t, p)))
    tap, late = {"seq": 1, "uid": "04A1"}, {"seq": 1, "verdict": "grant", "text": "Paid 1.00"}
    pump._events("tapkiosk/v1/events", marshal.dumps(
        [(1, "tap", 1.5, tap), (2, "decision", 1.6, {"raw": b"\x01"}), (3, "decision", 1.7, late)]))
    assert out == [("tapkiosk/v1/events/tap", event_json(1, "tap", 1.5, tap).encode()),
                   ("tapkiosk/v1/events/decision", event_json(3, "decision", 1.7, late).encode())]
    assert json.loads(out[1][1]) == {"id": 3, "kind": "decision", "ts": 1.7, "data": late}
