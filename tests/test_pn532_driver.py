# Runs on CPython (pytest): firmware/pn532.py byte for byte against duck-typed fake buses.
"""Driver unit tests: the fakes stand where machine.UART / I2C / SPI / Pin are on the board."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "firmware"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pn532  # noqa: E402  firmware/pn532.py
from pn532_frames import ACK, CMD, ERR, NACK, RSP  # noqa: E402

WAKE = bytes.fromhex("5555") + bytes(14)


class ScriptedUART:
    """machine.UART with timeout=0: each write must match the script; replies are queued."""

    def __init__(self, script):
        self.script = list(script)
        self.rx = bytearray()
        self.writes: list[bytes] = []

    def write(self, data):
        data = bytes(data)
        self.writes.append(data)
        if data == WAKE:
            return len(data)
        assert self.script, f"unexpected write {data.hex()}"
        expected, reply = self.script.pop(0)
        assert data.hex() == expected.hex()
        self.rx += reply
        return len(data)

    def any(self):
        return len(self.rx)

    def readinto(self, mv):
        n = min(len(mv), len(self.rx))
        if not n:
            return None
        mv[:n] = self.rx[:n]
        del self.rx[:n]
        return n


class FakePin:
    def __init__(self):
        self.values: list[int] = []

    def value(self, v=None):
        if v is None:
            return self.values[-1] if self.values else 0
        self.values.append(int(v))


def run(coro):
    return asyncio.run(coro)


BEGIN = [
    (CMD("14011401"), ACK() + RSP("15")),
    (CMD("02"), ACK() + RSP("0332010607")),
    (CMD("3205FF0102"), ACK() + RSP("33")),
]


def test_begin_wakes_configures_sam_and_retries_and_returns_version():
    uart = ScriptedUART(BEGIN)
    chip = pn532.PN532(pn532.HSUBus(uart))
    assert run(chip.begin()) == (0x32, 0x01, 0x06, 0x07)
    assert uart.writes[0] == WAKE
    assert not uart.script


def test_read_target_classic_card():
    uart = ScriptedUART([(CMD("4A0100"), ACK() + RSP("4B01010004" "08" "04" "DEADBEEF"))])
    chip = pn532.PN532(pn532.HSUBus(uart))
    assert run(chip.read_target()) == (bytes.fromhex("DEADBEEF"), 0x08, 0x0004, b"")


def test_read_target_iso_dep_with_seven_byte_uid_and_ats():
    rsp = RSP("4B0101" "0344" "20" "07" "04A1B2C3D4E5F6" "067577810280")
    uart = ScriptedUART([(CMD("4A0100"), ACK() + rsp)])
    chip = pn532.PN532(pn532.HSUBus(uart))
    uid, sak, atqa, ats = run(chip.read_target())
    assert pn532.uid_hex(uid) == "04A1B2C3D4E5F6"
    assert (sak, atqa, ats) == (0x20, 0x0344, bytes.fromhex("067577810280"))
    assert pn532.card_type(sak) == "iso-dep"


def test_read_target_no_card_is_none():
    uart = ScriptedUART([(CMD("4A0100"), ACK() + RSP("4B00"))])
    chip = pn532.PN532(pn532.HSUBus(uart))
    assert run(chip.read_target()) is None


def test_bad_uid_length_is_a_frame_error():
    uart = ScriptedUART([(CMD("4A0100"), ACK() + RSP("4B0101000408" "05" "0102030405"))])
    chip = pn532.PN532(pn532.HSUBus(uart))
    with pytest.raises(pn532.PN532FrameError, match="UID length 5"):
        run(chip.read_target())


def test_exchange_returns_response_and_raises_on_status():
    apdu = "00A4040007D276000085010100"
    uart = ScriptedUART([
        (CMD("4001" + apdu), ACK() + RSP("41009000")),
        (CMD("4001" + apdu), ACK() + RSP("4101")),
    ])
    chip = pn532.PN532(pn532.HSUBus(uart))
    assert run(chip.exchange(bytes.fromhex(apdu))) == b"\x90\x00"
    with pytest.raises(pn532.PN532StatusError) as err:
        run(chip.exchange(bytes.fromhex(apdu)))
    assert err.value.status == 0x01 and err.value.command == 0x40


def test_long_exchange_uses_an_extended_frame():
    data = bytes(range(256)) + b"\x01\x02"  # 258 bytes: LEN = 2 + 1 + 258 > 255
    uart = ScriptedUART([(CMD("4001" + data.hex()), ACK() + RSP("4100" + "AA" * 260))])
    chip = pn532.PN532(pn532.HSUBus(uart))
    assert run(chip.exchange(data)) == b"\xaa" * 260
    assert uart.writes[0][3:5] == b"\xff\xff"


def test_error_frame_raises_status_7f():
    uart = ScriptedUART([(CMD("02"), ACK() + ERR())])
    chip = pn532.PN532(pn532.HSUBus(uart))
    with pytest.raises(pn532.PN532StatusError) as err:
        run(chip.firmware_version())
    assert err.value.status == 0x7F


def test_bad_checksum_is_recovered_with_a_nack():
    good = RSP("0332010607")
    bad = bytearray(good)
    bad[-2] ^= 0xFF
    uart = ScriptedUART([(CMD("02"), ACK() + bytes(bad)), (NACK(), good)])
    chip = pn532.PN532(pn532.HSUBus(uart))
    assert run(chip.firmware_version()) == (0x32, 1, 6, 7)


def test_repeated_bad_checksums_raise_frame_error():
    bad = bytearray(RSP("0332010607"))
    bad[-2] ^= 0xFF
    bad = bytes(bad)
    uart = ScriptedUART([(CMD("02"), ACK() + bad), (NACK(), bad), (NACK(), bad)])
    chip = pn532.PN532(pn532.HSUBus(uart))
    with pytest.raises(pn532.PN532FrameError, match="checksum"):
        run(chip.firmware_version())


def test_silent_chip_times_out_without_ack():
    uart = ScriptedUART([(CMD("02"), b"")])
    chip = pn532.PN532(pn532.HSUBus(uart))
    with pytest.raises(pn532.PN532Timeout):
        run(chip.firmware_version())


def test_missing_response_aborts_the_command_with_an_ack():
    uart = ScriptedUART([(CMD("4A0100"), ACK()), (ACK(), b"")])
    chip = pn532.PN532(pn532.HSUBus(uart))
    with pytest.raises(pn532.PN532Timeout, match="0x4A"):
        run(chip.read_target(timeout_ms=20))
    assert uart.writes[-1] == ACK()


class BabblingUART(ScriptedUART):
    """A chip that answers a command with its ACK, then with stray ACK frames, one per read,
    until the host aborts the command with an ACK of its own.

    ``limit`` only keeps a broken driver from spinning for good: it fails the test instead."""

    def __init__(self, script, limit=200_000):
        super().__init__(script)
        self.babbling = False
        self.stray = 0
        self.limit = limit

    def write(self, data):
        n = super().write(data)
        self.babbling = bytes(data) not in (ACK(), WAKE)
        return n

    def any(self):
        return len(self.rx) or (len(ACK()) if self.babbling else 0)

    def readinto(self, mv):
        if not self.rx and self.babbling:
            self.stray += 1
            if self.stray > self.limit:
                raise AssertionError(f"driver still waiting after {self.limit} stray ACKs")
            self.rx += ACK()
        return super().readinto(mv)


def test_stray_acks_forever_cannot_stretch_the_command_deadline():
    # Each stray ACK used to restart the response wait: the reader stayed stuck while they came.
    uart = BabblingUART([(CMD("4A0100"), ACK()), (ACK(), b"")])
    chip = pn532.PN532(pn532.HSUBus(uart))
    with pytest.raises(pn532.PN532Timeout, match="0x4A"):
        run(chip.read_target(timeout_ms=20))
    assert uart.stray > 1  # it did see the babble
    assert uart.writes[-1] == ACK()  # and aborted the command in the chip


def test_garbage_before_the_frame_is_skipped():
    uart = ScriptedUART([(CMD("02"), b"\x55\xff\x13" + ACK() + b"\x00\x00" + RSP("0332010607"))])
    chip = pn532.PN532(pn532.HSUBus(uart))
    assert run(chip.firmware_version()) == (0x32, 1, 6, 7)


def test_hard_reset_pulses_the_reset_pin_then_begins():
    pin = FakePin()
    uart = ScriptedUART(BEGIN)
    chip = pn532.PN532(pn532.HSUBus(uart), reset_pin=pin)
    run(chip.hard_reset())
    assert pin.values == [1, 0, 1]
    assert not uart.script


class FakeI2C:
    """machine.I2C: writes are checked; a read gives the status byte then the next frame."""

    def __init__(self, script):
        self.script = list(script)
        self.frames: list[bytes] = []
        self.addrs: set[int] = set()

    def writeto(self, addr, data):
        self.addrs.add(addr)
        expected, replies = self.script.pop(0)
        assert bytes(data).hex() == expected.hex()
        self.frames += replies

    def readfrom_into(self, addr, buf):
        self.addrs.add(addr)
        if not self.frames:
            buf[:] = bytes(len(buf))
            return
        data = b"\x01" + self.frames[0]
        if len(buf) > 1:
            self.frames.pop(0)
        data = (data + bytes(len(buf)))[: len(buf)]
        buf[:] = data


def test_i2c_bus_reads_status_byte_then_frame():
    i2c = FakeI2C([(CMD("4A0100"), [ACK(), RSP("4B01010004080411223344")])])
    chip = pn532.PN532(pn532.I2CBus(i2c))
    assert run(chip.read_target()) == (bytes.fromhex("11223344"), 0x08, 0x0004, b"")
    assert i2c.addrs == {0x24}


class FakeSPI:
    """machine.SPI + CS pin: records each CS-low transaction as the bytes on MOSI."""

    def __init__(self, reverse):
        self.reverse = reverse
        self.transactions: list[bytearray] = []
        self.replies: list[bytes] = []
        self.cs = FakePin()

    def _wire(self, b):  # what the chip decodes from a byte the host clocked out
        return int(f"{b:08b}"[::-1], 2) if self.reverse else b

    def write(self, data):
        self.transactions[-1] += bytes(self._wire(b) for b in data)

    def readinto(self, buf):
        op = self.transactions[-1][0]
        if op == 0x02:
            out = b"\x01" if self.replies else b"\x00"
        else:
            out = (self.replies.pop(0) + bytes(len(buf)))[: len(buf)]
        buf[:] = bytes(self._wire(b) for b in out[: len(buf)])


class SPICSPin(FakePin):
    def __init__(self, spi):
        super().__init__()
        self.spi = spi

    def value(self, v=None):
        if v == 0:
            self.spi.transactions.append(bytearray())
        return super().value(v)


@pytest.mark.parametrize("lsb_first", [True, False])
def test_spi_bus_data_write_status_read_data_read(lsb_first):
    spi = FakeSPI(reverse=not lsb_first)
    cs = SPICSPin(spi)
    spi.replies = [ACK(), RSP("0332010607")]
    chip = pn532.PN532(pn532.SPIBus(spi, cs, lsb_first=lsb_first))
    assert run(chip.firmware_version()) == (0x32, 1, 6, 7)
    first = spi.transactions[0]
    assert first[0] == 0x01 and bytes(first[1:]) == CMD("02")  # DW + frame
    ops = [t[0] for t in spi.transactions]
    assert 0x02 in ops and 0x03 in ops  # SR polls and DR reads
    assert cs.values[-1] == 1


@pytest.mark.parametrize("uid,text", [
    (b"\x01\x02\x03\x04", "01020304"),
    (b"\x00\x0a\xff\x10", "000AFF10"),
    (bytes.fromhex("04A1B2C3D4E5F6"), "04A1B2C3D4E5F6"),
    (bytes(10), "0" * 20),
])
def test_uid_hex_is_uppercase_zero_padded_and_keeps_length(uid, text):
    assert pn532.uid_hex(uid) == text
    assert len(pn532.uid_hex(uid)) == 2 * len(uid)


@pytest.mark.parametrize("sak,kind", [
    (0x08, "classic1k"), (0x18, "classic4k"), (0x00, "ultralight/ntag"), (0x20, "iso-dep"),
    (0x09, "classic-mini"), (0x28, "classic1k+iso-dep"), (0x60, "nfc-dep"), (0x04, "unknown"),
    (0x33, "iso-dep"),
])
def test_card_type_comes_from_sak(sak, kind):
    assert pn532.card_type(sak) == kind


def test_exceptions_share_one_root():
    for cls in (pn532.PN532Timeout, pn532.PN532FrameError, pn532.PN532StatusError):
        assert issubclass(cls, pn532.PN532Error)
