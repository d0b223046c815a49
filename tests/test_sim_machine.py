# Runs on CPython (pytest): the sim/mpy `machine` stand-in under the real MicroPython unix port.
"""Pins log, WDT reset, machine.reset(), UART over a pty and I2C scan against the emulator."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sim.pinlog import levels, pulses, read_events
from sim.pn532 import PN532Emulator

from conftest import ROOT, micropython_path  # noqa: E402

MICROPYTHON = micropython_path()

pytestmark = [pytest.mark.micropython,
              pytest.mark.skipif(MICROPYTHON is None, reason="needs the MicroPython unix port")]


def run_mpy(tmp_path: Path, code: str, env: dict[str, str] | None = None, timeout: float = 20):
    script = tmp_path / "snippet.py"
    script.write_text(code)
    full = dict(os.environ)
    full["MICROPYPATH"] = "sim/mpy:firmware:.:.frozen"
    full["TAPKIOSK_SIM_PINS"] = str(tmp_path / "pins.log")
    full.update(env or {})
    return subprocess.run([MICROPYTHON, str(script)], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=timeout)


def test_output_changes_are_logged_and_pulses_measurable(tmp_path):
    r = run_mpy(tmp_path, """
import machine, time, neopixel
relay = machine.Pin(26, machine.Pin.OUT, value=0)
relay.on(); time.sleep_ms(40); relay.off()
relay.off()                      # no change: no line
relay(1); relay(0)
buzzer = machine.PWM(machine.Pin(25), freq=2000, duty_u16=0)
buzzer.duty_u16(32768); buzzer.deinit()
np = neopixel.NeoPixel(machine.Pin(5), 2)
np.fill((255, 0, 0)); np.write()
""")
    assert r.returncode == 0, r.stderr
    events = read_events(tmp_path / "pins.log")
    assert levels(events, 26) == [0, 1, 0, 1, 0]
    widths = pulses(events, 26)
    assert len(widths) == 2 and widths[0] >= 40  # sleep_ms(40) between on and off
    assert [e.value for e in events if e.pin == "pwm25"] == ["0", "32768", "0"]
    assert [e.value for e in events if e.pin == "np5"] == ["ff0000ff0000"]


def test_input_pins_follow_the_inputs_file(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.write_text("14 1\n15 0\n14 0\n13 1\n")
    r = run_mpy(tmp_path, """
import machine
print(machine.Pin(13, machine.Pin.IN).value(), machine.Pin(14, machine.Pin.IN).value(),
      machine.Pin(16, machine.Pin.IN, machine.Pin.PULL_UP).value())
""", {"TAPKIOSK_SIM_INPUTS": str(inputs)})
    assert r.stdout.split() == ["1", "0", "0"], r.stderr


def test_watchdog_kills_the_process_when_not_fed(tmp_path):
    r = run_mpy(tmp_path, """
import machine, time
wdt = machine.WDT(timeout=200)
for _ in range(5):
    time.sleep_ms(50)
    wdt.feed()
print("fed")
while True:          # the firmware hangs
    time.sleep_ms(10)
""")
    assert r.stdout.split() == ["fed"]
    assert r.returncode == -9
    assert "WDT reset" in r.stderr
    events = read_events(tmp_path / "pins.log")
    assert [e.value for e in events if e.pin == "wdt"].count("feed") == 5
    assert events[-1].pin == "wdt" and events[-1].value == "reset"


def test_watchdog_fed_in_time_lets_the_program_finish(tmp_path):
    r = run_mpy(tmp_path, """
import machine, time
wdt = machine.WDT(timeout=300)
for _ in range(10):
    time.sleep_ms(20)
    wdt.feed()
print("done")
""")
    assert r.returncode == 0 and r.stdout.split() == ["done"], r.stderr


def test_machine_reset_exits_75_and_reset_cause_from_env(tmp_path):
    r = run_mpy(tmp_path, """
import machine
print(machine.reset_cause() == machine.WDT_RESET, machine.unique_id().hex())
machine.reset()
print("not reached")
""", {"TAPKIOSK_SIM_RESET_CAUSE": "3", "TAPKIOSK_SIM_UNIQUE_ID": "a1b2c3d4e5f6"})
    assert r.returncode == 75
    assert r.stdout.split() == ["True", "a1b2c3d4e5f6"]


def test_network_wlan_connects(tmp_path):
    r = run_mpy(tmp_path, """
import network
w = network.WLAN(network.STA_IF)
w.active(True)
w.connect("site", "secret")
print(w.isconnected(), w.ifconfig()[0], w.config("essid"))
""")
    assert r.stdout.split() == ["True", "127.0.0.1", "site"], r.stderr


def test_unwired_uart_is_a_clear_error(tmp_path):
    r = run_mpy(tmp_path, """
import machine
try:
    machine.UART(2)
except OSError as e:
    print("OSError", e.args[0], e.args[1])
""")
    assert "OSError 19" in r.stdout and "TAPKIOSK_SIM_UART2" in r.stdout


def test_uart_over_a_pty_reaches_the_emulator(tmp_path):
    with PN532Emulator() as emu:
        path = emu.serve_pty()
        r = run_mpy(tmp_path, """
import machine, time
u = machine.UART(1, baudrate=115200, timeout=0)
u.write(b"\\x55\\x55\\x00\\x00\\x00" + bytes.fromhex("0000ff02fed4022a00"))
buf = bytearray(64)
got = b""
for _ in range(200):
    n = u.readinto(buf)
    if n:
        got += bytes(buf[:n])
    if len(got) >= 19:
        break
    time.sleep_ms(5)
print(got.hex())
""", {"TAPKIOSK_SIM_UART1": path})
    assert r.stdout.strip() == "0000ff00ff00" "0000ff06fad50332010607e800", r.stderr


def test_i2c_scan_finds_the_pn532(tmp_path):
    with PN532Emulator() as emu:
        port = emu.serve_bus()
        r = run_mpy(tmp_path, """
import machine
i2c = machine.I2C(0, freq=400000)
print([hex(a) for a in i2c.scan()])
try:
    i2c.writeto(0x30, b"x")
except OSError as e:
    print("nack", e.args[0])
""", {"TAPKIOSK_SIM_I2C0": f"tcp:127.0.0.1:{port}"})
    assert r.stdout.split("\n")[:2] == ["['0x24']", "nack 19"], r.stderr
