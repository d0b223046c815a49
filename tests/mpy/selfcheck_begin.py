# Runs under the MicroPython unix port (tests/test_firmware_units.py; by hand: MICROPYPATH=sim/mpy:firmware:. micropython tests/mpy/selfcheck_begin.py ): the self-check tries the reader's begin() 3 times, as the reader task tolerates errors.
import asyncio
import selfcheck
from pn532 import PN532Timeout
class Chip:
    def __init__(self, fails):
        self.fails = fails
        self.calls = 0
    async def begin(self):
        self.calls += 1
        if self.calls <= self.fails:
            raise PN532Timeout("PN532 did not answer in 30 ms")
        return (0x32, 1, 6, 7)
for fails in (0, 2, 3):
    chip = Chip(fails)
    try:
        v, n = asyncio.run(selfcheck._begin(chip, 3))
        print("FAILS", fails, "OK", v[1], v[2], "TRIES", n, "CALLS", chip.calls)
    except PN532Timeout as e:
        print("FAILS", fails, "ERROR", e, "CALLS", chip.calls)
