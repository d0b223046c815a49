# Runs on CPython (pytest): firmware/reader.py with the real driver on a UART wired straight to the emulator.
"""Reader debounce, secure hook and supervision, fast and in-process (no sockets)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "firmware"))

import pn532  # noqa: E402  firmware/pn532.py
import reader  # noqa: E402  firmware/reader.py
from sim.cards import IsoDepCard, UidCard  # noqa: E402
from sim.pn532 import PN532Emulator  # noqa: E402


class EmuUART:
    """machine.UART (timeout=0) whose wire ends in the emulator's HSU."""

    def __init__(self, emu: PN532Emulator):
        self.emu = emu
        self.rx = bytearray()

    def write(self, data):
        self.emu.feed(bytes(data))
        return len(data)

    def _pull(self):
        while (f := self.emu.read_frame()) is not None:
            self.rx += f

    def any(self):
        self._pull()
        return len(self.rx)

    def readinto(self, mv):
        self._pull()
        n = min(len(mv), len(self.rx))
        if not n:
            return None
        mv[:n] = self.rx[:n]
        del self.rx[:n]
        return n


class ResetPin:
    """The RSTPDN line: the driver's level goes to the emulator's pin."""

    def __init__(self, emu: PN532Emulator):
        self.emu = emu
        self.levels: list[int] = []

    def value(self, v=None):
        if v is None:
            return self.levels[-1] if self.levels else 1
        self.levels.append(int(v))
        self.emu.set_rstpdn(int(v))


class Harness:
    def __init__(self, reset_pin=True, **kw):
        self.emu = PN532Emulator()
        self.pin = ResetPin(self.emu) if reset_pin else None
        self.chip = pn532.PN532(pn532.HSUBus(EmuUART(self.emu)), reset_pin=self.pin)
        self.taps: list[tuple] = []
        self.faults: list[tuple] = []
        self.recovered: list[int] = []
        self.reader = reader.Reader(
            self.chip, poll_ms=1, debounce_ms=40, probe_ms=50, max_failures=3,
            on_fault=lambda *a: self.faults.append(a), on_recovered=self.recovered.append, **kw)

    async def polls(self, n: int):
        start = self.emu.commands.count(0x4A)
        for _ in range(5000):
            if self.emu.commands.count(0x4A) >= start + n:
                return
            await asyncio.sleep(0.001)
        raise AssertionError("reader stopped polling")

    async def until(self, cond):
        for _ in range(5000):
            if cond():
                return
            await asyncio.sleep(0.001)
        raise AssertionError("condition never met")


def scenario(h: Harness, body):
    async def main():
        task = asyncio.create_task(h.reader.run(lambda *tap: h.taps.append(tap)))
        try:
            await h.polls(1)
            await body()
        finally:
            h.reader.stop()
            await task

    asyncio.run(main())


def test_held_card_taps_once_and_a_new_card_taps_at_once():
    h = Harness()

    async def body():
        h.emu.place(UidCard(bytes.fromhex("01020304")))
        await h.until(lambda: len(h.taps) == 1)
        await h.polls(20)
        assert len(h.taps) == 1
        h.emu.place(UidCard(bytes.fromhex("05060708")))  # swapped without a gap
        await h.until(lambda: len(h.taps) == 2)

    scenario(h, body)
    assert [t[0].hex() for t in h.taps] == ["01020304", "05060708"]
    assert h.taps[0][1:] == (0x08, 0x0004, None)


def test_short_absence_is_not_a_new_tap_but_a_long_one_is():
    h = Harness()
    card = UidCard(bytes.fromhex("0A0B0C0D"))

    async def body():
        h.emu.place(card)
        await h.until(lambda: len(h.taps) == 1)
        h.emu.remove()
        await h.polls(1)  # away for one poll: well under debounce_ms
        h.emu.place(card)
        await h.polls(10)
        assert len(h.taps) == 1
        h.emu.remove()
        await h.until(lambda: h.reader._last_len == 0)  # debounce_ms elapsed without the card
        h.emu.place(card)
        await h.until(lambda: len(h.taps) == 2)

    scenario(h, body)


def test_secure_hook_result_and_failure():
    async def hook(chip, uid, sak, ats):
        return await chip.exchange(b"\x90\x60\x00\x00\x00")

    h = Harness(secure_hook=hook)

    async def body():
        h.emu.place(IsoDepCard(bytes.fromhex("04112233445566"), apdu_handler=lambda a: b"\x91\x00"))
        await h.until(lambda: len(h.taps) == 1)
        h.emu.place(IsoDepCard(bytes.fromhex("04AABBCCDDEEFF"), apdu_handler=lambda a: None))
        await h.until(lambda: len(h.taps) == 2)

    scenario(h, body)
    assert h.taps[0][3] == b"\x91\x00"
    assert h.taps[1][0].hex() == "04aabbccddeeff" and h.taps[1][3] is None  # card did not answer


def test_hang_resets_through_the_pin_and_recovers():
    h = Harness()

    async def body():
        h.emu.hang()
        await h.until(lambda: h.recovered)

    scenario(h, body)
    assert h.faults[0][:2] == ("timeout", 3)
    assert h.recovered == [1]
    assert h.pin.levels[:3] == [1, 0, 1] and h.emu.resets == 1


def test_without_reset_pin_faults_repeat_until_the_chip_comes_back():
    h = Harness(reset_pin=False)

    async def body():
        h.emu.hang()
        await h.until(lambda: len(h.faults) >= 2)
        assert not h.recovered
        h.emu.reset()  # someone power-cycles the reader
        await h.until(lambda: h.recovered)

    scenario(h, body)
    assert [f[1] for f in h.faults[:2]] == [3, 6]
    assert h.recovered[0] >= 2
