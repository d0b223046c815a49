# Runs under the MicroPython unix port (tests/test_firmware_units.py; by hand: MICROPYPATH=sim/mpy:firmware:. micropython tests/mpy/outbox_read.py ): a packet read from the outbox keeps its bytes while the next tap is stored.
from outbox import Outbox
from protocol.mac import Mac
from protocol.packet import TapWriter
tw = TapWriter("gate-01", Mac(bytes(range(32))))
ob = Outbox("ob.bin", 4)
ob.add(0x10001, tw.tap(0x10001, b"\x04\xa1\xb2\xc3", 8, 0, 0, 0, 0, 0))
first = bytes(tw.tap(0x10001, b"\x04\xa1\xb2\xc3", 8, 0, 0, 0, 0, 0))
mv = ob.read(ob.find(0x10001))          # what the sender hands to link.send()
ob.add(0x10002, tw.tap(0x10002, b"\x04\xd1\xe2\xf3\xa4\xb5\xc6", 8, 0, 0, 0, 0, 0))
print("INTACT", bytes(mv) == first)
