# Runs on CPython (host): serial link — COBS frames over a tty, pty, socket:// or rfc2217:// port.
"""Serial link.

One thread per port opens it with pyserial's ``serial_for_url`` (so a tty path, a pty,
``socket://host:port`` and ``rfc2217://host:port`` all work), feeds the bytes to a
``protocol.framing.FrameParser`` and hands whole packets to the service. A line serves one
device: the id of the first authenticated frame binds the line, and frames naming another
device are refused. When the port goes away the link marks the device offline and reopens
the port with a capped backoff until the daemon stops.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import serial

from host.site.service import Service
from protocol import framing

log = logging.getLogger("tapkiosk.serial")

_READ_TIMEOUT_S = 0.05
_WRITE_TIMEOUT_S = 2.0
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0


def _nodelay(port: Any) -> None:
    """TCP_NODELAY on the socket behind a socket:// or rfc2217:// port (no-op for a tty)."""
    sock = getattr(port, "_socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


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
        self._wlock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"serial {url}", daemon=True)
        self.name = f"serial:{url}"

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

    def send(self, packet: bytes) -> None:
        """Write one packet as a COBS frame (raises OSError when the port is gone)."""
        frame = framing.encode(packet)
        with self._wlock:
            port = self._port
            if port is None:
                raise OSError(f"{self.url} is not open")
            port.write(frame)

    def _open(self) -> Any:
        port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=_READ_TIMEOUT_S,
                                     write_timeout=_WRITE_TIMEOUT_S)
        _nodelay(port)
        return port

    def _run(self) -> None:
        backoff = _BACKOFF_MIN_S
        while not self._stop.is_set():
            try:
                port = self._open()
            except (serial.SerialException, OSError, ValueError) as e:
                log.debug("serial %s: cannot open: %s", self.url, e)
                self._stop.wait(backoff)
                backoff = min(_BACKOFF_MAX_S, backoff * 2)
                continue
            with self._wlock:
                self._port = port
            self.parser = framing.FrameParser()
            log.info("serial %s: open", self.url)
            self.opened.set()
            backoff = _BACKOFF_MIN_S
            try:
                self._serve(port)
            except (serial.SerialException, OSError) as e:
                if not self._stop.is_set():
                    log.warning("serial %s: lost: %s", self.url, e)
            finally:
                with self._wlock:
                    self._port = None
                try:
                    port.close()
                except Exception:  # noqa: BLE001 - closing a port that already failed
                    pass
                self.opened.clear()
                self.service.link_down(self.device_id)
            self._stop.wait(backoff)

    def _serve(self, port: Any) -> None:
        dropped = 0
        while not self._stop.is_set():
            n = port.in_waiting
            data = port.read(n if n > 0 else 1)
            if not data:
                if getattr(port, "_socket", None) is not None and not port.is_open:
                    raise OSError("port closed")
                continue
            for pkt in self.parser.feed(data):
                dev = self.service.handle(pkt, self.send, link=self.name, expect=self.device_id)
                if dev is not None and self.device_id is None:
                    self.device_id = dev
                    log.info("serial %s: serves device %s", self.url, dev)
            if self.parser.dropped != dropped:
                for _ in range(self.parser.dropped - dropped):
                    self.service.metrics.rejected.labels("bad_frame").inc()
                log.warning("serial %s: dropped %d damaged frame(s): %s", self.url,
                            self.parser.dropped - dropped, self.parser.last_error)
                dropped = self.parser.dropped
