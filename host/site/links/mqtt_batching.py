# Runs on CPython (host): a paho client whose socket reads and writes are batched (the link process).
"""``BatchingClient``: paho's client with its two socket calls batched, for a caller that
runs paho's loop itself (:class:`host.site.links.mqtt_child.Pump`).

paho reads a packet with three ``recv`` calls at least (command byte, each byte of the
remaining length, the rest) and writes each packet with its own ``send``: under load that
is several system calls per PUBLISH and per PUBACK, both ways. Here ``_sock_recv`` serves
paho's small reads from one big ``recv`` (``RECV_CHUNK``), and ``_sock_send`` only appends
to a buffer that ``flush_out()`` writes in one ``send`` at the end of the caller's pass (what
the socket does not take stays buffered, and ``want_write()`` says so). Nothing changes for
paho's accounting: a packet counts as written once it is in the buffer, which is what it
already meant (in the kernel's buffer, not at the broker); a QoS-1 message stays in paho's
in-flight set until its PUBACK, and is sent again after a reconnection.

Use ``buffered()`` after ``loop_read()``: bytes already read stay here, not in the socket,
so ``select`` would not report them.
"""

from __future__ import annotations

import ssl
from typing import Any

import paho.mqtt.client as mqtt

RECV_CHUNK = 1 << 18
_DISCONNECT = 0xE0


class BatchingClient(mqtt.Client):
    """See the module doc."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self._wbuf: list[bytes] = []

    def reset_buffers(self) -> None:
        """Forget what a closed connection left (called before every (re)connection)."""
        self._rbuf, self._rpos, self._wbuf = b"", 0, []

    def buffered(self) -> bool:
        """Bytes read from the broker that paho has not taken yet (here, or decrypted and
        waiting in a TLS socket, which ``select`` does not see either)."""
        if self._rpos < len(self._rbuf):
            return True
        pending = getattr(self._sock, "pending", None)
        return pending is not None and pending() > 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(RECV_CHUNK)   # BlockingIOError: nothing to read
            if not data:
                return data
            self._rbuf, self._rpos = data, 0
        pos = self._rpos
        end = min(len(self._rbuf), pos + bufsize)
        self._rpos = end
        return self._rbuf[pos:end]

    def _sock_send(self, buf: bytes | bytearray) -> int:
        if self._sock is None:
            raise ConnectionError("self._sock is None")
        self._wbuf.append(bytes(buf))
        if buf[0] & 0xF0 == _DISCONNECT:   # paho closes the socket right after it
            self.flush_out()
        return len(buf)

    def publish_qos0(self, topic: str, payload: bytes) -> None:
        """A QoS-0 PUBLISH appended to the write buffer as it is: nothing to acknowledge or
        send again, so none of ``publish``'s bookkeeping (the daemon's events, two a tap).
        Dropped while not connected, as ``publish`` drops it. paho never leaves half a
        packet here (``_sock_send`` takes all it is given), so this lands between two."""
        if self._sock is None or not self.is_connected():
            return
        t = topic.encode("utf-8")
        n = 2 + len(t) + len(payload)
        size = bytearray()
        while True:                       # MQTT's variable-length remaining length
            b, n = n & 0x7F, n >> 7
            size.append(b | 0x80 if n else b)
            if not n:
                break
        self._wbuf.append(b"\x30" + bytes(size) + len(t).to_bytes(2, "big") + t + payload)

    def want_write(self) -> bool:
        return bool(self._wbuf) or super().want_write()

    def flush_out(self) -> None:
        """Write what paho queued in one ``send``; the rest waits for the socket to take
        it (call again when ``select`` says it is writable)."""
        sock = self._sock
        if not self._wbuf or sock is None:
            return
        data = self._wbuf[0] if len(self._wbuf) == 1 else b"".join(self._wbuf)
        try:
            n = sock.send(data)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            n = 0
        except OSError:   # the connection is gone: paho's next read reports it
            self._wbuf = []
            return
        self._wbuf = [data[n:]] if n < len(data) else []
