# Runs on the ESP32 (and the unix port in tests): a pending TAP slot of the outbox rewritten as the VOID that gives up on it.
#
# Seldom run (the host did not answer a tap in time): outbox.py imports this module for one
# call and drops it after. The slot layout is outbox.py's.
import binascii
import struct

from outbox import HDR, HEAD, MAX_DATA, PENDING, SLOT, OutboxError


def replace(ob, i, seq, data):
    # Written from `data` directly (the slot header is built in add()'s buffer, free between
    # two synchronous calls), so a send reading the read buffer is untouched.
    ln = len(data)
    if ln > MAX_DATA or ln < 10 or ob.state[i] != PENDING:
        raise OutboxError("cannot void slot %d" % i)
    h = ob._mv[:HDR]
    fh = ob._fh
    fh.seek(HEAD + i * SLOT)
    fh.readinto(h)  # the slot's header: its gen stays
    h[0] = PENDING
    h[1] = 0
    struct.pack_into(">H", h, 2, ln)
    struct.pack_into(">II", h, 8, binascii.crc32(data) & 0xFFFFFFFF, seq)
    fh.seek(HEAD + i * SLOT)
    fh.write(h)
    fh.write(data)
    fh.flush()
    ob.seq[i] = seq
    ob.void[i] = 1
    ob.sent[i] = 0
    ob.refused[i] = 0
