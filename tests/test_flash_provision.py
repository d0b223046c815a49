# Runs on CPython (pytest): provision/update/ports flows and the errors a technician meets.
"""`flash.py provision|update` against a recording board (the only fake) and a real site DB.

Port errors are also produced by the real esptool code path: a missing device path, a
pseudo-terminal that never answers (no download mode) and a port another process locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import sys
from pathlib import Path

import pytest
from flash_support import RecordingBoard, make_app_tree, make_firmware, selfcheck_line

from host.errors import NotFound
from host.store.db import open_db
from host.store.devices import device_key, register_device
from tools import flash
from tools.board import EspBoard, classify_port_error
from tools.errors import BoardError, NoPort, NotInDownloadMode, PortBusy, PortPermission
from tools.image import build_littlefs
from flash_support import mount, read_all


@pytest.fixture
def site(tmp_path: Path) -> dict:
    """A firmware file, an app tree and an empty site database."""
    db = tmp_path / "site.db"
    open_db(str(db))
    return {"fw": make_firmware(tmp_path / "ESP32_GENERIC-test.bin"), "app": make_app_tree(tmp_path / "repo"),
            "db": db, "tmp": tmp_path}


def provision_argv(site: dict, *extra: str, device_id: str = "gate-01", kind: str = "gate",
                   link: str = "serial") -> list[str]:
    """argv for `provision` on the test site."""
    return ["provision", "--port", "/dev/ttyUSB0", "--firmware", str(site["fw"]), "--device-id", device_id,
            "--kind", kind, "--link", link, "--db", str(site["db"]), "--app-root", str(site["app"]), *extra]


def run(argv: list[str], board: RecordingBoard | None = None) -> int:
    """main() with the recording board."""
    return flash.main(argv, board_factory=(lambda port: board) if board else None)


def board_config(board: RecordingBoard) -> dict:
    """config.json as found in the board's flash filesystem (vfs at 0x200000)."""
    return json.loads(read_all(mount(bytes(board.flash[0x200000:])))["config.json"])


def db_key(site: dict, device_id: str = "gate-01") -> bytes:
    """The key the host DB holds for ``device_id``."""
    return device_key(open_db(str(site["db"])), device_id)


def test_provision_flashes_registers_and_checks(site, capsys):
    board = RecordingBoard()
    assert run(provision_argv(site), board) == 0
    assert board.names() == ["identify", "erase", "write_flash", "reset", "exec", "reset"]
    assert board.calls[2] == ("write_flash", [(0x1000, 0x400000 - 0x1000)])
    assert board.flash[0x1000] == 0xE9 and board.flash[0x8000:0x8002] == b"\xaa\x50"
    files = read_all(mount(bytes(board.flash[0x200000:])))
    assert {"main.py", "app.mpy", "protocol/packet.mpy", "config.json"} <= set(files)
    config = board_config(board)
    assert bytes.fromhex(config["key"]) == db_key(site)
    out = capsys.readouterr()
    assert "OK: gate-01" in out.out and "reader     OK" in out.out
    assert config["key"] not in out.out + out.err


def test_reprovision_is_idempotent_and_rotate_changes_both(site, capsys):
    first = RecordingBoard()
    assert run(provision_argv(site), first) == 0
    key = db_key(site)
    second = RecordingBoard()
    assert run(provision_argv(site), second) == 0
    assert db_key(site) == key and bytes.fromhex(board_config(second)["key"]) == key
    assert second.flash == first.flash  # same app, same config: byte-identical filesystem
    assert "key kept" in capsys.readouterr().out

    third = RecordingBoard()
    assert run(provision_argv(site, "--rotate-key"), third) == 0
    new_key = db_key(site)
    assert new_key != key and bytes.fromhex(board_config(third)["key"]) == new_key
    assert "key rotated" in capsys.readouterr().out


def test_app_only_copies_app_and_config_with_mpremote(site):
    board = RecordingBoard()
    assert run(provision_argv(site, "--app-only"), board) == 0
    assert "erase" not in board.names() and "write_flash" not in board.names()
    assert "config.json" in board.files and "protocol/packet.mpy" in board.files
    assert bytes.fromhex(json.loads(board.files["config.json"])["key"]) == db_key(site)
    assert board.flash == bytearray(b"\xff" * len(board.flash))


def test_mqtt_device_config(site):
    board = RecordingBoard()
    argv = provision_argv(site, "--wifi-ssid", "shop-wifi", "--wifi-password", "hunter2hunter2",
                          "--broker", "192.168.1.10:1884", "--reader", "pn532-i2c", "--program", "1",
                          "--mqtt-password", "wash-3-secret", link="mqtt", kind="wash", device_id="wash-3")
    assert run(argv, board) == 0
    config = board_config(board)
    assert config["mqtt"]["user"] == "wash-3" and config["mqtt"]["password"] == "wash-3-secret"
    assert config["service"] == 1
    assert config["wifi"] == {"ssid": "shop-wifi", "password": "hunter2hunter2"}
    assert config["mqtt"]["broker"] == "192.168.1.10" and config["mqtt"]["port"] == 1884
    assert config["reader"]["bus"] == "i2c" and config["reader"]["sda"] == 21


def test_dry_run_touches_no_board_and_no_db(site, capsys):
    board = RecordingBoard()
    db = site["tmp"] / "fresh.db"
    argv = provision_argv(site, "--dry-run")
    argv[argv.index("--db") + 1] = str(db)
    assert run(argv, board) == 0
    assert board.calls == [] and not db.exists()
    out = capsys.readouterr().out
    assert "would erase the flash" in out and '"key": "<made at provisioning>"' in out


def test_update_keeps_identity_and_checks_key(site, capsys):
    board = RecordingBoard()
    assert run(provision_argv(site, "--app-only"), board) == 0
    cfg_before = board.files["config.json"]
    board.calls.clear()
    assert run(["update", "--port", "/dev/ttyUSB0", "--db", str(site["db"]), "--app-root", str(site["app"])],
               board) == 0
    copied = next(c for c in board.calls if c[0] == "copy_files")[1]
    assert "config.json" not in copied and "main.py" in copied
    assert board.files["config.json"] == cfg_before

    register_device(open_db(str(site["db"])), "gate-01", "gate", rotate=True)  # key changed elsewhere
    board.calls.clear()
    assert run(["update", "--port", "/dev/ttyUSB0", "--db", str(site["db"]), "--app-root", str(site["app"])],
               board) == 4
    assert "another key" in capsys.readouterr().err
    assert "copy_files" not in board.names()


def test_update_refuses_unprovisioned_board(site, capsys):
    board = RecordingBoard()
    assert run(["update", "--port", "/dev/ttyUSB0", "--app-root", str(site["app"])], board) == 3
    assert "never provisioned" in capsys.readouterr().err and "copy_files" not in board.names()


def test_wrong_chip_changes_nothing(site, capsys):
    board = RecordingBoard(chip="ESP32-S3")
    assert run(provision_argv(site), board) == 3
    err = capsys.readouterr().err
    assert "ESP32-S3, not an ESP32" in err and err.count("\n") == 1
    assert board.names() == ["identify"]
    with pytest.raises(NotFound):
        db_key(site)


def test_small_flash_is_refused(site, capsys):
    board = RecordingBoard(flash_size=2 * 1024 * 1024)
    assert run(provision_argv(site), board) == 3
    assert "2 MB of flash" in capsys.readouterr().err and board.names() == ["identify"]


def test_registered_as_another_kind_is_refused_before_flashing(site, capsys):
    register_device(open_db(str(site["db"])), "gate-01", "wash")
    key = db_key(site)
    board = RecordingBoard()
    assert run(provision_argv(site), board) == 4
    assert "registered as a wash" in capsys.readouterr().err
    assert board.calls == [] and db_key(site) == key


def test_mqtt_without_wifi_is_refused(site, capsys, monkeypatch):
    monkeypatch.delenv("TAPKIOSK_WIFI_PASSWORD", raising=False)
    board = RecordingBoard()
    assert run(provision_argv(site, "--broker", "10.0.0.2", link="mqtt"), board) == 2
    err = capsys.readouterr().err
    assert "Wi-Fi settings missing" in err and "--wifi-ssid" in err
    assert board.calls == []


@pytest.mark.parametrize("exc, code, words", [
    (PortBusy("serial port /dev/ttyUSB0 is busy: another program has it open"), 3, "busy"),
    (PortPermission("permission denied on /dev/ttyUSB0"), 3, "dialout"),
    (NotInDownloadMode("the board on /dev/ttyUSB0 did not enter download mode"), 3, "BOOT"),
])
def test_board_errors_exit_nonzero_and_change_nothing(site, capsys, exc, code, words):
    board = RecordingBoard(fail={"identify": exc})
    assert run(provision_argv(site), board) == code
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    with pytest.raises(NotFound):
        db_key(site)


def test_selfcheck_failure_says_what_to_try(site, capsys):
    board = RecordingBoard(selfcheck=selfcheck_line(
        {"reader": {"ok": False, "detail": "no answer from PN532"}, "link": {"ok": True, "detail": "serial"}}))
    assert run(provision_argv(site), board) == 5
    out, err = capsys.readouterr()
    assert "reader     FAIL  no answer from PN532" in out and "try: check the PN532 wiring" in out
    assert "self-check failed: reader" in err
    assert db_key(site)  # flashed and registered all the same


def test_selfcheck_absent_is_tolerated(site, capsys):
    board = RecordingBoard(selfcheck=selfcheck_line(
        {"available": False, "error": "no module named 'selfcheck'"}))
    assert run(provision_argv(site), board) == 0
    assert "self-check not available in this firmware" in capsys.readouterr().out


def test_real_esptool_missing_port(site, capsys):
    argv = provision_argv(site)
    argv[argv.index("--port") + 1] = "/dev/ttyUSB-tapkiosk-missing"
    assert run(argv) == 3
    assert "no serial port /dev/ttyUSB-tapkiosk-missing" in capsys.readouterr().err


def test_real_esptool_silent_port_is_not_in_download_mode():
    master, slave = pty.openpty()
    try:
        with pytest.raises(NotInDownloadMode):
            EspBoard(os.ttyname(slave), connect_attempts=1).identify()
    finally:
        os.close(master)
        os.close(slave)


def test_real_esptool_locked_port_is_busy():
    master, slave = pty.openpty()
    try:
        fcntl.flock(slave, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what another serial program holds
        with pytest.raises(PortBusy):
            EspBoard(os.ttyname(slave), connect_attempts=1).identify()
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("text, cls", [
    ("could not open port /dev/ttyUSB0: [Errno 13] Permission denied: '/dev/ttyUSB0'", PortPermission),
    ("could not open port /dev/ttyUSB3: [Errno 2] No such file or directory: '/dev/ttyUSB3'", NoPort),
    ("Could not exclusively lock port /dev/ttyUSB0: [Errno 11] Resource temporarily unavailable", PortBusy),
    ("failed to access /dev/ttyUSB0 (it may be in use by another program)", PortBusy),
    ("Failed to connect to ESP32: Wrong boot mode detected (0x13)! The chip needs to be in download mode.",
     NotInDownloadMode),
])
def test_port_error_texts_are_classified(text, cls):
    assert type(classify_port_error(text, "/dev/ttyUSB0")) is cls


def test_ports_lists_known_bridges_only(monkeypatch, capsys):
    from serial.tools import list_ports_common

    def port(device, vid, pid):
        p = list_ports_common.ListPortInfo(device, skip_link_detection=True)
        p.vid, p.pid, p.description = vid, pid, "USB serial"
        return p

    fake_ports = [port("/dev/ttyUSB0", 0x10C4, 0xEA60), port("/dev/ttyACM0", 0x2341, 0x0043), port("/dev/ttyS0", None, None)]
    monkeypatch.setattr("serial.tools.list_ports.comports", lambda: fake_ports)
    assert flash.main(["ports"]) == 0
    out = capsys.readouterr().out
    assert "/dev/ttyUSB0" in out and "CP210x" in out and "ttyACM0" not in out
    assert flash.main(["ports", "--all"]) == 0
    assert "/dev/ttyACM0" in capsys.readouterr().out


def test_fs_too_small_for_app_is_a_clear_error():
    from tools.errors import AppBuildError

    with pytest.raises(AppBuildError, match="do not fit"):
        build_littlefs({"big.bin": os.urandom(64 * 1024)}, 8 * 4096)


# ---------------------------------------------------------------------------------------
# board binding: one device id, one physical board (store migration 6, devices.board_mac)
# ---------------------------------------------------------------------------------------
MAC_A = "24:6f:28:aa:bb:cc"
MAC_B = "24:0a:c4:12:34:56"


def db_mac(site: dict, device_id: str = "gate-01") -> str | None:
    """The board MAC the host DB binds ``device_id`` to."""
    return open_db(str(site["db"])).execute(
        "SELECT board_mac FROM devices WHERE device_id = ?", (device_id,)).fetchone()[0]


def update_argv(site: dict, *extra: str) -> list[str]:
    """argv for `update --db` on the test site."""
    return ["update", "--port", "/dev/ttyUSB0", "--db", str(site["db"]), "--app-root", str(site["app"]),
            *extra]


def test_provision_binds_the_device_to_the_board_mac(site, capsys):
    board = RecordingBoard(mac=MAC_A.upper())
    assert run(provision_argv(site), board) == 0
    assert db_mac(site) == MAC_A  # stored lowercase
    assert f"bound to this board ({MAC_A})" in capsys.readouterr().out
    again = RecordingBoard(mac=MAC_A)
    assert run(provision_argv(site), again) == 0  # same board: idempotent, key kept
    assert db_mac(site) == MAC_A and again.flash == board.flash
    assert "bound to this board (24:6f:28:aa:bb:cc) already" in capsys.readouterr().out


def test_second_board_with_the_same_id_is_refused_before_it_is_touched(site, capsys):
    first = RecordingBoard(mac=MAC_A)
    assert run(provision_argv(site), first) == 0
    key = db_key(site)
    capsys.readouterr()
    second = RecordingBoard(mac=MAC_B)
    assert run(provision_argv(site), second) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"device gate-01 is bound to board {MAC_A}, not to this board ({MAC_B})" in err
    assert "--rebind" in err and "old board stops working" in err
    assert second.names() == ["identify"]  # nothing erased, written or copied
    assert second.flash == bytearray(b"\xff" * len(second.flash))
    assert db_key(site) == key and db_mac(site) == MAC_A
    assert bytes.fromhex(board_config(first)["key"]) == key  # the first board still works


def test_rebind_moves_the_device_and_locks_the_old_board_out(site, capsys):
    first = RecordingBoard(mac=MAC_A)
    assert run(provision_argv(site), first) == 0
    old_key = db_key(site)
    import sqlite3
    with sqlite3.connect(site["db"]) as c:   # the old board's sequence epoch
        c.execute("UPDATE devices SET last_seq = 65540, resend_floor = 65539")
    second = RecordingBoard(mac=MAC_B)
    assert run(provision_argv(site, "--rebind"), second) == 0
    new_key = db_key(site)
    assert new_key != old_key and db_mac(site) == MAC_B
    with sqlite3.connect(site["db"]) as c:   # the new board counts from boot 1: a new epoch
        assert c.execute("SELECT last_seq, resend_floor, seq_base > 65540 FROM devices"
                         ).fetchone() == (0, 0, 1)
    assert bytes.fromhex(board_config(second)["key"]) == new_key
    out = capsys.readouterr().out
    assert f"moved from board {MAC_A} to this board ({MAC_B})" in out
    assert "the old board no longer works" in out and new_key.hex() not in out
    # The old board's next update is refused: it names the board the device moved to.
    first.files["config.json"] = json.dumps(board_config(first)).encode()
    first.calls.clear()
    assert run(update_argv(site), first) == 4
    err = capsys.readouterr().err
    assert f"bound to board {MAC_B}, but this board is {MAC_A}" in err
    assert "copy_files" not in first.names()


def test_device_added_without_a_mac_is_bound_on_first_provision(site, capsys):
    key = register_device(open_db(str(site["db"])), "gate-01", "gate")  # `tapkiosk device add`
    assert db_mac(site) is None
    board = RecordingBoard(mac=MAC_B)
    assert run(provision_argv(site), board) == 0
    assert db_mac(site) == MAC_B and db_key(site) == key
    assert bytes.fromhex(board_config(board)["key"]) == key
    assert run(provision_argv(site), RecordingBoard(mac=MAC_A)) == 4  # now it is bound


def test_board_reused_for_another_id_unbinds_the_old_one(site, capsys):
    board = RecordingBoard(mac=MAC_A)
    assert run(provision_argv(site), board) == 0
    assert run(provision_argv(site, device_id="gate-02"), RecordingBoard(mac=MAC_A)) == 0
    assert db_mac(site, "gate-02") == MAC_A and db_mac(site, "gate-01") is None
    assert "this board was gate-01 before: gate-01 has no board now" in capsys.readouterr().out


def test_image_leaves_the_binding_to_the_first_update(site, capsys):
    out_bin = site["tmp"] / "gate-01.bin"
    image_argv = ["image", "--firmware", str(site["fw"]), "--device-id", "gate-01", "--kind", "gate",
                  "--link", "serial", "--db", str(site["db"]), "--app-root", str(site["app"]),
                  "--out", str(out_bin)]
    assert run(image_argv) == 0
    assert db_mac(site) is None
    assert "binds it to the device" in capsys.readouterr().out
    # The image flashed on board A: its first update with --db binds it.
    files = read_all(mount(out_bin.read_bytes()[0x200000:]))
    board_a = RecordingBoard(mac=MAC_A, files={"config.json": files["config.json"]})
    assert run(update_argv(site), board_a) == 0
    assert db_mac(site) == MAC_A
    assert f"bound to this board ({MAC_A})" in capsys.readouterr().out
    # The same image on a second board: refused at its update, nothing copied.
    board_b = RecordingBoard(mac=MAC_B, files={"config.json": files["config.json"]})
    assert run(update_argv(site), board_b) == 4
    assert f"bound to board {MAC_A}, but this board is {MAC_B}" in capsys.readouterr().err
    assert "copy_files" not in board_b.names() and db_mac(site) == MAC_A
    # A new image for a bound device would clone it: refused, unless --rebind (new key, unbound).
    key = db_key(site)
    out_bin.unlink()
    assert run(image_argv) == 4
    assert "an image would make a second board" in capsys.readouterr().err
    assert db_key(site) == key and db_mac(site) == MAC_A
    assert run([*image_argv, "--rebind"]) == 0
    assert db_key(site) != key and db_mac(site) is None
    new_cfg = json.loads(read_all(mount(out_bin.read_bytes()[0x200000:]))["config.json"])
    assert bytes.fromhex(new_cfg["key"]) == db_key(site)


def test_device_list_shows_the_bound_mac(site, capsys):
    from host.cli.app import main as tapkiosk

    assert run(provision_argv(site), RecordingBoard(mac=MAC_A)) == 0
    register_device(open_db(str(site["db"])), "wash-3", "wash")
    capsys.readouterr()
    assert tapkiosk(["--db", str(site["db"]), "--json", "device", "list"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(d["device_id"], d["board_mac"]) for d in rows] == [("gate-01", MAC_A), ("wash-3", None)]
    assert tapkiosk(["--db", str(site["db"]), "device", "list"]) == 0
    assert MAC_A in capsys.readouterr().out


@pytest.mark.parametrize("stderr", ["serial link lost", ""])
def test_failed_board_read_never_puts_the_file_in_the_error(stderr):
    secret = "7b226b6579223a2231313131227d"   # a config.json line as the board prints it
    fake = [sys.executable, "-c",
            f"import sys; print('TK-FILE {secret}'); print({stderr!r}, file=sys.stderr, end=''); "
            "sys.exit(1)"]
    with pytest.raises(BoardError) as e:
        EspBoard("socket://127.0.0.1:9", mpremote=fake).read_file("config.json")
    assert secret not in str(e.value)
    assert stderr in str(e.value)


def test_provision_with_broker_acl_writes_the_acl_from_the_registered_devices(site, capsys):
    """issue #12: `flash provision --broker-acl FILE` gives the new reader its broker topics."""
    acl = site["tmp"] / "tapkiosk.acl"
    register_device(open_db(str(site["db"])), "gate-01", "gate")
    argv = provision_argv(site, "--wifi-ssid", "shop-wifi", "--wifi-password", "hunter2hunter2",
                          "--broker", "192.168.1.10", "--program", "2", "--mqtt-password", "pw",
                          "--broker-acl", str(acl), link="mqtt", kind="wash", device_id="wash-3")
    assert run(argv, RecordingBoard()) == 0
    text = acl.read_text()
    assert "user wash-3\ntopic write tapkiosk/v1/wash-3/up" in text and "user gate-01\n" in text
    assert "user tapkiosk-daemon\n" in text
    assert oct(os.stat(acl).st_mode & 0o777) == "0o640"
    assert f"broker ACL {acl}: 2 device(s)" in capsys.readouterr().out


def test_broker_acl_module_main(site, capsys):
    from host.site.broker_acl import main as broker_acl

    register_device(open_db(str(site["db"])), "wash-3", "wash")
    acl = site["tmp"] / "acl"
    assert broker_acl(["--db", str(site["db"]), str(acl)]) == 0
    assert "user wash-3" in acl.read_text() and "1 device(s)" in capsys.readouterr().out
    assert broker_acl(["--db", str(site["tmp"] / "nope.db"), str(acl)]) == 2
    assert broker_acl(["--db", str(site["db"]), str(site["tmp"] / "no-dir" / "acl")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "cannot write the broker ACL" in err
