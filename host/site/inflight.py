# Runs on CPython (host): the in-flight gate that TAP and VOID frames pass before the writer.
"""One gate for the frames a device's outbox holds (TAP and VOID).

``enter(st, packet, send)`` decides, under the device's lock, what a frame is:

- ``JOINED``: the very same frame is being decided right now: its ``send`` will get the
  answer too (one answer per copy received);
- ``REUSED``: the seq is being decided with other bytes: a replay;
- ``CACHED``: a retransmission of a decided frame: ``cached`` is the reply to send again;
- ``REFUSED``: the replay window refuses it (``error`` says why); the caller may still find
  it applied in the store (a restart lost the RAM cache);
- ``CLOSED``: the daemon is stopping and takes no new frame;
- ``GO``: new (``late`` when it comes late from the outbox): it is now in flight; the
  caller takes the waiting ``send``s with ``finish`` (decided) or ``fail``, answers them,
  then calls ``done()`` (so ``drain()`` returns only once every answer went out).

``drain()`` waits until nothing is in flight; ``stop_accepting()`` closes the gate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from host.site.registry import DeviceState
from protocol import packet as pk
from protocol.errors import ReplayError
from protocol.replay import LATE, RETRANSMIT

Send = Callable[[bytes], None]

JOINED, REUSED, CACHED, REFUSED, CLOSED, GO = range(6)


@dataclass
class Entry:
    """What ``InflightGate.enter`` decided about a frame."""

    verdict: int
    late: bool = False
    cached: bytes | None = None
    error: ReplayError | None = None


class InflightGate:
    """See the module doc."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._count = 0
        self._accepting = True
        self._waiting: dict[tuple[str, int], tuple[bytes, list[Send]]] = {}

    def enter(self, st: DeviceState, p: pk.Packet, send: Send) -> Entry:
        """Classify the frame and, when new, put it in flight; see the module doc."""
        key = (st.device_id, p.seq)
        with st.lock:
            with self._lock:
                waiting = self._waiting.get(key)
                if waiting is not None:
                    if waiting[0] != p.raw:
                        return Entry(REUSED)
                    waiting[1].append(send)
                    return Entry(JOINED)
            try:
                state, cached = st.window.check(p.seq, p.raw, True)
            except ReplayError as e:
                return Entry(REFUSED, error=e)
            if state == RETRANSMIT:
                return Entry(CACHED, cached=cached)
            with self._lock:
                if not self._accepting:
                    return Entry(CLOSED)
                self._waiting[key] = (p.raw, [send])
                self._count += 1
            return Entry(GO, late=state == LATE)

    def finish(self, st: DeviceState, p: pk.Packet, reply: bytes) -> list[Send]:
        """The frame was decided with ``reply``: remember it in the replay window and return
        every ``send`` waiting for the answer."""
        with st.lock:
            st.window.accept(p.seq, p.raw, reply)
            st.dirty = True
            return self._end((st.device_id, p.seq))

    def fail(self, st: DeviceState, p: pk.Packet) -> list[Send]:
        """The frame was not decided: return every ``send`` waiting for an answer."""
        with st.lock:
            return self._end((st.device_id, p.seq))

    def _end(self, key: tuple[str, int]) -> list[Send]:
        with self._lock:
            _raw, sends = self._waiting.pop(key, (b"", []))
            return sends

    def busy(self, device_id: str) -> bool:
        """True while a TAP or VOID of ``device_id`` is being decided."""
        with self._lock:
            return any(dev == device_id for dev, _seq in self._waiting)

    def done(self, n: int = 1) -> None:
        """A frame (``n`` frames) that went in flight has been answered."""
        with self._lock:
            self._count -= n
            if self._count <= 0:
                self._idle.notify_all()

    def stop_accepting(self) -> None:
        """Take no new frame from now on; those in flight still finish."""
        with self._lock:
            self._accepting = False

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is in flight; True when idle."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._count > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True
