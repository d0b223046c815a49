# Runs on CPython (host): the MQTT link with paho in a child process — records over a socketpair.
"""MQTT link whose network side runs in a child process (``mqtt_process``, the default).

paho (reading the broker, PUBACKs, reconnecting, publishing) runs in
:mod:`host.site.links.mqtt_child`, on its own interpreter lock: the daemon's process keeps
the writer, the engine and every check of a frame (parse, MAC, replay window, in-flight
gate), and sees the broker as one socket carrying records. One reader thread takes them in
arrival order and hands them on as :class:`host.site.links.mqtt.MqttInbox` does (a TAP of a
loaded device right there, the rest through the worker), so order per device is kept.

Sends (DECISIONs from the deciding thread after COMMIT, replies, the daemon's events) are
appended to one buffer; the thread that finds nobody writing writes everything buffered
in one ``sendall`` (bounded by ``SEND_TIMEOUT_S``: a child that stopped reading is killed),
so under load one system call carries many frames.

The child dies (kill -9, a crash): the reader sees the socket close, marks the link down and
starts a new child after ``RESTART_S``; frames in the dead child are lost before any
DECISION, so the devices resend them (a decided one gets its stored reply). The daemon dies:
the child sees its socket close and exits; systemd restarts the daemon, whose new child takes
over the persistent session (same client id).
"""

from __future__ import annotations

import json
import logging
import marshal
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from host.site.links.mqtt import MqttInbox
from host.site.links.mqtt_child import PREFIX, RECV_CHUNK, Records, record
from host.site.service import Service

log = logging.getLogger("tapkiosk.mqtt")

SEND_TIMEOUT_S = 5.0
RESTART_S = 1.0
START_WAIT_S = 5.0
_ROOT = Path(__file__).resolve().parents[3]


class MqttPipeLink(MqttInbox):
    """See the module doc; the same constructor as :class:`host.site.links.mqtt.MqttLink`."""

    def __init__(self, host: str, port: int, service: Service, *,
                 client_id: str = "tapkiosk-daemon", username: str | None = None,
                 password: str | None = None, tls: bool = False, ca_file: str | None = None,
                 keepalive: int = 30) -> None:
        super().__init__(service, f"mqtt:{host}:{port}")
        self._cfg = {"host": host, "port": port, "client_id": client_id, "username": username,
                     "password": password, "tls": tls, "ca_file": ca_file,
                     "keepalive": keepalive}
        self._lock = threading.Lock()
        self._buf: list[bytes] = []
        self._writing = False
        self._defer: Callable[[], bool] | None = None
        self._sock: socket.socket | None = None
        self.child: subprocess.Popen | None = None
        self.restarts = 0
        self._tried = threading.Event()
        self._reader = threading.Thread(target=self._read, name="mqtt reader", daemon=True)

    # ------------------------------------------------------------- child process
    def _spawn(self) -> socket.socket:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH"))
                                            if p)
        self.child = subprocess.Popen(
            [sys.executable, "-m", "host.site.links.mqtt_child", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        ours.settimeout(SEND_TIMEOUT_S)
        ours.sendall(record(b"C", "", json.dumps(self._cfg).encode()))
        return ours

    def start(self, wait: float = START_WAIT_S) -> "MqttPipeLink":
        """Start the child, the reader and the worker; return once the child's first
        connection attempt ended (subscribed or down; at most ``wait`` seconds: a new
        process takes longer to reach the broker than a thread, and devices already
        talking should not find nobody subscribed when the daemon says it is ready)."""
        self._sock = self._spawn()
        self._worker.start()
        self._reader.start()
        self._tried.wait(wait)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking messages, finish the queued ones, stop the child."""
        self._stop_worker(timeout)
        self.connected.clear()
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self.child is not None:
            try:
                self.child.wait(timeout)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait(5)
        self._reader.join(timeout)

    # ------------------------------------------------------------- daemon -> child
    def defer_on(self, test: Callable[[], bool] | None) -> None:
        """Sends made while ``test()`` is true (the thread holding the writer) are only
        buffered; that thread calls ``flush()`` once its batch is answered."""
        self._defer = test

    def _put(self, data: bytes) -> None:
        with self._lock:
            self._buf.append(data)
        if self._defer is None or not self._defer():
            self.flush()

    def flush(self) -> None:
        """Write what is buffered, unless another thread is writing (it takes it along);
        then what came meanwhile."""
        with self._lock:
            if self._writing or not self._buf:
                return
            self._writing = True
        try:
            while True:
                with self._lock:
                    if not self._buf:
                        return
                    out, self._buf = b"".join(self._buf), []
                    sock = self._sock
                if sock is None:
                    raise ConnectionError("mqtt link process not running")
                try:
                    sock.sendall(out)
                except OSError as e:   # a wedged child: kill it, the reader starts another
                    self._kill_child(f"cannot write to the link process: {e}")
                    raise ConnectionError(str(e)) from e
        finally:
            with self._lock:
                self._writing = False

    def send_to(self, device_id: str, packet: bytes) -> None:
        """Publish a packet on the device's down topic (QoS 1); never waits on the broker."""
        self._put(record(b"P", PREFIX + device_id + "/down", packet))

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        """Publish on any topic (the daemon's events)."""
        self._put(record(b"P" if qos else b"Q", topic, payload))

    def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish several QoS-0 messages in one write (the daemon's events, batched)."""
        self._put(b"".join(record(b"Q", t, p) for t, p in messages))

    def publish_events(self, prefix: str,
                       events: list[tuple[int, str, float, dict[str, Any]]]) -> bool:
        """Publish bus events (``(id, kind, ts, data)``) QoS 0 on ``<prefix>/<kind>``, their
        JSON encoded by the link process (one ``E`` record, the batch marshalled); False
        (nothing sent) when marshal cannot carry them."""
        try:
            payload = marshal.dumps(events)
        except ValueError:
            return False
        self._put(record(b"E", prefix, payload))
        return True

    def _kill_child(self, why: str) -> None:
        log.error("mqtt %s: %s", self.name, why)
        child = self.child
        if child is not None and child.poll() is None:
            child.kill()

    # ------------------------------------------------------------- child -> daemon
    def _read(self) -> None:
        while not self._stop.is_set():
            sock = self._sock
            if sock is not None:
                self._read_from(sock)
            if self._stop.is_set():
                return
            self._restart()

    def _read_from(self, sock: socket.socket) -> None:
        records = Records()
        deliver = self.deliver
        holding = self.service.writer.holding
        while True:
            try:
                data = sock.recv(RECV_CHUNK)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:
                return
            # The TAPs of one read go to the writer as one batch, decided on this thread
            # when the writer is idle (``Writer.holding``).
            with holding():
                for kind, received, topic, payload in records.feed(data):
                    if kind == b"M":
                        deliver(topic, payload, received)
                    else:
                        self._state(kind, topic)

    def _to_worker(self) -> None:
        # A message queued for the worker comes after the TAPs held before it.
        self.service.writer.release_held()

    def _state(self, kind: bytes, cause: str) -> None:
        self._tried.set()
        if kind == b"U":
            log.log(logging.WARNING if self._down_cause else logging.INFO,
                    "mqtt %s: connected", self.name)
            self._down_cause = None
            self.connected.set()
            self._up.set(1)
        elif kind == b"D":
            self.connected.clear()
            self._down(cause)

    def _restart(self) -> None:
        """The child's end closed: reap it, wait ``RESTART_S``, start another."""
        self.connected.clear()
        child = self.child
        code = child.wait() if child is not None else None
        self._down(f"link process exited (code {code}); restarting it")
        with self._lock:
            old, self._sock = self._sock, None
        if old is not None:
            old.close()
        time.sleep(RESTART_S)
        if self._stop.is_set():
            return
        try:
            sock = self._spawn()
        except OSError as e:
            log.error("mqtt %s: cannot start the link process: %s", self.name, e)
            return
        self.restarts += 1
        with self._lock:
            self._sock = sock
