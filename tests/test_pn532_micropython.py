# Runs on CPython (pytest): firmware/pn532.py + firmware/reader.py under the real MicroPython unix port, against the emulator.
"""End to end: micropython subprocess (sim/mpy stand-ins) <-> TCP <-> PN532Emulator in this process."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import micropython_path, run_micropython
from sim.cards import IsoDepCard, UidCard
from sim.pinlog import levels, read_events
from sim.pn532 import PN532Emulator

from conftest import ROOT, micropython_path, poll_until, wait_until  # noqa: E402

MICROPYTHON = micropython_path()
RST_PIN = 4
CS_PIN = 5

pytestmark = [pytest.mark.micropython,
              pytest.mark.skipif(MICROPYTHON is None, reason="needs the MicroPython unix port")]

# The firmware side: prints one line per tap, fault and recovery.
SCRIPT = """
import os, sys, asyncio, machine
from pn532 import PN532, HSUBus, I2CBus, SPIBus, uid_hex, card_type
from reader import Reader

bus = os.getenv("E2E_BUS")
if bus == "hsu":
    b = HSUBus(machine.UART(1, baudrate=115200, timeout=0))
elif bus == "i2c":
    b = I2CBus(machine.I2C(0, freq=400000))
else:
    lsb = bus == "spi-lsb"
    spi = machine.SPI(1, baudrate=1000000, firstbit=machine.SPI.LSB if lsb else machine.SPI.MSB)
    b = SPIBus(spi, machine.Pin(%(cs)d, machine.Pin.OUT, value=1), lsb_first=lsb)
chip = PN532(b, reset_pin=machine.Pin(%(rst)d, machine.Pin.OUT, value=1))

def out(*words):
    sys.stdout.write(" ".join(str(w) for w in words) + "\\n")

def on_tap(uid, sak, atqa, secure):
    out("TAP", uid_hex(uid), "%%02X" %% sak, "%%04X" %% atqa, card_type(sak), secure)

async def secure_hook(chip, uid, sak, ats):
    rsp = await chip.exchange(b"\\x90\\x60\\x00\\x00\\x00")
    return "%%d:%%s" %% (len(ats), uid_hex(rsp))

def on_fault(kind, count, text):
    out("FAULT", kind, count)

def on_recovered(resets):
    out("RECOVERED", resets)

reader = Reader(chip, poll_ms=10, debounce_ms=150, probe_ms=300, max_failures=3,
                secure_hook=secure_hook, on_fault=on_fault, on_recovered=on_recovered)
out("START")
asyncio.run(reader.run(on_tap))
""" % {"cs": CS_PIN, "rst": RST_PIN}


class Firmware:
    def __init__(self, tmp_path: Path, env: dict[str, str]):
        script = tmp_path / "e2e_reader.py"
        script.write_text(SCRIPT)
        self.pins = tmp_path / "pins.log"
        full = dict(os.environ)
        full.update(env)
        full["MICROPYPATH"] = "sim/mpy:firmware:.:.frozen"
        full["TAPKIOSK_SIM_PINS"] = str(self.pins)
        self.proc = subprocess.Popen([MICROPYTHON, str(script)], cwd=ROOT, env=full,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, prefix: str, timeout: float = 10.0) -> str:
        def failed() -> AssertionError:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            return AssertionError(f"no line {prefix!r}; seen {self.seen}; stderr {err}")

        def next_match() -> str | None:
            if self.proc.poll() is not None and self.lines.empty():
                raise failed()  # the firmware exited: fail now, not at the timeout
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                return None
            self.seen.append(line)
            return line if line.startswith(prefix) else None

        line = poll_until(next_match, timeout, 0)
        if line is None:
            raise failed()
        return line

    def drain(self) -> list[str]:
        out = []
        while not self.lines.empty():
            out.append(self.lines.get())
        self.seen += out
        return out

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)


def wait_polls(emu: PN532Emulator, n: int, timeout: float = 10.0) -> None:
    """Wait until the firmware has sent n more InListPassiveTarget commands."""
    start = emu.commands.count(0x4A)
    wait_until(lambda: emu.commands.count(0x4A) >= start + n, timeout, 0.01,
               what=f"{n} more polls (firmware stopped polling)")


@pytest.fixture
def emu():
    e = PN532Emulator()
    yield e
    e.close()


def start(emu: PN532Emulator, tmp_path: Path, bus: str) -> Firmware:
    bus_port = emu.serve_bus()
    env = {"E2E_BUS": bus, f"TAPKIOSK_SIM_PIN{RST_PIN}": f"rstpdn@tcp:127.0.0.1:{bus_port}"}
    if bus == "hsu":
        env["TAPKIOSK_SIM_UART1"] = f"tcp:127.0.0.1:{emu.serve_tcp()}"
    elif bus == "i2c":
        env["TAPKIOSK_SIM_I2C0"] = f"tcp:127.0.0.1:{bus_port}"
    else:
        env["TAPKIOSK_SIM_SPI1"] = f"tcp:127.0.0.1:{bus_port}"
        env[f"TAPKIOSK_SIM_PIN{CS_PIN}"] = f"ss@tcp:127.0.0.1:{bus_port}"
    fw = Firmware(tmp_path, env)
    fw.expect("START")
    wait_polls(emu, 2)
    return fw


def test_hsu_one_tap_per_presentation(emu, tmp_path):
    fw = start(emu, tmp_path, "hsu")
    try:
        emu.place(UidCard(bytes.fromhex("0A0B0C0D"), sak=0x08))
        assert fw.expect("TAP").split() == ["TAP", "0A0B0C0D", "08", "0004", "classic1k", "None"]
        wait_polls(emu, 30)  # card held: polled again and again
        assert not [ln for ln in fw.drain() if ln.startswith("TAP")]
        emu.remove()
        wait_polls(emu, 30)  # 30 polls x 10 ms sleeps > debounce_ms
        emu.place(UidCard(bytes.fromhex("0A0B0C0D"), sak=0x08))
        assert fw.expect("TAP").split()[1] == "0A0B0C0D"
        emu.place(UidCard(bytes.fromhex("04A1B2C3D4E5F6"), sak=0x00, atqa=0x0044))
        assert fw.expect("TAP").split()[1:5] == ["04A1B2C3D4E5F6", "00", "0044", "ultralight/ntag"]
    finally:
        fw.stop()


def test_hsu_hang_pulses_reset_reports_fault_and_recovers(emu, tmp_path):
    fw = start(emu, tmp_path, "hsu")
    try:
        emu.hang()
        assert fw.expect("FAULT").split()[:3] == ["FAULT", "timeout", "3"]
        assert fw.expect("RECOVERED").split() == ["RECOVERED", "1"]
        assert emu.resets >= 1 and not emu.hung
        assert levels(read_events(fw.pins), RST_PIN)[:3] == [1, 0, 1]  # high, pulse low, high
        emu.place(UidCard(bytes.fromhex("11223344")))
        assert fw.expect("TAP").split()[1] == "11223344"
    finally:
        fw.stop()


@pytest.mark.parametrize("interpreter", ["micropython", "cpython"])
def test_stray_acks_forever_end_in_a_timeout_and_an_abort(interpreter):
    # tests/mpy/pn532_babble.py: a fake UART that sends stray ACKs forever after a command.
    # Each stray ACK used to restart the response wait, so the command never ended.
    script = ["tests/mpy/pn532_babble.py"]
    if interpreter == "micropython":
        proc = run_micropython(script, timeout=300)
    else:
        env = dict(os.environ, PYTHONPATH=f"{ROOT / 'firmware'}:{ROOT}")
        proc = subprocess.run([sys.executable, *script], cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().split() == ["timeout", "True", "True", "True"]


def test_hsu_babbling_chip_times_out_pulses_reset_and_recovers(emu, tmp_path):
    # Stray ACKs every few ms used to restart the driver's wait: no fault, no reset, stuck.
    fw = start(emu, tmp_path, "hsu")
    try:
        emu.babble()
        assert fw.expect("FAULT").split()[:3] == ["FAULT", "timeout", "3"]
        assert fw.expect("RECOVERED").split() == ["RECOVERED", "1"]
        assert emu.resets >= 1 and not emu.babbling
        emu.place(UidCard(bytes.fromhex("11223344")))
        assert fw.expect("TAP").split()[1] == "11223344"
    finally:
        fw.stop()


def test_hsu_iso_dep_card_runs_the_secure_hook(emu, tmp_path):
    card = IsoDepCard(bytes.fromhex("04112233445566"), apdu_handler=lambda apdu: b"\xab\xcd\x91\x00")
    fw = start(emu, tmp_path, "hsu")
    try:
        emu.place(card)
        words = fw.expect("TAP").split()
        assert words[1:5] == ["04112233445566", "20", "0344", "iso-dep"]
        assert words[5] == "6:ABCD9100"  # ATS with TL, and the card's answer to the APDU
        assert card.apdus == [bytes.fromhex("9060000000")]
    finally:
        fw.stop()


def test_i2c_transport(emu, tmp_path):
    fw = start(emu, tmp_path, "i2c")
    try:
        emu.place(UidCard(bytes.fromhex("04A1B2C3D4E5F6"), sak=0x00, atqa=0x0044))
        assert fw.expect("TAP").split()[1:3] == ["04A1B2C3D4E5F6", "00"]
    finally:
        fw.stop()


@pytest.mark.parametrize("bus", ["spi-lsb", "spi-msb"])
def test_spi_transport(emu, tmp_path, bus):
    fw = start(emu, tmp_path, bus)
    try:
        emu.place(UidCard(bytes.fromhex("DEADBEEF"), sak=0x18, atqa=0x0002))
        assert fw.expect("TAP").split()[1:5] == ["DEADBEEF", "18", "0002", "classic4k"]
    finally:
        fw.stop()
