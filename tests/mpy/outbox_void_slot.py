# Runs under the MicroPython unix port, cwd = a scratch dir (tests/test_firmware_void.py): a VOID replaces its TAP in the same outbox slot (argv: make | check).
import sys
from outbox import Outbox
from protocol import packet as P
from protocol.mac import Mac
mac = Mac(bytes(range(32)))
tw = P.TapWriter("wash-1", mac)
def void(seq, tap_seq):
    return P.encode(P.VOID, seq, "wash-1", {"tap_seq": tap_seq}, mac, P.UP)
ob = Outbox("ob.bin", 4)
if sys.argv[1] == "make":
    for n in (1, 2, 3):
        ob.add(0x10000 | n, tw.tap(0x10000 | n, b"\x04\xa1\xb2\xc3", 8, 0, 0, 1, 0, 0))
    i = ob.find_tap(0x10001)
    ob.replace_void(i, 0x10004, void(0x10004, 0x10001))
    print("SLOT", i, "FLOOR", ob.oldest_seq() & 0xFFFF)
else:
    rows = []
    for k in range(ob.n):
        i = ob.order(k)
        if ob.state[i] == 1:
            same = bytes(ob.read(i)) == bytes(void(ob.seq[i], ob.ref[i]) if ob.is_void(i) else
                tw.tap(ob.seq[i], b"\x04\xa1\xb2\xc3", 8, 0, 0, 1, 0, 0))
            rows.append("%d/%d/%d%s" % (ob.seq[i] & 0xFFFF, ob.ref[i] & 0xFFFF, ob.is_void(i),
                                        "" if same else "!"))
    print("PENDING", " ".join(rows), "FLOOR", ob.oldest_seq() & 0xFFFF,
          "TAP1", ob.find_tap(0x10001), "DONE", ob.done_slot(ob.find_tap(0x10001)),
          "LEFT", ob.pending())
