# Runs under the MicroPython unix port (tests/test_sun_firmware.py): firmware/sun.py against a chip that replays a card's answers.
# argv[1]: the card's answers to sun.read_sun's APDUs, hex, comma-separated. Prints the SUN field, hex.
import asyncio
import sys
from binascii import hexlify, unhexlify

import sun

A = [unhexlify(a) for a in sys.argv[1].split(",")]


class Chip:
    def __init__(self):
        self.i = 0

    async def exchange(self, data, timeout_ms=500):
        self.i += 1
        return A[self.i - 1]


r = asyncio.run(sun.read_sun(Chip(), b"", 0x20, b""))
print(hexlify(bytes(r)).decode())
