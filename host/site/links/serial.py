# Runs on CPython (host): serial link — COBS frames over a tty, pty, socket:// or rfc2217:// port.
"""Serial link.

One thread per port opens it with pyserial's ``serial_for_url`` (so a tty path, a pty,
``socket://host:port`` and ``rfc2217://host:port`` all work), feeds the bytes to a
``protocol.framing.FrameParser`` and hands whole packets to the service. A line serves one
device: the id of the first authenticated frame binds the line, and frames naming another
device are refused. When the port goes away the link marks the device offline and reopens
the port with a capped backoff until the daemon stops.

A reply is written at once by the thread that sends it (the one that decided the tap, right
after the COMMIT: this link's reader when the writer was idle) when nothing is queued before
it and the line takes the whole frame without waiting (a socket:// port, or a tty/pty, which
pyserial opens non-blocking): no hand-off to another thread. Otherwise, and for the rest of
a frame the line took only in part, it goes through a :class:`host.site.replies.SendQueue`
of this link's own: a peer that stops reading blocks only this line (each write waits at
most ``_WRITE_TIMEOUT_S``), never the daemon's writer, its reply thread or another device.
The link's state changes (open, cannot open, lost) are logged at WARNING with the cause,
once per change, and exported as ``tapkiosk_link_up{link}``; damaged frames are counted per
frame and logged at most once per ``_GARBAGE_LOG_S`` per line.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import serial

from host.site.ratelog import RateLimitedLog
from host.site.replies import SendQueue
from host.site.service import Service
from protocol import framing

log = logging.getLogger("tapkiosk.serial")

_READ_TIMEOUT_S = 0.05
_WRITE_TIMEOUT_S = 2.0
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0
_GARBAGE_LOG_S = 10.0


def _nodelay(port: Any) -> None:
    """TCP_NODELAY on the socket behind a socket:// or rfc2217:// port (no-op for a tty)."""
    sock = getattr(port, "_socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _low_latency(port: Any) -> bool:
    """ASYNC_LOW_LATENCY on a Linux tty: a USB bridge's driver (FTDI) then hands received bytes
    on within 1 ms instead of after its latency timer (16 ms by default). False where the port
    cannot do it (a pty, socket://, a bridge whose driver has no such flag)."""
    set_mode = getattr(port, "set_low_latency_mode", None)
    if set_mode is None:
        return False
    try:
        set_mode(True)
    except (ValueError, NotImplementedError, OSError):
        return False
    return True


def _direct_read(port: Any) -> Callable[[], bytes] | None:
    """A read of ``port`` that costs one wait and one read per wake-up: what arrived (b""
    after ``_READ_TIMEOUT_S`` without bytes, or when the read was cancelled). For a socket://
    port and a tty/pty; None for other port types (rfc2217://, loop://, spy://), read by
    pyserial.
    (pyserial's own read of a socket:// port polls twice and reads one byte, then the rest;
    of a tty, asks how much is waiting, polls, reads: 3-4 system calls and its Python on
    every 0.2-1 ms piece of a frame.) Raises SerialException when the peer is gone."""
    if type(port).__module__.endswith(".protocol_socket"):
        fd, recv = port._socket.fileno(), port._socket.recv
        abort = None
    else:   # a tty or pty as pyserial's posix port opens it (not spy:// and such wrappers)
        if type(port).__module__ != "serial.serialposix":
            return None
        fd, abort = getattr(port, "fd", None), getattr(port, "pipe_abort_read_r", None)
        if not isinstance(fd, int) or fd < 0 or not isinstance(abort, int) or os.get_blocking(fd):
            return None
        recv = partial(os.read, fd)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if abort is not None:
        poller.register(abort, select.POLLIN)   # port.cancel_read() (stop) writes to it
    wait_ms = int(_READ_TIMEOUT_S * 1000)

    def read() -> bytes:
        ready = poller.poll(wait_ms)
        if not ready:
            return b""
        if abort is not None and any(f == abort for f, _ in ready):
            os.read(abort, 1000)
            return b""
        try:
            data = recv(4096)
        except (BlockingIOError, InterruptedError):
            return b""
        if not data:   # ready yet nothing: the peer closed (a socket) or the device went away
            raise serial.SerialException("port reports data but returned none (disconnected)")
        return data
    return read


def _nonblocking_write(port: Any) -> Callable[[bytes], int] | None:
    """A write to ``port`` that never waits: it returns how many bytes the line took (0 when
    its buffer is full). For a socket:// port and a tty/pty (pyserial opens it O_NONBLOCK);
    None for other port types (rfc2217://, loop://), whose replies all go through the queue."""
    if type(port).__module__.endswith(".protocol_socket"):
        sock = port._socket

        def to_socket(data: bytes) -> int:
            try:
                return sock.send(data, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return 0
        return to_socket
    fd = getattr(port, "fd", None)
    if not isinstance(fd, int) or fd < 0 or os.get_blocking(fd):
        return None

    def to_fd(data: bytes) -> int:
        try:
            return os.write(fd, data)
        except (BlockingIOError, InterruptedError):
            return 0
    return to_fd


class SerialLink:
    """Serves the device on one serial port; see the module doc."""

    def __init__(self, url: str, service: Service, *, baudrate: int = 115200) -> None:
        self.url = url
        self.service = service
        self.baudrate = baudrate
        self.device_id: str | None = None
        self.parser = framing.FrameParser()
        self.opened = threading.Event()
        self._port: Any = None
        self._now: Callable[[bytes], int] | None = None   # the port's non-blocking write
        self._wlock = threading.Lock()   # held for every write: frames never interleave
        self._count = threading.Lock()
        self._queued = 0   # frames (or rests of one) queued and not yet written
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"serial {url}", daemon=True)
        self.name = f"serial:{url}"
        self.out = SendQueue(self.name, self._write_queued, service.metrics)
        self._up = service.metrics.link_up.labels(self.name)
        self._up.set(0)
        self._garbage_log = RateLimitedLog(log, _GARBAGE_LOG_S)
        self._down_cause: str | None = None

    def start(self) -> "SerialLink":
        """Start the link thread; returns self."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading, close the port and join the thread."""
        self._stop.set()
        port = self._port
        if port is not None:
            try:
                port.cancel_read()
            except Exception:  # noqa: BLE001 - not every port type can cancel
                pass
        self._thread.join(timeout)
        self.out.close(timeout)

    def send(self, packet: bytes) -> None:
        """Write one packet as a COBS frame: now when nothing is queued before it and the line
        takes it without waiting, else (or what the line did not take) through the queue.
        Never blocks; dropped (and counted) when the queue is full or the port is gone."""
        frame = framing.encode(packet)
        if not self._wlock.acquire(blocking=False):   # a queued frame is being written
            self._enqueue(frame)
            return
        try:
            with self._count:
                idle = self._queued == 0
            if idle and self._now is not None:
                frame = frame[self._take(frame):]
            if frame:
                self._enqueue(frame)   # under the lock: a rest goes out before any later frame
        finally:
            self._wlock.release()

    def _take(self, frame: bytes) -> int:
        """How much of ``frame`` the line took at once (all of it when the port failed: the
        frame is dropped, the device resends)."""
        try:
            return self._now(frame)
        except OSError as e:
            self.service.metrics.link_dropped.labels(self.name).inc()
            log.debug("serial %s: frame not sent: %s", self.url, e)
            return len(frame)

    def _enqueue(self, frame: bytes) -> None:
        with self._count:
            self._queued += 1
        if not self.out.put(frame):
            with self._count:
                self._queued -= 1

    def _write_queued(self, frame: bytes) -> None:
        """The send queue's write: ``frame`` now, waiting at most the write timeout (raises
        OSError when the port is gone)."""
        try:
            with self._wlock:
                port = self._port
                if port is None:
                    raise OSError(f"{self.url} is not open")
                port.write(frame)
        finally:
            with self._count:
                self._queued -= 1

    def _open(self) -> Any:
        port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=_READ_TIMEOUT_S,
                                     write_timeout=_WRITE_TIMEOUT_S)
        _nodelay(port)
        if _low_latency(port):
            log.info("serial %s: low-latency mode", self.url)
        return port

    def _run(self) -> None:
        backoff = _BACKOFF_MIN_S
        while not self._stop.is_set():
            try:
                port = self._open()
            except (serial.SerialException, OSError, ValueError) as e:
                self._down(f"cannot open: {e}")
                self._stop.wait(backoff)
                backoff = min(_BACKOFF_MAX_S, backoff * 2)
                continue
            with self._wlock:
                self._port = port
                self._now = _nonblocking_write(port)
            self.parser = framing.FrameParser()
            log.log(logging.WARNING if self._down_cause else logging.INFO, "serial %s: open",
                    self.url)
            self._down_cause = None
            self._up.set(1)
            self.opened.set()
            backoff = _BACKOFF_MIN_S
            try:
                self._serve(port)
            except (serial.SerialException, OSError) as e:
                if not self._stop.is_set():
                    self._down(f"lost: {e}")
            finally:
                self._up.set(0)
                with self._wlock:
                    self._port = None
                    self._now = None
                try:
                    port.close()
                except Exception:  # noqa: BLE001 - closing a port that already failed
                    pass
                self.opened.clear()
                self.service.link_down(self.device_id)
            self._stop.wait(backoff)

    def _down(self, cause: str) -> None:
        """Log a state change to down (once per cause, at WARNING)."""
        if cause != self._down_cause:
            self._down_cause = cause
            log.warning("serial %s: link down: %s", self.url, cause)
        self._up.set(0)

    def _serve(self, port: Any) -> None:
        read = _direct_read(port)
        while not self._stop.is_set():
            if read is not None:
                data = read()
            else:
                n = port.in_waiting
                data = port.read(n if n > 0 else 1)
            if data:
                self.feed(data)
            elif read is None and not port.is_open:
                raise OSError("port closed")

    def feed(self, data: bytes) -> None:
        """Hand the whole packets in ``data`` to the service; count and log damaged frames."""
        received = time.perf_counter()
        dropped = self.parser.dropped
        for pkt in self.parser.feed(data):
            dev = self.service.handle(pkt, self.send, link=self.name, expect=self.device_id,
                                      received=received)
            if dev is not None and self.device_id is None:
                self.device_id = dev
                log.info("serial %s: serves device %s", self.url, dev)
        damaged = self.parser.dropped - dropped
        if damaged:
            self.service.metrics.rejected.labels(
                "bad_frame", self.device_id or "unknown").inc(damaged)
            self._garbage_log("garbage", logging.WARNING,
                              "serial %s: dropped %d damaged frame(s): %s", self.url, damaged,
                              self.parser.last_error)
