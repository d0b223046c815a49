# Runs under the MicroPython unix port (tests/test_firmware_units.py; by hand: MICROPYPATH=sim/mpy:firmware:. micropython tests/mpy/outbox_ring.py fill|check): the outbox ring on a file: fill it past its size, reopen it, check order and bytes.
import sys
from outbox import Outbox
from protocol.mac import Mac
from protocol.packet import TapWriter
step = sys.argv[1]
tw = TapWriter("gate-01", Mac(bytes(range(32))))
def tap(seq):
    return tw.tap(seq, b"\x04\xa1\xb2\xc3", 8, 0, 0, 0, 0, 0)
ob = Outbox("ob.bin", 8)
if step == "fill":
    for n in range(1, 11):             # 10 taps into 8 slots: seqs 1 and 2 are dropped
        lost = ob.add(0x10000 | n, tap(0x10000 | n))
        if lost:
            print("LOST", lost & 0xFFFF)
    ob.done(0x10005)
    print("DROPPED", ob.dropped)
elif step == "check":
    order = []
    for k in range(ob.n):
        i = ob.order(k)
        if ob.state[i] == 1:
            raw = bytes(ob.read(i))
            ok = raw == bytes(tap(ob.seq[i]))
            order.append("%d%s" % (ob.seq[i] & 0xFFFF, "" if ok else "!"))
    print("PENDING", " ".join(order))
    print("RECOVERED", ob.recovered, "FLOOR", ob.oldest_seq() & 0xFFFF)
    lost = ob.add(0x20001, tap(0x20001))
    print("NEXT", lost & 0xFFFF)
