# Runs on CPython (technician laptop): the one boundary to a real ESP32 board (esptool + mpremote).
"""Talking to an ESP32 on a serial port.

:class:`Board` is the interface the flash tool uses; :class:`EspBoard` implements it with
esptool's Python API (identify, erase, write) and mpremote (files, REPL, reset). Tests pass
a recording fake with the same methods. Errors are mapped to the technician's words by
:func:`classify_port_error`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tools.errors import (
    BoardError,
    FlashError,
    NoPort,
    NotInDownloadMode,
    PortBusy,
    PortError,
    PortPermission,
)

# USB bridges found on ESP32 boards: (vid, pid) -> name.
USB_BRIDGES: dict[tuple[int, int], str] = {
    (0x10C4, 0xEA60): "Silicon Labs CP210x",
    (0x1A86, 0x7523): "WCH CH340",
    (0x1A86, 0x5523): "WCH CH341",
    (0x1A86, 0x55D4): "WCH CH9102",
    (0x1A86, 0x55D3): "WCH CH343",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232",
    (0x0403, 0x6015): "FTDI FT231X",
    (0x303A, 0x1001): "Espressif USB-Serial/JTAG",
    (0x303A, 0x4001): "Espressif USB CDC",
}


@dataclass(frozen=True)
class ChipInfo:
    """What esptool learnt about the board: chip name, base MAC, flash size in bytes."""

    chip: str
    mac: str
    flash_size: int
    description: str = ""


@dataclass(frozen=True)
class PortInfo:
    """A serial port that looks like an ESP32 board."""

    device: str
    bridge: str
    description: str
    serial_number: str | None


class Board(Protocol):
    """Everything the flash tool asks of a board. ``port`` names it in messages."""

    port: str

    def identify(self) -> ChipInfo:
        """Connect to the ROM bootloader and return chip type, MAC and flash size."""
        ...

    def erase(self) -> None:
        """Erase the whole flash."""
        ...

    def write_flash(self, parts: Sequence[tuple[int, bytes]]) -> None:
        """Write each ``(address, data)`` to flash, showing progress."""
        ...

    def copy_files(self, files: Mapping[str, bytes]) -> None:
        """Copy ``files`` (board path -> bytes) to the running MicroPython filesystem."""
        ...

    def read_file(self, path: str) -> bytes | None:
        """Content of ``path`` on the board's filesystem, or None if it does not exist."""
        ...

    def reset(self) -> None:
        """Hard-reset the board so it boots MicroPython and runs main.py."""
        ...

    def exec(self, code: str, timeout: float = 30.0) -> str:
        """Run ``code`` on the board's REPL and return what it printed."""
        ...


def list_esp_ports(include_all: bool = False) -> list[PortInfo]:
    """Serial ports whose USB VID/PID is a bridge used on ESP32 boards (or every port)."""
    from serial.tools import list_ports

    out = []
    for p in sorted(list_ports.comports(), key=lambda p: p.device):
        bridge = USB_BRIDGES.get((p.vid, p.pid)) if p.vid is not None else None
        if bridge is None and not include_all:
            continue
        out.append(PortInfo(p.device, bridge or "unknown", p.description or "", p.serial_number))
    return out


_NOT_FOUND = re.compile(r"Errno 2\b|No such file|FileNotFoundError|does not exist|cannot find", re.I)
_PERMISSION = re.compile(r"Errno 13\b|Permission denied", re.I)
_BUSY = re.compile(
    r"Errno 16\b|Errno 11\b|busy|exclusively lock|Access is denied|in use by another program|failed to access",
    re.I,
)
_NO_SYNC = re.compile(
    r"Wrong boot mode|Failed to connect|No serial data received|Invalid head of packet|"
    r"getting no sync reply|Timed out waiting for packet",
    re.I,
)


def classify_port_error(text: str, port: str) -> FlashError:
    """Turn an esptool/pyserial/mpremote error text into the technician's error."""
    if _PERMISSION.search(text):
        return PortPermission(f"permission denied on {port}")
    if _NOT_FOUND.search(text):
        return NoPort(f"no serial port {port} (board unplugged, or another port name)")
    if _BUSY.search(text):
        return PortBusy(f"serial port {port} is busy: another program has it open")
    if _NO_SYNC.search(text):
        return NotInDownloadMode(f"the board on {port} did not enter download mode")
    last = text.strip().splitlines()[-1] if text.strip() else "no details"
    return BoardError(f"the board on {port} failed: {last}")


def check_port(port: str) -> None:
    """Fail early, with the technician's words, when ``port`` is missing or not accessible.

    Only for device paths (``/dev/...``); Windows COM names and URLs are left to esptool.
    """
    if not port.startswith("/dev/"):
        return
    if not os.path.exists(port):
        raise NoPort(f"no serial port {port} (board unplugged, or another port name)")
    if not os.access(port, os.R_OK | os.W_OK):
        raise PortPermission(f"permission denied on {port}")


class EspBoard:
    """A real board: esptool's Python API for the ROM bootloader, mpremote for MicroPython."""

    def __init__(self, port: str, *, baud: int = 460800, connect_attempts: int = 7,
                 mpremote: Sequence[str] | None = None) -> None:
        """Remember the port; nothing is opened until a method is called."""
        self.port = port
        self.baud = baud
        self.connect_attempts = connect_attempts
        self.mpremote = list(mpremote) if mpremote else [sys.executable, "-m", "mpremote"]

    # esptool side -----------------------------------------------------------------
    def _connect(self):
        """Open the port and sync with the ROM bootloader; returns an esptool loader."""
        from esptool.cmds import detect_chip
        from esptool.util import FatalError
        from serial import SerialException

        check_port(self.port)
        try:
            return detect_chip(self.port, connect_attempts=self.connect_attempts)
        except (FatalError, SerialException, OSError) as e:
            raise classify_port_error(str(e), self.port) from None

    def identify(self) -> ChipInfo:
        """Chip name, base MAC and flash size, read through the ROM bootloader."""
        from esptool.cmds import detect_flash_size, reset_chip
        from esptool.util import FatalError, flash_size_bytes

        esp = self._connect()
        try:
            with esp:
                mac = ":".join(f"{b:02x}" for b in esp.read_mac())
                size_name = detect_flash_size(esp)
                try:
                    description = esp.get_chip_description()
                except FatalError:
                    description = esp.CHIP_NAME
                info = ChipInfo(esp.CHIP_NAME, mac, flash_size_bytes(size_name) if size_name else 0,
                                description)
                reset_chip(esp, "hard-reset")  # leave the bootloader: MicroPython (if any) runs again
                return info
        except FatalError as e:
            raise classify_port_error(str(e), self.port) from None

    def erase(self) -> None:
        """Erase the whole flash (stub loader, so it takes seconds, not minutes)."""
        from esptool.cmds import erase_flash, run_stub
        from esptool.util import FatalError

        esp = self._connect()
        try:
            with esp:
                esp = run_stub(esp)
                erase_flash(esp)
        except FatalError as e:
            raise classify_port_error(str(e), self.port) from None

    def write_flash(self, parts: Sequence[tuple[int, bytes]]) -> None:
        """Write and verify ``parts`` at a fast baud rate, then hard-reset into the firmware."""
        from esptool.cmds import attach_flash, reset_chip, run_stub, write_flash
        from esptool.util import FatalError

        esp = self._connect()
        try:
            with esp:
                esp = run_stub(esp)
                if self.baud:
                    esp.change_baud(self.baud)
                attach_flash(esp)
                write_flash(esp, [(addr, bytes(data)) for addr, data in parts], flash_size="keep")
                reset_chip(esp, "hard-reset")
        except FatalError as e:
            raise classify_port_error(str(e), self.port) from None

    # mpremote side ----------------------------------------------------------------
    def _mpremote(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``mpremote connect PORT ARGS...``; return stdout or raise a FlashError."""
        check_port(self.port)
        try:
            proc = subprocess.run(
                [*self.mpremote, "connect", self.port, *args],
                capture_output=True, text=True, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            raise BoardError(f"the board on {self.port} did not answer within {timeout:.0f} s",
                             "press EN/RST on the board and run the command again") from None
        except FileNotFoundError:
            raise BoardError("mpremote is not installed", "run `make venv`") from None
        if proc.returncode != 0:
            # A failed read can still have printed a file (config.json holds the device key):
            # such lines never reach an error message.
            text = "\n".join(line for line in (proc.stderr + "\n" + proc.stdout).splitlines()
                             if line.strip() and not line.startswith("TK-FILE"))
            err = classify_port_error(text, self.port)
            if not isinstance(err, PortError):
                err = BoardError(
                    f"mpremote failed on {self.port}: "
                    f"{text.splitlines()[-1] if text else 'no output'}",
                    "check MicroPython is flashed (provision without --app-only) and the port is right",
                )
            raise err
        return proc.stdout

    def copy_files(self, files: Mapping[str, bytes]) -> None:
        """Stage ``files`` in a private temp folder and copy them with one mpremote call."""
        with tempfile.TemporaryDirectory(prefix="tapkiosk-board-") as tmp:
            os.chmod(tmp, 0o700)
            dirs = sorted({name.rsplit("/", 1)[0] for name in files if "/" in name})
            for name, data in files.items():
                dest = Path(tmp, name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
            args: list[str] = []
            for d in dirs:
                mk = f"import os\ntry:\n os.mkdir({'/' + d!r})\nexcept OSError:\n pass\n"
                args += ["exec", mk, "+"]
            for name in sorted(files):
                args += ["fs", "cp", str(Path(tmp, name)), ":/" + name, "+"]
            self._mpremote(*args[:-1], timeout=120.0)

    def read_file(self, path: str) -> bytes | None:
        """``path`` from the board, or None when it does not exist."""
        code = (
            "import sys, binascii\n"
            "try:\n"
            f" f = open({path!r}, 'rb')\n"
            "except OSError:\n"
            " print('TK-NOFILE')\n"
            "else:\n"
            " print('TK-FILE', binascii.hexlify(f.read()).decode())\n"
            " f.close()\n"
        )
        out = self.exec(code)
        for line in out.splitlines():
            if line.startswith("TK-FILE "):
                return bytes.fromhex(line[8:].strip())
            if line.startswith("TK-NOFILE"):
                return None
        raise BoardError(f"unexpected answer from the board on {self.port} while reading {path}")

    def reset(self) -> None:
        """Hard reset through ``machine.reset()`` (mpremote's ``reset``)."""
        self._mpremote("reset", timeout=20.0)

    def exec(self, code: str, timeout: float = 30.0) -> str:
        """Run ``code`` with ``mpremote exec`` and return its output."""
        return self._mpremote("exec", code, timeout=timeout)

