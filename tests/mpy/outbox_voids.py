# Runs under the MicroPython unix port (tests/test_firmware_units.py; by hand: MICROPYPATH=sim/mpy:firmware:. micropython tests/mpy/outbox_voids.py ): a full outbox drops TAPs before VOIDs.
from outbox import Outbox
from protocol.mac import Mac
from protocol.packet import TapWriter
tw = TapWriter("wash-01", Mac(bytes(range(32))))
def tap(seq):
    return bytes(tw.tap(seq, b"\x04\xa1\xb2\xc3", 8, 0, 0, 1, 2500, 0))
ob = Outbox("ob.bin", 4)
for n in (1, 2, 3, 4):
    ob.add(n, tap(n))
# Taps 1 and 3 got no answer: their slots now hold VOIDs (seqs 101, 103).
for t in (1, 3):
    ob.replace_void(ob.find(t), 100 + t, tap(100 + t))
lost = []
for n in (5, 6):                      # full ring: must drop TAPs 2 and 4, keep both VOIDs
    lost.append(ob.add(n, tap(n)))
print("LOST", lost)
print("VOIDS", sorted(ob.seq[i] for i in range(ob.n) if ob.state[i] == 1 and ob.void[i]))
for t in (5, 6):
    ob.replace_void(ob.find(t), 100 + t, tap(100 + t))
print("ALLVOID_LOST", ob.add(7, tap(7)))  # only VOIDs left: the oldest (101) goes
