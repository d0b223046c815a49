# Runs on CPython (pytest) with a real ESP32 on a serial port: skipped unless TAPKIOSK_PORT is set.
"""Real-board checks of tools/flash.py.

    TAPKIOSK_PORT=/dev/ttyUSB0 [TAPKIOSK_FIRMWARE=ESP32_GENERIC-....bin] \\
        .venv/bin/python -m pytest -q -m device tests/test_flash_device.py

The provision test ERASES the board.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from host.store import device_key, open_db
from tools import flash
from tools.board import EspBoard

PORT = os.environ.get("TAPKIOSK_PORT")
FIRMWARE = os.environ.get("TAPKIOSK_FIRMWARE")

pytestmark = [
    pytest.mark.device,
    pytest.mark.skipif(not PORT, reason="no board: set TAPKIOSK_PORT=/dev/ttyUSB0 to run"),
]


def test_identify_real_board():
    info = EspBoard(PORT).identify()
    assert info.chip == "ESP32"
    assert len(info.mac.split(":")) == 6
    assert info.flash_size >= 4 * 1024 * 1024


@pytest.mark.skipif(not FIRMWARE, reason="set TAPKIOSK_FIRMWARE to a MicroPython ESP32_GENERIC .bin")
def test_provision_real_board(tmp_path: Path):
    db = tmp_path / "site.db"
    argv = ["provision", "--port", PORT, "--firmware", FIRMWARE, "--device-id", "devtest-1", "--kind", "gate",
            "--link", "serial", "--db", str(db), "--create-db"]
    code = flash.main(argv)
    assert code in (0, 5)  # 5: flashed and registered, but a check (no PN532 wired) failed
    raw = EspBoard(PORT).read_file("config.json")
    assert raw is not None
    assert bytes.fromhex(json.loads(raw)["key"]) == device_key(open_db(str(db)), "devtest-1")
