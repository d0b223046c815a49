# Runs on CPython (host): COBS frames off a serial line, protocol.framing.FrameParser's results with bytes methods.
"""``FrameParser``: what :class:`protocol.framing.FrameParser` yields and counts (the same
packets, ``frames``, ``dropped`` and ``last_error`` text for any bytes fed in any pieces),
for the daemon's serial link. That one is written for both interpreters and looks at every
byte in Python, twice (the delimiter scan on each piece, then the COBS decode when a frame
ends); this one finds the delimiter with ``bytes.find`` and copies each COBS block with one
slice, so a frame's end costs a few block copies and a CRC instead of a loop over its bytes
on the reader's thread (tests/test_cobs_frames.py compares both on random streams).
"""

from __future__ import annotations

import binascii

from protocol.errors import FrameError
from protocol.framing import MAX_FRAME, MAX_RAW


def _decode(src: bytearray) -> bytearray:
    """COBS-decode one frame (no 0x00 in it); protocol.cobs.decode_into's errors."""
    out = bytearray()
    i, n = 0, len(src)
    while i < n:
        code = src[i]
        end = i + code
        if end > n:
            raise FrameError("cobs: truncated block")
        out += src[i + 1:end]
        if len(out) > MAX_RAW:
            raise FrameError("cobs: frame too large")
        i = end
        if code != 0xFF and i < n:
            if len(out) >= MAX_RAW:
                raise FrameError("cobs: frame too large")
            out.append(0)
    return out


class FrameParser:
    """Incremental decoder; see the module doc. ``feed(data)`` returns the whole packets it
    completed, CRC-checked, as bytes; damaged frames are dropped and counted, never raised."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False
        self.frames = 0     # good frames yielded
        self.dropped = 0    # damaged frames dropped
        self.last_error: FrameError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        start = 0
        while True:
            end = data.find(0, start)
            if end < 0:
                self._add(data, start, len(data))
                return out
            self._add(data, start, end)
            if self._overflow:
                self._drop(FrameError("frame exceeds %d bytes" % MAX_FRAME))
            elif self._buf:
                pkt = self._finish()
                if pkt is not None:
                    out.append(pkt)
            self._buf = bytearray()
            self._overflow = False
            start = end + 1

    def _add(self, data: bytes, start: int, end: int) -> None:
        if self._overflow or start == end:
            return
        room = MAX_FRAME - len(self._buf)
        if end - start > room:
            self._overflow = True
            return
        self._buf += data[start:end]

    def _drop(self, err: FrameError) -> None:
        self.dropped += 1
        self.last_error = err

    def _finish(self) -> bytes | None:
        try:
            raw = _decode(self._buf)
        except FrameError as e:
            self._drop(e)
            return None
        n = len(raw)
        if n < 5:
            self._drop(FrameError("frame of %d bytes is too short" % n))
            return None
        pkt = bytes(raw[:n - 4])
        if binascii.crc32(pkt) & 0xFFFFFFFF != int.from_bytes(raw[n - 4:], "big"):
            self._drop(FrameError("bad CRC"))
            return None
        self.frames += 1
        return pkt
