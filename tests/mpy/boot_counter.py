# Runs under the MicroPython unix port (tests/test_firmware_units.py; by hand: MICROPYPATH=sim/mpy:firmware:. micropython tests/mpy/boot_counter.py ): the boot counter survives a power cut mid-write.
import os, struct
import config as C
def files():
    return sorted(n for n in os.listdir() if n.startswith("boot.dat"))
print("FIRST", C.next_boot(), C.next_boot(), files())
# Power cut after the new number was written, before it replaced boot.dat (which a torn
# in-place write would also leave empty): the count goes on from the newer copy.
with open("boot.dat", "wb") as fh:
    pass
with open("boot.dat.tmp", "wb") as fh:
    fh.write(struct.pack(">H", 7))
print("TORN", C.next_boot(), files())
# Power cut while the temporary file was being written: the old boot.dat counts.
with open("boot.dat.tmp", "wb") as fh:
    fh.write(b"\x00")
print("PARTIAL", C.next_boot(), files())
# Epochs: the count belongs to a key. A new key (device replace, provisioned again) starts at 1;
# the same key goes on; at BOOT_MAX the counter never wraps: 0, and nothing is written.
import os
for n in ("boot.dat", "boot.dat.tmp"):
    try:
        os.remove(n)
    except OSError:
        pass
A = bytes(range(32))
B = bytes(range(1, 33))
print("EPOCH", C.next_boot(key=A), C.next_boot(key=A), C.next_boot(key=B), C.next_boot(key=B), C.next_boot(key=A))
with open("boot.dat", "rb") as fh:
    raw = fh.read()
with open("boot.dat", "wb") as fh:
    fh.write(struct.pack(">H", 0xFFFE) + raw[2:])
print("LAST", C.next_boot(key=A), C.next_boot(key=A), C.next_boot(key=A), files())
with open("boot.dat", "rb") as fh:
    print("KEPT", struct.unpack(">H", fh.read(2))[0])
