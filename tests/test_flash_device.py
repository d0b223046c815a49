# Runs on CPython (pytest) with a real ESP32 on a serial port: skipped unless --port (or TAPKIOSK_PORT) is given.
"""Real-board checks of tools/flash.py.

    [TAPKIOSK_FIRMWARE=ESP32_GENERIC-....bin] \\
        .venv/bin/python -m pytest -q -m device tests/test_flash_device.py --port /dev/ttyUSB0

(``TAPKIOSK_PORT=/dev/ttyUSB0`` instead of ``--port`` works too.)

The provision test ERASES the board.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from host.store.db import open_db
from host.store.devices import device_key
from tools import flash
from tools.board import EspBoard

FIRMWARE = os.environ.get("TAPKIOSK_FIRMWARE")

pytestmark = pytest.mark.device


@pytest.fixture
def port(request: pytest.FixtureRequest) -> str:
    """The board's serial port: pytest's --port, else $TAPKIOSK_PORT."""
    p = request.config.getoption("--port") or os.environ.get("TAPKIOSK_PORT")
    if not p:
        pytest.skip("no board: pass --port /dev/ttyUSB0 (or set TAPKIOSK_PORT)")
    return p


def test_identify_real_board(port):
    info = EspBoard(port).identify()
    assert info.chip == "ESP32"
    assert len(info.mac.split(":")) == 6
    assert info.flash_size >= 4 * 1024 * 1024


@pytest.mark.skipif(not FIRMWARE, reason="set TAPKIOSK_FIRMWARE to a MicroPython ESP32_GENERIC .bin")
def test_provision_real_board(tmp_path: Path, port):
    db = tmp_path / "site.db"
    argv = ["provision", "--port", port, "--firmware", FIRMWARE, "--device-id", "devtest-1", "--kind", "gate",
            "--link", "serial", "--db", str(db), "--create-db"]
    code = flash.main(argv)
    assert code in (0, 5)  # 5: flashed and registered, but a check (no PN532 wired) failed
    raw = EspBoard(port).read_file("config.json")
    assert raw is not None
    assert bytes.fromhex(json.loads(raw)["key"]) == device_key(open_db(str(db)), "devtest-1")
