# Runs on both CPython and MicroPython: serial framing, 0x00 COBS(packet || crc32) 0x00.
# The caller owns the UART or socket: it feeds received bytes in and writes encoded frames out.
import binascii
import struct

from protocol import cobs
from protocol.compat import const
from protocol.errors import FrameError
from protocol.packet import MAX_PACKET

DELIM = const(0)
MAX_RAW = MAX_PACKET + 4                      # packet + crc32
MAX_FRAME = MAX_RAW + MAX_RAW // 254 + 1      # COBS-encoded, without the delimiters
# A frame starts with a delimiter as well as ending with one: noise on an idle line (between
# frames) is then closed off by the next frame's leading 0x00 and costs no frame. The parser
# skips empty frames, so the 00 00 between two back-to-back frames is harmless.


def _check_len(n):
    if n > MAX_PACKET:
        raise FrameError("packet of %d bytes exceeds %d" % (n, MAX_PACKET))


def encode(packet):
    # One frame ready for the wire, both delimiters included.
    n = len(packet)
    _check_len(n)
    raw = bytearray(n + 4)
    raw[:n] = packet
    struct.pack_into(">I", raw, n, binascii.crc32(packet) & 0xFFFFFFFF)
    out = bytearray(cobs.max_encoded_len(n + 4) + 2)
    m = cobs.encode_into(raw, memoryview(out)[1:])
    out[0] = DELIM
    out[m + 1] = DELIM
    return bytes(out[:m + 2])


class FrameWriter:
    # Allocation-free variant for the firmware: encodes into buffers allocated once and returns
    # a memoryview of the frame (valid until the next call).
    def __init__(self):
        self._raw = bytearray(MAX_RAW)
        self._rawv = memoryview(self._raw)
        self._out = bytearray(MAX_FRAME + 2)
        self._mv = memoryview(self._out)
        self._body = self._mv[1:]
        self._out[0] = DELIM

    def encode(self, packet):
        n = len(packet)
        _check_len(n)
        raw = self._raw
        raw[:n] = packet
        struct.pack_into(">I", raw, n, binascii.crc32(packet) & 0xFFFFFFFF)
        m = cobs.encode_into(self._rawv[:n + 4], self._body)
        self._out[m + 1] = DELIM
        return self._mv[:m + 2]


class FrameParser:
    # Incremental decoder. feed() takes any chunk (1 byte or 4 KB) and returns the whole packets
    # it completed, CRC-checked, as bytes. Damaged frames are dropped and counted, never raised:
    # garbage, truncation or a flipped bit costs at most that frame; it resyncs at the next 0x00.
    # Empty frames (00 00, as between two frames) are skipped without counting.
    def __init__(self):
        self._buf = bytearray(MAX_FRAME)
        self._dec = bytearray(MAX_RAW)
        self._n = 0
        self._overflow = False
        self.frames = 0     # good frames yielded
        self.dropped = 0    # damaged frames dropped
        self.last_error = None

    def feed(self, data):
        out = []
        buf = self._buf
        cap = len(buf)
        for b in data:
            if b == DELIM:
                if self._overflow:
                    self._drop(FrameError("frame exceeds %d bytes" % cap))
                elif self._n:
                    pkt = self._finish()
                    if pkt is not None:
                        out.append(pkt)
                self._n = 0
                self._overflow = False
            elif self._overflow:
                continue
            elif self._n < cap:
                buf[self._n] = b
                self._n += 1
            else:
                self._overflow = True
        return out

    def _drop(self, err):
        self.dropped += 1
        self.last_error = err

    def _finish(self):
        try:
            n = cobs.decode_into(self._buf, self._n, self._dec)
        except FrameError as e:
            self._drop(e)
            return None
        if n < 5:
            self._drop(FrameError("frame of %d bytes is too short" % n))
            return None
        dec = self._dec
        crc = (dec[n - 4] << 24) | (dec[n - 3] << 16) | (dec[n - 2] << 8) | dec[n - 1]
        pkt = bytes(dec[:n - 4])
        if binascii.crc32(pkt) & 0xFFFFFFFF != crc:
            self._drop(FrameError("bad CRC"))
            return None
        self.frames += 1
        return pkt
