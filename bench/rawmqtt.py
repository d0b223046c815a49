# Runs on CPython (bench): a minimal MQTT 3.1.1 client on a raw socket, for the throughput bench's load generator.
"""A load generator's MQTT client without paho: one socket, one reader thread, QoS 1.

``RawMqtt(host, port, client_id, on_publish)`` connects (clean session), ``subscribe(topics)``
waits for the SUBACK, ``publish(packet)`` sends a PUBLISH built once by ``publish_packet``.
Each PUBLISH that comes in is handed to ``on_publish(topic, payload)`` on the reader thread,
and everything sent from inside that call (the PUBACK, the next TAP) leaves in one write once
the whole chunk read from the socket has been handled. Only what the bench needs: no
reconnect, no QoS 2, no retained or will messages; the broker's PUBACKs are not tracked.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable


def _field(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


def _packet(first: int, body: bytes) -> bytes:
    size, n = b"", len(body)
    while True:
        n, digit = n >> 7, n & 0x7F
        size += bytes([digit | (0x80 if n else 0)])
        if not n:
            return bytes([first]) + size + body


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    """A QoS-1 PUBLISH."""
    return _packet(0x32, _field(topic.encode()) + packet_id.to_bytes(2, "big") + payload)


class RawMqtt:
    """See the module doc."""

    def __init__(self, host: str, port: int, client_id: str,
                 on_publish: Callable[[str, bytes], None]) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.on_publish = on_publish
        self._lock = threading.Lock()
        self._out: list[bytes] | None = None     # set while the reader handles a chunk
        self.subscribed = threading.Event()
        body = _field(b"MQTT") + bytes([4, 0x02]) + (60).to_bytes(2, "big") + _field(
            client_id.encode())
        self.sock.sendall(_packet(0x10, body))
        ack = self.sock.recv(4)
        if len(ack) != 4 or ack[0] != 0x20 or ack[3] != 0:
            raise ConnectionError(f"CONNACK refused: {ack!r}")
        self.sock.settimeout(None)
        self._thread = threading.Thread(target=self._read, name=f"raw {client_id}",
                                        daemon=True)
        self._thread.start()

    def subscribe(self, topics: list[str], timeout: float = 10.0) -> None:
        body = (1).to_bytes(2, "big") + b"".join(_field(t.encode()) + b"\x01" for t in topics)
        self.send(_packet(0x82, body))
        if not self.subscribed.wait(timeout):
            raise TimeoutError("no SUBACK")

    def send(self, data: bytes) -> None:
        """Send now, or with the chunk being handled when called from ``on_publish``."""
        if self._out is not None and threading.current_thread() is self._thread:
            self._out.append(data)
            return
        with self._lock:
            self.sock.sendall(data)

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            buf += data
            self._out = []
            buf = self._packets(buf)
            out, self._out = self._out, None
            if out:
                try:
                    with self._lock:
                        self.sock.sendall(b"".join(out))
                except OSError:   # closed while a last chunk was handled: the run is over
                    return

    def _packets(self, buf: bytes) -> bytes:
        """Handle every whole packet in ``buf``; return what is left."""
        pos, n = 0, len(buf)
        while n - pos >= 2:
            first, size, mult, i = buf[pos], 0, 1, pos + 1
            while i < n:
                b = buf[i]
                size += (b & 0x7F) * mult
                mult <<= 7
                i += 1
                if not b & 0x80:
                    break
            else:
                break
            end = i + size
            if end > n:
                break
            kind = first >> 4
            if kind == 3:
                tl = struct.unpack_from(">H", buf, i)[0]
                topic = buf[i + 2:i + 2 + tl].decode()
                j = i + 2 + tl
                if (first >> 1) & 3:
                    self._out.append(b"\x40\x02" + buf[j:j + 2])   # PUBACK
                    j += 2
                self.on_publish(topic, buf[j:end])
            elif kind == 9:
                self.subscribed.set()
            pos = end
        return buf[pos:]

    def close(self) -> None:
        try:
            self.sock.sendall(b"\xe0\x00")   # DISCONNECT
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(5)
