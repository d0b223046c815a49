# Runs on CPython (technician laptop, factory PC): reads MicroPython ESP32 firmware and builds flash images.
"""MicroPython firmware files, ESP-IDF partition tables, littlefs and merged images.

A MicroPython ``ESP32_GENERIC-*.bin`` download is a merged image meant to be written at
flash offset 0x1000: the second-stage bootloader at 0x1000, the partition table at 0x8000
and the MicroPython app at 0x10000. Its partition table names a ``vfs`` data partition
(0x200000 on 4 MB boards) that MicroPython mounts as littlefs v2 with 4096-byte blocks.

:func:`load_firmware` checks such a file with esptool's own image reader,
:func:`build_littlefs` makes the filesystem MicroPython will mount, and
:func:`merge_image` lays both out as one image to write at 0x0.
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from esptool.bin_image import LoadFirmwareImage
from esptool.targets import CHIP_DEFS
from esptool.util import FatalError
from littlefs import LittleFS, UserContext
from littlefs.errors import LittleFSError

from tools.errors import AppBuildError, FirmwareFileError, WrongChip

ESP32_BOOTLOADER_OFFSET = 0x1000
PARTITION_TABLE_OFFSET = 0x8000
PARTITION_TABLE_SIZE = 0xC00
FLASH_SECTOR = 0x1000
LFS_BLOCK_SIZE = 4096
# MicroPython's VfsLfs2 defaults (extmod/vfs_lfs.c): readsize=32, progsize=32, lookahead=32.
LFS_READ_SIZE = 32
LFS_PROG_SIZE = 32
LFS_LOOKAHEAD = 32
# littlefs on-disk version 2.0: mountable by every littlefs v2 build MicroPython has shipped.
LFS_DISK_VERSION = 0x00020000

_ENTRY = struct.Struct("<2sBBII16sI")
_ENTRY_MAGIC = b"\xaa\x50"
_MD5_MAGIC = b"\xeb\xeb"
_ESP_IMAGE_MAGIC = 0xE9

TYPE_APP = 0x00
TYPE_DATA = 0x01
SUBTYPE_FACTORY = 0x00
SUBTYPE_NVS = 0x02
SUBTYPE_PHY = 0x01
SUBTYPE_FAT = 0x81
SUBTYPE_SPIFFS = 0x82
SUBTYPE_LITTLEFS = 0x83
_FS_SUBTYPES = (SUBTYPE_FAT, SUBTYPE_SPIFFS, SUBTYPE_LITTLEFS)


@dataclass(frozen=True)
class Partition:
    """One row of an ESP-IDF partition table."""

    name: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int = 0

    @property
    def end(self) -> int:
        """First flash address after the partition."""
        return self.offset + self.size


@dataclass(frozen=True)
class Firmware:
    """A checked MicroPython ESP32 firmware file.

    ``data`` is what goes to flash starting at ``base`` (0x1000 for the official downloads).
    """

    path: str
    data: bytes
    base: int
    partitions: tuple[Partition, ...]
    app: Partition
    vfs: Partition
    chip: str

    @property
    def flash_size_needed(self) -> int:
        """Bytes of flash the partition table lays out (4 MB for ESP32_GENERIC)."""
        return max(p.end for p in self.partitions)


def parse_partition_table(data: bytes) -> list[Partition]:
    """Parse a binary ESP-IDF partition table (gen_esp32part format).

    32-byte rows ``magic 0xAA50 | type | subtype | offset | size | name[16] | flags``, an
    optional MD5 row (``0xEBEB``, 14 bytes 0xFF, MD5 of the rows before it), then 0xFF.

    Raises:
        FirmwareFileError: no table, bad magic, or an MD5 row that does not match.
    """
    partitions: list[Partition] = []
    for pos in range(0, min(len(data), PARTITION_TABLE_SIZE), _ENTRY.size):
        row = data[pos : pos + _ENTRY.size]
        if len(row) < _ENTRY.size or row == b"\xff" * _ENTRY.size:
            break
        if row[:2] == _MD5_MAGIC:
            if row[16:] != hashlib.md5(data[:pos]).digest():
                raise FirmwareFileError(
                    "the firmware's partition table fails its MD5 check (file damaged)",
                    "download the firmware file again",
                )
            continue
        magic, ptype, subtype, offset, size, raw_name, flags = _ENTRY.unpack(row)
        if magic != _ENTRY_MAGIC:
            raise FirmwareFileError(
                f"bad partition table row {pos // _ENTRY.size} (magic {magic.hex()}, expected aa50)",
                "use an unmodified MicroPython ESP32_GENERIC firmware file",
            )
        name = raw_name.split(b"\x00", 1)[0].decode("ascii", "replace")
        partitions.append(Partition(name, ptype, subtype, offset, size, flags))
    if not partitions:
        raise FirmwareFileError("the firmware file holds an empty partition table")
    return partitions


def build_partition_table(partitions: Sequence[Partition], *, md5: bool = True) -> bytes:
    """Encode ``partitions`` as gen_esp32part does: rows, MD5 row, 0xFF up to 0xC00 bytes."""
    out = bytearray()
    for p in partitions:
        name = p.name.encode("ascii")
        if len(name) > 16:
            raise ValueError(f"partition name {p.name!r} is longer than 16 bytes")
        out += _ENTRY.pack(_ENTRY_MAGIC, p.type, p.subtype, p.offset, p.size, name.ljust(16, b"\x00"), p.flags)
    if md5:
        out += _MD5_MAGIC + b"\xff" * 14 + hashlib.md5(bytes(out)).digest()
    if len(out) > PARTITION_TABLE_SIZE:
        raise ValueError("partition table is larger than 0xC00 bytes")
    return bytes(out) + b"\xff" * (PARTITION_TABLE_SIZE - len(out))


def _chip_name(chip_id: int) -> str:
    """esptool's chip name for an image header chip id (0 -> ESP32)."""
    for cls in CHIP_DEFS.values():
        if getattr(cls, "IMAGE_CHIP_ID", None) == chip_id and cls.CHIP_NAME != "ESP8266":
            return str(cls.CHIP_NAME)
    return f"unknown chip id {chip_id}"


def _load_image(data: bytes, what: str, path: str):
    """Parse an ESP32 image with esptool; a parse failure is a FirmwareFileError."""
    try:
        return LoadFirmwareImage("esp32", data)
    except (FatalError, RuntimeError, struct.error, TypeError, ValueError) as e:
        raise FirmwareFileError(f"{path}: the {what} is not a valid ESP32 image ({e})") from None


def load_firmware(path: str | Path) -> Firmware:
    """Read and check a MicroPython ESP32 firmware file.

    Accepts the official merged download (written at 0x1000) or a merged image from 0x0.

    Raises:
        FirmwareFileError: missing, unreadable, not an ESP32 image, damaged, app-only.
        WrongChip: a valid image for another chip (ESP32-S3, ESP32-C3...).
    """
    path = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise FirmwareFileError(f"firmware file {path} not found") from None
    except IsADirectoryError:
        raise FirmwareFileError(f"firmware path {path} is a folder, not a .bin file") from None
    except OSError as e:
        raise FirmwareFileError(f"cannot read firmware file {path}: {e.strerror}") from None

    if len(data) > 2 * FLASH_SECTOR and data[0] == 0xFF and data[ESP32_BOOTLOADER_OFFSET] == _ESP_IMAGE_MAGIC:
        base, data = 0, data
    elif data[:1] == bytes([_ESP_IMAGE_MAGIC]):
        base = ESP32_BOOTLOADER_OFFSET
    else:
        raise FirmwareFileError(
            f"{path} is not an ESP32 firmware image (first byte {data[:1].hex() or 'none'}, expected e9)"
        )
    raw = data if base == 0 else b"\xff" * base + data  # index by flash address from here on

    table_bytes = raw[PARTITION_TABLE_OFFSET : PARTITION_TABLE_OFFSET + PARTITION_TABLE_SIZE]
    if table_bytes[:2] != _ENTRY_MAGIC:
        raise FirmwareFileError(
            f"{path} has no partition table at 0x8000: it is an app-only or ESP8266 image, "
            "not a full ESP32 firmware"
        )
    boot = _load_image(raw[ESP32_BOOTLOADER_OFFSET:PARTITION_TABLE_OFFSET], "bootloader", path)
    chip = _chip_name(boot.chip_id)
    if boot.chip_id != 0:
        raise WrongChip(f"{path} is firmware for {chip}, not for ESP32")
    partitions = parse_partition_table(table_bytes)

    apps = [p for p in partitions if p.type == TYPE_APP]
    if not apps:
        raise FirmwareFileError(f"{path}: the partition table has no app partition")
    app = apps[0]
    if len(raw) <= app.offset:
        raise FirmwareFileError(f"{path} is truncated: it ends before the app at {app.offset:#x}")
    image = _load_image(raw[app.offset : app.end], "MicroPython app", path)
    if image.chip_id != 0:
        raise WrongChip(f"{path}: the app is built for {_chip_name(image.chip_id)}, not for ESP32")
    if image.checksum != image.calculate_checksum():
        raise FirmwareFileError(f"{path}: the app image checksum does not match (file damaged)",
                                "download the firmware file again")
    if image.append_digest and image.stored_digest != image.calc_digest:
        raise FirmwareFileError(f"{path}: the app image SHA-256 does not match (file damaged)",
                                "download the firmware file again")

    vfs = next((p for p in partitions if p.type == TYPE_DATA and p.name == "vfs"), None)
    if vfs is None:
        vfs = next((p for p in partitions if p.type == TYPE_DATA and p.subtype in _FS_SUBTYPES), None)
    if vfs is None:
        raise FirmwareFileError(f"{path}: the partition table has no 'vfs' filesystem partition")
    if len(raw) > vfs.offset:
        raise FirmwareFileError(f"{path} overlaps its own filesystem partition at {vfs.offset:#x}")
    return Firmware(path, raw[base:], base, tuple(partitions), app, vfs, chip)


class _QuietContext(UserContext):
    """littlefs block device in memory that logs nothing (files hold the device key)."""

    def read(self, cfg, block: int, off: int, size: int) -> bytearray:
        """Return ``size`` bytes of ``block`` from ``off``."""
        start = block * cfg.block_size + off
        return self.buffer[start : start + size]

    def prog(self, cfg, block: int, off: int, data: bytes) -> int:
        """Program ``data`` into ``block`` at ``off``."""
        start = block * cfg.block_size + off
        self.buffer[start : start + len(data)] = data
        return 0

    def erase(self, cfg, block: int) -> int:
        """Erase ``block`` to 0xFF like NOR flash."""
        start = block * cfg.block_size
        self.buffer[start : start + cfg.block_size] = b"\xff" * cfg.block_size
        return 0

    def sync(self, cfg) -> int:
        """Nothing to flush in memory."""
        return 0


def build_littlefs(files: Mapping[str, bytes], size: int) -> bytes:
    """Make a littlefs v2 image of ``size`` bytes holding ``files`` (path -> content).

    Paths are relative to the filesystem root, ``/`` separated (``protocol/frame.mpy``).

    Raises:
        AppBuildError: the files do not fit, or a path is unusable.
    """
    if size <= 0 or size % LFS_BLOCK_SIZE:
        raise AppBuildError(f"filesystem size {size:#x} is not a multiple of {LFS_BLOCK_SIZE}")
    ctx = _QuietContext(buffsize=size)
    fs = LittleFS(
        context=ctx,
        mount=False,
        block_size=LFS_BLOCK_SIZE,
        block_count=size // LFS_BLOCK_SIZE,
        read_size=LFS_READ_SIZE,
        prog_size=LFS_PROG_SIZE,
        lookahead_size=LFS_LOOKAHEAD,
        disk_version=LFS_DISK_VERSION,
    )
    fs.format()
    fs.mount()
    try:
        for name in sorted(files):
            clean = name.strip("/")
            if not clean or ".." in clean.split("/"):
                raise AppBuildError(f"bad file path {name!r} for the board filesystem")
            parent = clean.rpartition("/")[0]
            if parent:
                fs.makedirs(parent, exist_ok=True)
            with fs.open(clean, "wb") as fh:
                fh.write(files[name])
    except LittleFSError as e:
        raise AppBuildError(
            f"the app files do not fit in the {size // 1024} KiB filesystem ({e})",
            "remove unused files from firmware/ or use a firmware with a larger vfs partition",
        ) from None
    finally:
        fs.unmount()
    return bytes(ctx.buffer)


def merge_image(firmware: Firmware, fs_image: bytes) -> bytes:
    """One image to write at 0x0: 0xFF padding, the firmware at its base, the filesystem at vfs."""
    if len(fs_image) != firmware.vfs.size:
        raise AppBuildError(
            f"filesystem image is {len(fs_image):#x} bytes, the vfs partition is {firmware.vfs.size:#x}"
        )
    out = io.BytesIO()
    out.write(b"\xff" * firmware.base)
    out.write(firmware.data)
    out.write(b"\xff" * (firmware.vfs.offset - out.tell()))
    out.write(fs_image)
    return out.getvalue()
