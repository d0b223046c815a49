# Runs on the ESP32 (and the unix port in tests): opens the outbox ring at boot — checks the file, creates it when missing, reads every slot back.
#
# Boot-time code only: Outbox() imports this module for the one call and drops it from
# sys.modules afterwards, so its functions do not stay on the heap (as config_check.py). The
# file layout is described in outbox.py.
import binascii
import struct

from protocol.compat import const

from outbox import DONE, EMPTY, HDR, HEAD, MAGIC, MAX_DATA, PENDING, SLOT

_VOID = const(0x0B)  # protocol.packet.VOID


def open_ring(self):
    head = bytearray(HEAD)
    ok = False
    try:
        fh = open(self.path, "r+b")
        n = fh.readinto(head)
        ok = n == HEAD and head[:4] == MAGIC and struct.unpack_from(">HH", head, 4) == (self.n, SLOT)
        if ok:
            fh.seek(0, 2)
            ok = fh.tell() == HEAD + self.n * SLOT
        if not ok:
            fh.close()
    except OSError:
        ok = False
    if not ok:
        fh = _create(self)
    self._fh = fh
    _load(self)


def _create(self):
    # A fresh ring, written once in full so no later write grows the file.
    fh = open(self.path, "wb")
    head = bytearray(HEAD)
    head[:4] = MAGIC
    struct.pack_into(">HH", head, 4, self.n, SLOT)
    fh.write(head)
    zero = bytearray(SLOT)
    for _ in range(self.n):
        fh.write(zero)
    fh.close()
    return open(self.path, "r+b")


def _load(self):
    fh = self._fh
    buf = self._buf
    mv = self._mv
    best = -1
    top = 0
    for i in range(self.n):
        fh.seek(HEAD + i * SLOT)
        got = fh.readinto(buf)
        st = EMPTY
        if got == SLOT and buf[0] in (PENDING, DONE):
            ln, gen, crc, seq = struct.unpack_from(">HIII", buf, 2)
            if 10 <= ln <= MAX_DATA and binascii.crc32(mv[HDR:HDR + ln]) & 0xFFFFFFFF == crc \
                    and struct.unpack_from(">I", buf, HDR + 2)[0] == seq:
                st = buf[0]
                self.seq[i] = seq
                self.ref[i] = seq
                self.void[i] = 0
                if buf[HDR + 1] == _VOID:
                    # tap_seq: the body's first field, after ver type seq dev_len dev body_len
                    self.ref[i] = struct.unpack_from(">I", buf, HDR + 9 + buf[HDR + 6])[0]
                    self.void[i] = 1
                if gen >= top:
                    top = gen
                    best = i
        self.state[i] = st
        if st == PENDING:
            self.recovered += 1
    if best >= 0:
        self.head = (best + 1) % self.n
        self.next_gen = top + 1
