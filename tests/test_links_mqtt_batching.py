"""The link process's paho client with batched socket calls (host/site/links/mqtt_batching.py),
against a real mosquitto: every message both ways arrives once and in order, every QoS-1
publish is acknowledged (the PUBACKs are read through the buffered reads), and a burst of
publishes leaves in a handful of ``send`` calls instead of one per packet."""

from __future__ import annotations

import select
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from host.site.links.mqtt_batching import BatchingClient
from host.site.links.mqtt_child import new_client

N = 300


class CountingSocket:
    """The client's socket, counting ``send`` calls (everything else passed through)."""

    def __init__(self, sock) -> None:  # noqa: ANN001
        self._sock = sock
        self.sends = 0

    def send(self, data: bytes) -> int:
        self.sends += 1
        return self._sock.send(data)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._sock, name)


def _pump(c: BatchingClient, until, timeout: float = 15.0) -> None:  # noqa: ANN001
    """The link process's loop (host/site/links/mqtt_child.Pump.run), until ``until()``."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        sock = c.socket()
        wl = [sock] if c.want_write() else []
        r, _w, _x = select.select([sock], wl, [], 0.05)
        if r:
            c.loop_read()
            while c.buffered() and c.socket() is not None:
                c.loop_read()
        c.loop_write()
        c.loop_misc()
        c.flush_out()


def _plain(cid: str, broker, topics: list[str], got: list[bytes],  # noqa: ANN001
           ca: str | None = None) -> mqtt.Client:
    p = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid)
    if ca is not None:
        p.tls_set(ca_certs=ca)
    ready = threading.Event()
    p.on_subscribe = lambda *a: ready.set()
    p.on_message = lambda cl, ud, msg: got.append(msg.payload)
    p.connect(broker.host, broker.port)
    p.loop_start()
    if topics:
        p.subscribe([(t, 1) for t in topics])
        assert ready.wait(10)
    return p


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_batched_client_sends_and_receives_every_message_in_order(broker, request,  # noqa: ANN001
                                                                   tls: bool) -> None:
    certs = Path(tempfile.mkdtemp(prefix="tapkiosk-tls-"))
    request.addfinalizer(lambda: shutil.rmtree(certs, ignore_errors=True))
    ca = broker.use_tls(certs) if tls else None
    c = new_client("batching-test", None, None, tls, ca, BatchingClient)
    subscribed: list[int] = []
    c.on_subscribe = lambda cl, ud, mid, rc, props=None: subscribed.append(mid)
    received: list[bytes] = []
    c.on_message = lambda cl, ud, msg: received.append(msg.payload)
    c.reset_buffers()
    c.connect(broker.host, broker.port)
    counting = CountingSocket(c._sock)
    c._sock = counting
    c.subscribe([("t/in", 1)])
    _pump(c, lambda: bool(subscribed))

    down: list[bytes] = []
    other = _plain("batching-other", broker, ["t/out"], down, ca)
    try:
        # daemon -> broker: a burst of QoS-1 publishes, as DECISIONs leave under load
        before = counting.sends
        infos = [c.publish("t/out", b"%d" % i, qos=1) for i in range(N)]
        _pump(c, lambda: len(down) == N and not c._out_messages)
        assert down == [b"%d" % i for i in range(N)]
        assert all(i.is_published() for i in infos)   # PUBACKs read back
        assert counting.sends - before < N // 10, counting.sends - before

        # daemon -> broker: QoS-0 events written raw, among QoS-1 publishes
        down.clear()
        for i in range(N):
            c.publish_qos0("t/out", b"e%d" % i)
            if i % 50 == 0:
                c.publish("t/out", b"q%d" % i, qos=1)
        _pump(c, lambda: len(down) == N + N // 50 and not c._out_messages)
        assert [x for x in down if x.startswith(b"e")] == [b"e%d" % i for i in range(N)]
        assert [x for x in down if x.startswith(b"q")] == [b"q%d" % i for i in range(0, N, 50)]
        big = bytes(range(256)) * 3   # a remaining length of two bytes
        c.publish_qos0("t/out", big)
        _pump(c, lambda: down[-1:] == [big])

        # broker -> daemon: a burst of QoS-1 messages, as TAPs arrive
        for i in range(N):
            other.publish("t/in", b"%d" % i, qos=1)
        _pump(c, lambda: len(received) == N)
        time.sleep(0.2)
        _pump(c, lambda: True)
        assert received == [b"%d" % i for i in range(N)]
        c.disconnect()
        c.flush_out()
        c.publish_qos0("t/out", b"after")   # not connected: dropped, as paho drops it
        assert not c.want_write()
    finally:
        other.loop_stop()
        other.disconnect()
        c.disconnect()
        c.flush_out()
