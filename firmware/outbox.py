# Runs on the ESP32 (and the unix port in tests): taps waiting for their DECISION, kept in a ring of fixed slots on flash.
#
# File layout: 16-byte header (b"TKOB", u16 slots, u16 slot size, 8 zero bytes), then `slots`
# slots of SLOT bytes, allocated in full when the file is made. Slot:
#   state u8 (0 empty, 1 pending, 2 done) | pad u8 | len u16 | gen u32 | crc32(data) u32 | seq u32 | data
# A tap costs one slot write when it is made and one 1-byte write when it is decided. The
# stored data is the whole TAP packet (MAC included): a resend is the identical frame, so the
# host recognises it. `gen` grows by one per write; the slot with the highest gen was written
# last, so ring order (oldest first) survives a reboot. A slot whose CRC or seq does not match
# (power cut mid-write) is treated as empty.
#
# VOID (protocol/README.md, "Giving up on a tap"): when the device gives up on a TAP, the VOID
# packet replaces the TAP in the same slot (same gen, so ring order is kept; its own seq). The
# slot remembers the tap_seq in `ref` (a TAP slot's ref is its own seq): a DECISION is matched
# on ref. After a reboot ref is read back from the VOID's body.
import struct
import binascii
from array import array

from protocol.compat import const

MAGIC = b"TKOB"
HEAD = const(16)   # file header
SLOT = const(192)  # slot size
HDR = const(16)    # slot header
MAX_DATA = const(176)  # SLOT - HDR; a TAP packet is at most 162 bytes

EMPTY = const(0)
PENDING = const(1)
DONE = const(2)

_B_DONE = b"\x02"


class OutboxError(Exception):
    def __init__(self, message):
        super().__init__(message)


class Outbox:
    def __init__(self, path, slots=64):
        self.path = path
        self.n = slots
        self.state = bytearray(slots)
        self.seq = array("I", bytes(4 * slots))     # seq of the stored packet
        self.ref = array("I", bytes(4 * slots))     # tap_seq a DECISION for this slot carries
        self.void = bytearray(slots)                # 1 = the slot holds a VOID
        self.sent = bytearray(slots)                 # 1 = sent during this link session
        self._sent_at = array("i", bytes(4 * slots))  # ticks_ms of the last send
        self.refused = bytearray(slots)              # ERROR `replay` answers since written
        self.head = 0       # next slot to write (the oldest one once the ring is full)
        self.next_gen = 1
        self.dropped = 0    # pending taps overwritten because the ring was full (since boot)
        self.recovered = 0  # pending taps found at boot
        self._buf = bytearray(SLOT)    # add() and _load() build/read a whole slot here
        self._mv = memoryview(self._buf)
        # read() has its own buffer: the packet it returns is being sent (an MQTT publish may
        # wait for a free in-flight slot) while a new tap is add()ed through _buf.
        self._rbuf = bytearray(MAX_DATA)
        self._rmv = memoryview(self._rbuf)
        self._fh = None
        self._open()

    def _open(self):
        # Boot-time code (open or create the file, read every slot back) lives in
        # outbox_open.py, imported for this one call and dropped after it: ~0.8 KB less heap.
        import sys
        import outbox_open
        try:
            outbox_open.open_ring(self)
        finally:
            del sys.modules["outbox_open"]

    def close(self):
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def pending(self):
        c = 0
        for i in range(self.n):
            if self.state[i] == PENDING:
                c += 1
        return c

    def add(self, seq, data):
        # Stores one TAP packet. Returns the seq it overwrote (the oldest pending TAP, a VOID
        # only when every slot holds one) or 0.
        ln = len(data)
        if ln > MAX_DATA or ln < 10:
            raise OutboxError("packet of %d bytes does not fit a slot" % ln)
        i = self.head
        if self.state[i] == PENDING and self.void[i]:
            # Full ring: overwrite the oldest pending TAP rather than a VOID. A lost VOID could
            # leave a member charged for a wash that never started; only a ring of nothing but
            # VOIDs gives one up (the oldest).
            for k in range(1, self.n):
                j = (self.head + k) % self.n
                if self.state[j] != PENDING or not self.void[j]:
                    i = j
                    break
        lost = 0
        if self.state[i] == PENDING:
            lost = self.seq[i]
            self.dropped += 1
        buf = self._buf
        buf[0] = PENDING
        buf[1] = 0
        buf[HDR:HDR + ln] = data
        struct.pack_into(">HIII", buf, 2, ln, self.next_gen, binascii.crc32(self._mv[HDR:HDR + ln]) & 0xFFFFFFFF, seq)
        fh = self._fh
        fh.seek(HEAD + i * SLOT)
        fh.write(self._mv[:HDR + ln])
        fh.flush()
        self.state[i] = PENDING
        self.seq[i] = seq
        self.ref[i] = seq
        self.void[i] = 0
        self.sent[i] = 0
        self.refused[i] = 0
        self.next_gen += 1
        self.head = (i + 1) % self.n
        return lost

    def find(self, seq):
        for i in range(self.n):
            if self.state[i] == PENDING and self.seq[i] == seq:
                return i
        return -1

    def find_tap(self, tap_seq):
        # The pending slot (TAP or VOID) a DECISION for tap_seq settles, or -1.
        for i in range(self.n):
            if self.state[i] == PENDING and self.ref[i] == tap_seq:
                return i
        return -1

    def replace_void(self, i, seq, data):
        # Pending TAP slot i becomes the VOID `data` (seq = its own seq): same slot, same gen,
        # ref kept. A give-up is seldom: outbox_void.py, imported for this call, dropped after.
        import sys
        import outbox_void
        try:
            outbox_void.replace(self, i, seq, data)
        finally:
            del sys.modules["outbox_void"]

    def done(self, seq):
        # Marks the pending packet `seq` settled. False if no such pending packet.
        return self.done_slot(self.find(seq))

    def done_slot(self, i):
        if i < 0:
            return False
        fh = self._fh
        fh.seek(HEAD + i * SLOT)
        fh.write(_B_DONE)
        fh.flush()
        self.state[i] = DONE
        return True

    def is_pending(self, i):
        return self.state[i] == PENDING

    def is_void(self, i):
        return self.void[i]

    def seq_of(self, i):
        return self.seq[i]

    def in_flight(self, i):
        # Pending and sent during this link session (so an answer for it may come).
        return self.state[i] == PENDING and self.sent[i]

    def sent_at(self, i):
        return self._sent_at[i]

    def mark_sent(self, i, now):
        self.sent[i] = 1
        self._sent_at[i] = now

    def mark_unsent(self, i):
        self.sent[i] = 0

    def refuse(self, i):
        # One more ERROR `replay` for slot i; returns how many it has had since it was written.
        if self.refused[i] < 255:
            self.refused[i] += 1
        return self.refused[i]

    def order(self, k):
        # k-th slot in ring order, oldest first (k = 0 .. n-1).
        return (self.head + k) % self.n

    def oldest_seq(self):
        # Lowest pending seq (the HELLO's resend_floor). Not simply the oldest slot: a VOID
        # keeps its TAP's place in the ring but carries a newer seq.
        low = 0
        for i in range(self.n):
            if self.state[i] == PENDING and (not low or self.seq[i] < low):
                low = self.seq[i]
        return low

    def read(self, i):
        # The stored packet of slot i, as a memoryview into the read buffer: valid until the
        # next read() (add() and replace_void() never touch it).
        fh = self._fh
        fh.seek(HEAD + i * SLOT + 2)
        fh.readinto(self._rmv[:2])
        ln = struct.unpack_from(">H", self._rbuf, 0)[0]
        if ln > MAX_DATA:
            ln = MAX_DATA
        fh.seek(HEAD + i * SLOT + HDR)
        fh.readinto(self._rmv[:ln])
        return self._rmv[:ln]

    def new_session(self):
        # After a (re)connect every pending tap goes out again, oldest first.
        for i in range(self.n):
            self.sent[i] = 0
