# Runs on CPython (host): the MQTT link's child process — paho's network I/O, records over a socketpair.
"""The MQTT link process (``python -m host.site.links.mqtt_child FD``).

The daemon (:class:`host.site.links.mqtt_pipe.MqttPipeLink`) starts it with one end of a
socketpair as ``FD``. Everything paho does runs here, on its own interpreter lock and core:
reading the broker's socket, PUBACKs both ways, reconnecting, publishing DECISIONs and the
daemon's events. The daemon keeps every decision: parse, MAC, replay window, in-flight gate,
the writer; this process holds no state that matters (a frame it lost is resent by the device,
which keeps every TAP until its DECISION came).

Records both ways: ``kind`` (1 byte), ``received`` (f64, ``time.perf_counter()``, the same
monotonic clock in both processes on Linux), topic length (u16), payload length (u32), topic,
payload. Daemon -> child: ``C`` the config (JSON, first record), ``P`` publish QoS 1, ``Q``
publish QoS 0, ``E`` the daemon's bus events (topic: the prefix; payload: a marshalled list of
``(id, kind, ts, data)``), each published QoS 0 on ``<prefix>/<kind>`` with its JSON
(``host.web.events.event_json``) encoded here. Child -> daemon: ``M`` a message, ``U`` subscribed, ``D`` link down (topic =
the cause). The child exits when the daemon's end closes (the daemon died or stopped it).
"""

from __future__ import annotations

import gc
import json
import logging
import marshal
import os
import socket
import ssl
import struct
import sys
import select
import signal
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from host.site.links.mqtt_batching import BatchingClient
from host.web.events import event_json

log = logging.getLogger("tapkiosk.mqtt")

PREFIX = "tapkiosk/v1/"
HEADER = struct.Struct("<cdHI")
RECV_CHUNK = 1 << 18
MAX_DELAY_S = 8.0


def record(kind: bytes, topic: str, payload: bytes = b"", received: float = 0.0) -> bytes:
    """One record (see the module doc)."""
    t = topic.encode("utf-8")
    return HEADER.pack(kind, received, len(t), len(payload)) + t + payload


class Records:
    """Splits a byte stream into records: ``feed(data)`` -> [(kind, received, topic,
    payload)]; a partial record waits for the next ``feed``."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[bytes, float, str, bytes]]:
        buf = self._buf + data if self._buf else data
        out = []
        pos, n, hs = 0, len(buf), HEADER.size
        while n - pos >= hs:
            kind, received, tl, pl = HEADER.unpack_from(buf, pos)
            end = pos + hs + tl + pl
            if end > n:
                break
            t0 = pos + hs
            out.append((kind, received, buf[t0:t0 + tl].decode("utf-8", "replace"),
                        buf[t0 + tl:end]))
            pos = end
        self._buf = buf[pos:]
        return out


def set_nodelay(client: mqtt.Client) -> None:
    """TCP_NODELAY on the client's socket (called from on_connect)."""
    sock = client.socket()
    if sock is not None and hasattr(sock, "setsockopt"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def new_client(client_id: str, username: str | None, password: str | None, tls: bool,
               ca_file: str | None, cls: type[mqtt.Client] = mqtt.Client) -> mqtt.Client:
    """The daemon's paho client (of class ``cls``): persistent session, QoS-1 window 1000,
    no local queue cap."""
    c = cls(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
            protocol=mqtt.MQTTv311)
    if username is not None:
        c.username_pw_set(username, password)
    if tls:
        c.tls_set(ca_certs=ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.reconnect_delay_set(min_delay=1, max_delay=8)
    return c


class Pump:
    """paho on one side, the daemon's socket on the other, in ONE thread: a select loop over
    both sockets (paho's own loop thread would add a thread hand-off to every publish and a
    wake-up byte per message). What paho hands over during one pass is sent to the daemon in
    one write at its end; the DECISIONs one read from the daemon brings are queued in paho and
    written at the end of the pass."""

    def __init__(self, sock: socket.socket, cfg: dict[str, Any]) -> None:
        self.sock = sock
        self._out: list[bytes] = []
        self._sub_mid: int | None = None
        c = new_client(cfg["client_id"], cfg.get("username"), cfg.get("password"),
                       bool(cfg.get("tls")), cfg.get("ca_file"), BatchingClient)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        # Without this paho writes each publish at once; here they go at the end of a pass.
        c.on_socket_register_write = lambda *a: None
        self.client: BatchingClient = c
        self.cfg = cfg
        self._delay = 1.0
        self._next_try = 0.0

    def _put(self, data: bytes) -> None:
        self._out.append(data)

    def _flush(self) -> None:
        if self._out:
            data, self._out = b"".join(self._out), []
            self.sock.sendall(data)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        if rc.is_failure:
            self._put(record(b"D", f"connection refused by the broker: {rc}"))
            return
        self._delay = 1.0
        set_nodelay(client)
        _rc, self._sub_mid = client.subscribe([(PREFIX + "+/up", 1), (PREFIX + "+/status", 1)])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any,
                      props: Any = None) -> None:
        if mid == self._sub_mid:
            self._put(record(b"U", ""))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                       props: Any = None) -> None:
        self._put(record(b"D", f"disconnected ({rc}); reconnecting"))
        self._retry_later()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._out.append(record(b"M", msg.topic, msg.payload, time.perf_counter()))

    def _retry_later(self) -> None:
        self._next_try = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, MAX_DELAY_S)

    def _connect(self) -> None:
        """(Re)connect when it is time; a failure is reported and retried with backoff."""
        if time.monotonic() < self._next_try:
            return
        try:
            self.client.reset_buffers()
            self.client.reconnect()
        except (OSError, ValueError) as e:
            self._put(record(b"D", f"cannot connect: {e}"))
            self._retry_later()

    def _from_daemon(self, records: "Records") -> bool:
        """Queue in paho what the daemon sent; False when the daemon's end closed."""
        data = self.sock.recv(RECV_CHUNK)
        if not data:
            return False
        c = self.client
        for kind, _r, topic, payload in records.feed(data):
            if kind == b"P":
                c.publish(topic, payload, qos=1)
            elif kind == b"E":
                self._events(topic, payload)
            else:
                c.publish_qos0(topic, payload)
        return True

    def _events(self, prefix: str, payload: bytes) -> None:
        """Publish an ``E`` record's events; one that cannot be encoded is logged, skipped."""
        for eid, kind, ts, data in marshal.loads(payload):
            try:
                text = event_json(eid, kind, ts, data)
            except (TypeError, ValueError) as e:
                log.error("event %d (%s) not published: %s", eid, kind, e)
                continue
            self.client.publish_qos0(f"{prefix}/{kind}", text.encode("utf-8"))

    def run(self) -> None:
        """Serve both sockets until the daemon's end closes."""
        c = self.client
        c.connect_async(self.cfg["host"], self.cfg["port"], keepalive=self.cfg.get("keepalive", 30))
        records = Records()
        try:
            while True:
                broker = c.socket()
                if broker is None:
                    self._connect()
                    broker = c.socket()
                rl: list[Any] = [self.sock] if broker is None else [self.sock, broker]
                wl = [broker] if broker is not None and c.want_write() else []
                wait = 1.0 if broker is not None else max(0.0, self._next_try - time.monotonic())
                r, w, _x = select.select(rl, wl, [], min(wait, 1.0))
                if broker is not None and broker in r:
                    c.loop_read()
                    while c.buffered() and c.socket() is not None:
                        c.loop_read()
                if self.sock in r and not self._from_daemon(records):
                    return
                if c.socket() is not None:
                    c.loop_write()
                    c.loop_misc()
                    c.flush_out()
                self._flush()
        finally:
            c.disconnect()
            if c.socket() is not None:
                c.loop_write()
                c.flush_out()


def read_config(sock: socket.socket) -> dict[str, Any]:
    """The first record: the config as JSON."""
    records = Records()
    while True:
        data = sock.recv(RECV_CHUNK)
        if not data:
            raise SystemExit(0)
        got = records.feed(data)
        if got:
            return json.loads(got[0][3])


def main(argv: list[str] | None = None) -> int:
    """Run the link process on the socket ``argv[0]`` (a file descriptor)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Ctrl-C in a terminal reaches the whole process group: the daemon stops, then closes
    # its end, and that is when this process exits (not with a traceback of its own).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[0]))
    cfg = read_config(sock)
    gc.freeze()
    Pump(sock, cfg).run()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BrokenPipeError, ConnectionResetError):
        os._exit(0)
