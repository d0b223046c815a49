# Runs on CPython (pytest): helpers for the flash tool tests — a synthetic firmware, an app tree, a fake board.
"""Test helpers for tools/flash.py (no tests here).

* :func:`make_firmware` writes a small but valid MicroPython-shaped ESP32 download: an ESP32
  image as bootloader at file offset 0 (flash 0x1000), a real partition table at 0x7000
  (flash 0x8000) and an ESP32 app image at 0xF000 (flash 0x10000), all made with esptool's
  own image classes.
* :func:`make_app_tree` writes a firmware/ + protocol/ source tree.
* :class:`RecordingBoard` is the one fake: it stands at the esptool/mpremote boundary,
  records every call and keeps a flash array and a filesystem dict like a board would.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from esptool.bin_image import ELFSection, ESP32FirmwareImage, ESP32S3FirmwareImage
from littlefs import LittleFS

from tools.board import ChipInfo
from tools.image import (
    SUBTYPE_FACTORY,
    SUBTYPE_FAT,
    SUBTYPE_NVS,
    SUBTYPE_PHY,
    TYPE_APP,
    TYPE_DATA,
    Partition,
    build_partition_table,
)

MICROPYTHON_4MB = (
    Partition("nvs", TYPE_DATA, SUBTYPE_NVS, 0x9000, 0x6000),
    Partition("phy_init", TYPE_DATA, SUBTYPE_PHY, 0xF000, 0x1000),
    Partition("factory", TYPE_APP, SUBTYPE_FACTORY, 0x10000, 0x1F0000),
    Partition("vfs", TYPE_DATA, SUBTYPE_FAT, 0x200000, 0x200000),
)


def esp_image(payload: bytes, image_cls=ESP32FirmwareImage, entry: int = 0x40080400) -> bytes:
    """A valid ESP image (header, one IRAM segment, checksum, SHA-256) built by esptool."""
    img = image_cls()
    img.entrypoint = entry
    img.flash_size_freq = 0x20  # 4MB, 40m
    img.segments = [ELFSection(b".iram0.text", 0x40080000, payload.ljust((len(payload) + 3) & ~3, b"\x00"), 0)]
    return img.save(None)


def firmware_bytes(partitions: Sequence[Partition] = MICROPYTHON_4MB, image_cls=ESP32FirmwareImage) -> bytes:
    """The bytes of a merged ESP32 download meant for flash offset 0x1000."""
    boot = esp_image(b"second stage bootloader" * 8, image_cls)
    app = esp_image(b"MicroPython v1.24.1 on ESP32" * 64, image_cls)
    out = bytearray(b"\xff" * 0x7000)
    out[: len(boot)] = boot
    out += build_partition_table(partitions)
    out += b"\xff" * (0xF000 - len(out))
    out += app
    return bytes(out)


def make_firmware(path: Path, **kw) -> Path:
    """Write :func:`firmware_bytes` to ``path``."""
    path.write_bytes(firmware_bytes(**kw))
    return path


APP_SOURCES = {
    "firmware/main.py": "import app\napp.run()\n",
    "firmware/app.py": "from protocol import packet\n\ndef run():\n    return packet.VERSION\n",
    "firmware/selfcheck.py": "import json\n\ndef run():\n    return {'reader': {'ok': True, 'detail': 'PN532 v1.6'}}\n",
    "protocol/__init__.py": "",
    "protocol/packet.py": "VERSION = 1\n\ndef encode(x):\n    return bytes([VERSION]) + x\n",
}


def make_app_tree(root: Path, sources: Mapping[str, str] = APP_SOURCES) -> Path:
    """Write a small firmware/ + protocol/ tree under ``root``."""
    for name, text in sources.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def selfcheck_line(result) -> str:
    """What the board prints for a self-check ``result``."""
    return "TK-SELFCHECK " + json.dumps(result) + "\n"


class RecordingBoard:
    """Fake of tools.board.EspBoard: records calls, keeps flash bytes and files like a board.

    ``fail`` maps a method name to the exception it raises; ``selfcheck`` is what the board
    prints for the self-check script.
    """

    def __init__(self, port: str = "/dev/ttyUSB0", *, chip: str = "ESP32", flash_size: int = 4 * 1024 * 1024,
                 mac: str = "24:0a:c4:12:34:56", files: Mapping[str, bytes] | None = None,
                 selfcheck: str | None = None, fail: Mapping[str, Exception] | None = None) -> None:
        """A board on ``port`` with the given chip, flash and starting files."""
        self.port = port
        self.info = ChipInfo(chip, mac, flash_size, f"{chip} (revision v3.0)")
        self.flash = bytearray(b"\xff" * flash_size)
        self.files: dict[str, bytes] = dict(files or {})
        self.selfcheck = selfcheck if selfcheck is not None else selfcheck_line(
            {"reader": {"ok": True, "detail": "PN532 v1.6"}, "link": {"ok": True, "detail": "serial"},
             "hello": {"ok": None, "detail": "host not running"}})
        self.fail = dict(fail or {})
        self.calls: list[tuple] = []

    def _enter(self, name: str, *args) -> None:
        """Record a call and raise the configured failure."""
        self.calls.append((name, *args))
        if name in self.fail:
            raise self.fail[name]

    def names(self) -> list[str]:
        """Method names called, in order."""
        return [c[0] for c in self.calls]

    def identify(self) -> ChipInfo:
        """Return the configured chip info."""
        self._enter("identify")
        return self.info

    def erase(self) -> None:
        """Erase the flash array."""
        self._enter("erase")
        self.flash[:] = b"\xff" * len(self.flash)

    def write_flash(self, parts: Sequence[tuple[int, bytes]]) -> None:
        """Write into the flash array, refusing data past its end like esptool does."""
        self._enter("write_flash", [(addr, len(data)) for addr, data in parts])
        for addr, data in parts:
            if addr + len(data) > len(self.flash):
                raise AssertionError("write past the end of flash")
            self.flash[addr : addr + len(data)] = data

    def copy_files(self, files: Mapping[str, bytes]) -> None:
        """Store the files."""
        self._enter("copy_files", sorted(files))
        self.files.update(files)

    def read_file(self, path: str) -> bytes | None:
        """A stored file, or None."""
        self._enter("read_file", path)
        return self.files.get(path)

    def reset(self) -> None:
        """Record a reset."""
        self._enter("reset")

    def exec(self, code: str, timeout: float = 30.0) -> str:
        """Return the configured self-check output for the self-check script."""
        self._enter("exec", code)
        return self.selfcheck


__all__ = ["ESP32S3FirmwareImage", "MICROPYTHON_4MB", "RecordingBoard", "firmware_bytes", "make_app_tree",
           "make_firmware", "selfcheck_line", "esp_image"]


def mount(data: bytes) -> LittleFS:
    """Mount a littlefs image as MicroPython's ESP32 port does: 4096-byte blocks."""
    fs = LittleFS(block_size=4096, block_count=len(data) // 4096, mount=False)
    fs.context.buffer[:] = data
    fs.mount()
    return fs


def read_all(fs: LittleFS) -> dict[str, bytes]:
    """Every file of a mounted littlefs as path -> bytes."""
    out = {}
    for top, _dirs, files in fs.walk("/"):
        for name in files:
            path = f"{top.rstrip('/')}/{name}".lstrip("/")
            with fs.open(path, "rb") as fh:
                out[path] = fh.read()
    return out
