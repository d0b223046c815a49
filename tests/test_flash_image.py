# Runs on CPython (pytest): the offline image builder, checked by reading its output back.
"""`flash.py image` output read back with esptool's image parser and littlefs-python."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from esptool.bin_image import LoadFirmwareImage
from flash_support import (mount, read_all, 
    MICROPYTHON_4MB,
    ESP32S3FirmwareImage,
    esp_image,
    firmware_bytes,
    make_app_tree,
    make_firmware,
)

from host.store.db import open_db
from host.store.devices import device_key
from tools import flash
from tools.errors import FirmwareFileError, WrongChip
from tools.image import build_partition_table, load_firmware, parse_partition_table


@pytest.fixture
def site(tmp_path: Path) -> dict:
    """A firmware file, an app tree and an empty site database."""
    db = tmp_path / "site.db"
    open_db(str(db))
    return {
        "fw": make_firmware(tmp_path / "ESP32_GENERIC-test.bin"),
        "app": make_app_tree(tmp_path / "repo"),
        "db": db,
        "tmp": tmp_path,
    }


def image_argv(site: dict, device_id: str = "gate-01", *extra: str) -> list[str]:
    """argv for `image` on the test site."""
    return ["image", "--firmware", str(site["fw"]), "--device-id", device_id, "--kind", "gate",
            "--link", "serial", "--db", str(site["db"]), "--app-root", str(site["app"]),
            "--out", str(site["tmp"] / f"{device_id}.bin"), *extra]


def test_image_reads_back_partition_table_app_and_filesystem(site, capsys):
    assert flash.main(image_argv(site)) == 0
    out_file = site["tmp"] / "gate-01.bin"
    image = out_file.read_bytes()
    assert len(image) == 4 * 1024 * 1024
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600

    source = firmware_bytes()
    assert image[:0x1000] == b"\xff" * 0x1000
    assert image[0x1000 : 0x1000 + len(source)] == source

    table = image[0x8000 : 0x8000 + 0xC00]
    rows = parse_partition_table(table)
    assert [(p.name, p.offset, p.size) for p in rows] == [(p.name, p.offset, p.size) for p in MICROPYTHON_4MB]
    md5_row = table[len(rows) * 32 : len(rows) * 32 + 32]
    assert md5_row[:2] == b"\xeb\xeb" and md5_row[16:] == hashlib.md5(table[: len(rows) * 32]).digest()

    app = LoadFirmwareImage("esp32", image[0x10000:0x200000])
    assert app.chip_id == 0
    assert app.checksum == app.calculate_checksum()
    assert app.stored_digest == app.calc_digest
    boot = LoadFirmwareImage("esp32", image[0x1000:0x8000])
    assert boot.stored_digest == boot.calc_digest

    files = read_all(mount(image[0x200000:]))
    assert sorted(files) == ["app.mpy", "config.json", "main.py", "protocol/__init__.mpy",
                             "protocol/packet.mpy", "selfcheck.mpy"]
    assert files["main.py"] == (site["app"] / "firmware" / "main.py").read_bytes()
    for name, data in files.items():
        if name.endswith(".mpy"):
            assert data[0:1] == b"M" and data[1] == 6, name  # .mpy header, version 6

    config = json.loads(files["config.json"])
    db = open_db(str(site["db"]))
    assert bytes.fromhex(config["key"]) == device_key(db, "gate-01")
    assert config["device_id"] == "gate-01" and config["kind"] == "gate" and config["link"] == "serial"
    assert config["reader"] == {"bus": "hsu", **flash.READER_PINS["hsu"]}
    assert config["serial"] == flash.SERIAL_LINK and config["config_version"] == 1

    captured = capsys.readouterr()
    assert config["key"] not in captured.out + captured.err
    assert config["key"].upper() not in captured.out + captured.err


def test_image_again_keeps_key_and_rotate_changes_it(site, capsys):
    assert flash.main(image_argv(site)) == 0
    first = (site["tmp"] / "gate-01.bin").read_bytes()
    assert flash.main(image_argv(site, "gate-01", "--force")) == 0
    again = (site["tmp"] / "gate-01.bin").read_bytes()
    key_first = json.loads(read_all(mount(first[0x200000:]))["config.json"])["key"]
    key_again = json.loads(read_all(mount(again[0x200000:]))["config.json"])["key"]
    assert key_first == key_again

    assert flash.main(image_argv(site, "gate-01", "--rotate-key", "--force")) == 0
    rotated = (site["tmp"] / "gate-01.bin").read_bytes()
    key_rotated = json.loads(read_all(mount(rotated[0x200000:]))["config.json"])["key"]
    assert key_rotated != key_first
    assert device_key(open_db(str(site["db"])), "gate-01").hex() == key_rotated
    assert key_first not in capsys.readouterr().out


def test_image_never_overwrites_a_file_without_force(site, capsys):
    """issue #20 item 9: `image --out` silently replaced whatever file was there."""
    target = site["tmp"] / "gate-01.bin"
    target.write_bytes(b"someone else's image")
    assert flash.main(image_argv(site)) == 2
    assert "already exists" in capsys.readouterr().err
    assert target.read_bytes() == b"someone else's image"
    with pytest.raises(Exception):
        device_key(open_db(str(site["db"])), "gate-01")
    assert flash.main(image_argv(site, "gate-01", "--force")) == 0
    assert target.read_bytes() != b"someone else's image"


def test_image_and_provision_need_db_even_in_a_dry_run(site, capsys):
    """issue #20 item 9: `provision --dry-run` without --db printed "would register in None"."""
    argv = [a for a in image_argv(site, "gate-09", "--dry-run")]
    i = argv.index("--db")
    del argv[i:i + 2]
    assert flash.main(argv) == 2
    assert "--db is required" in capsys.readouterr().err
    prov = ["provision", "--port", "/dev/ttyUSB0", "--firmware", str(site["fw"]), "--device-id", "gate-09",
            "--kind", "gate", "--link", "serial", "--app-root", str(site["app"]), "--dry-run"]
    assert flash.main(prov) == 2
    err = capsys.readouterr().err
    assert "--db is required" in err and "None" not in err


def test_image_dry_run_writes_nothing(site, capsys):
    assert flash.main(image_argv(site, "gate-09", "--dry-run")) == 0
    assert not (site["tmp"] / "gate-09.bin").exists()
    assert "would build a littlefs filesystem" in capsys.readouterr().out
    with pytest.raises(Exception):
        device_key(open_db(str(site["db"])), "gate-09")


def test_partition_table_roundtrip_and_md5_check():
    table = build_partition_table(MICROPYTHON_4MB)
    assert len(table) == 0xC00
    assert tuple(parse_partition_table(table)) == MICROPYTHON_4MB
    damaged = bytearray(table)
    damaged[8] ^= 0x01  # the nvs offset
    with pytest.raises(FirmwareFileError, match="MD5"):
        parse_partition_table(bytes(damaged))


def test_firmware_written_from_0x0_is_accepted(tmp_path):
    path = tmp_path / "merged0.bin"
    path.write_bytes(b"\xff" * 0x1000 + firmware_bytes())
    fw = load_firmware(path)
    assert fw.base == 0 and fw.vfs.offset == 0x200000 and fw.data[0x1000] == 0xE9


@pytest.mark.parametrize(
    "content, error, words",
    [
        (b"<html>404 Not Found</html>\n", FirmwareFileError, "not an ESP32 firmware image"),
        (b"", FirmwareFileError, "not an ESP32 firmware image"),
        # An ESP8266 MicroPython image: magic e9 at 0x0, no partition table at 0x8000.
        (b"\xe9\x01\x02\x40\x00\x00\x10\x40" + b"\x00" * 0x9000, FirmwareFileError, "no partition table"),
    ],
)
def test_not_an_esp32_image_is_refused(tmp_path, content, error, words):
    path = tmp_path / "fw.bin"
    path.write_bytes(content)
    with pytest.raises(error, match=words):
        load_firmware(path)


def test_app_only_image_is_refused(tmp_path):
    path = tmp_path / "app.bin"
    path.write_bytes(esp_image(b"app" * 20000))
    with pytest.raises(FirmwareFileError, match="app-only"):
        load_firmware(path)


def test_firmware_for_another_chip_is_refused(tmp_path):
    path = tmp_path / "s3.bin"
    path.write_bytes(firmware_bytes(image_cls=ESP32S3FirmwareImage))
    with pytest.raises(WrongChip, match="ESP32-S3"):
        load_firmware(path)


def test_damaged_app_is_refused(tmp_path):
    data = bytearray(firmware_bytes())
    data[0xF000 + 0x40] ^= 0xFF  # a byte of the app's segment data
    path = tmp_path / "damaged.bin"
    path.write_bytes(bytes(data))
    with pytest.raises(FirmwareFileError, match="damaged"):
        load_firmware(path)


def test_missing_firmware_exits_2_and_writes_nothing(site, capsys):
    argv = image_argv(site)
    argv[argv.index("--firmware") + 1] = str(site["tmp"] / "nope.bin")
    assert flash.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err and "fix:" in err
    assert not (site["tmp"] / "gate-01.bin").exists()
