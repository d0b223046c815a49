# Runs on CPython (pytest) with a real ESP32 on a serial port: skipped unless --port (or TAPKIOSK_PORT) is given.
"""Real-board checks of the firmware-image update path (firmware/fwimage.py) on the ESP32's
OTA partitions (``esp32.Partition``). Needs a board provisioned with this tree and a
MicroPython OTA build (two app partitions)::

    .venv/bin/python -m pytest -q -m device tests/test_fleet_device.py --port /dev/ttyUSB0

The test writes into the partition that is NOT running and never calls ``set_boot``: the
board keeps booting what it booted before.
"""

from __future__ import annotations

import os

import pytest

from conftest import ROOT
from tools.board import EspBoard

pytestmark = pytest.mark.device


@pytest.fixture
def board(request: pytest.FixtureRequest) -> EspBoard:
    p = request.config.getoption("--port") or os.environ.get("TAPKIOSK_PORT")
    if not p:
        pytest.skip("no board: pass --port /dev/ttyUSB0 (or set TAPKIOSK_PORT)")
    return EspBoard(p)


def test_board_has_two_ota_app_partitions(board):
    out = board.exec(
        "import esp32\n"
        "r = esp32.Partition(esp32.Partition.RUNNING)\n"
        "n = r.get_next_update()\n"
        "print('PARTS', r.info()[4], n.info()[4], n.ioctl(4, 0) * n.ioctl(5, 0))\n")
    words = out.split("PARTS", 1)[1].split()
    assert words[0] != words[1]
    assert int(words[2]) >= 1024 * 1024


def test_fwimage_writes_chunks_into_the_next_partition_and_checks_them(board):
    board.copy_files({"fwimage.py": (ROOT / "firmware" / "fwimage.py").read_bytes()})
    out = board.exec(
        "import asyncio, hashlib, os, esp32\n"
        "import fwimage\n"
        "try:\n    os.mkdir('upd')\nexcept OSError:\n    pass\n"
        "run = esp32.Partition(esp32.Partition.RUNNING)\n"
        "size = 65536 + 100\n"
        "img = fwimage.Image(size)\n"
        "img.held()\n"
        "h = hashlib.sha256()\n"
        "buf = bytearray(192)\n"
        "i = 0\n"
        "while i * 192 < size:\n"
        "    n = min(192, size - i * 192)\n"
        "    mv = memoryview(buf)[:n]\n"
        "    run.readblocks((i * 192) // 4096, mv, (i * 192) % 4096) if (i * 192) % 4096 + n <= 4096 else None\n"
        "    if (i * 192) % 4096 + n > 4096:\n"
        "        k = 4096 - (i * 192) % 4096\n"
        "        run.readblocks((i * 192) // 4096, mv[:k], (i * 192) % 4096)\n"
        "        run.readblocks((i * 192) // 4096 + 1, mv[k:], 0)\n"
        "    h.update(mv)\n"
        "    img.write(i, bytes(mv), i + 1)\n"
        "    i += 1\n"
        "ok = asyncio.run(img.check(size, h.digest()))\n"
        "bad = asyncio.run(img.check(size, bytes(32)))\n"
        "print('CHECK', ok, bad)\n"
        "os.remove('upd/fw.dat')\n"
        "os.remove('fwimage.py')\n", timeout=120)
    assert "CHECK True False" in out
