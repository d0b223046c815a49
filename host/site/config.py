# Runs on CPython (host): the daemon's configuration — TOML file and command-line flags, validated.
"""Daemon configuration.

``load_config(argv)`` reads ``--config FILE`` (TOML) and the flags; a flag given on the command
line wins over the file. Every value is validated here; a bad one raises ``InputError`` with
one line naming the key, so the daemon exits 2 before opening anything.

TOML keys (all optional; the same names as the flags with ``_`` for ``-``)::

    db = "/var/lib/tapkiosk/site.db"
    serial = ["/dev/ttyUSB0", "socket://10.0.0.5:7000"]
    baud = 115200
    mqtt = "127.0.0.1:1883"
    mqtt_user = "tapkiosk"
    mqtt_password = "..."
    mqtt_tls = false
    mqtt_ca = "/etc/tapkiosk/ca.pem"
    mqtt_client_id = "tapkiosk-daemon"
    mqtt_process = true      # paho in a child process (false: in the daemon's own)
    nfc = "usb"              # or "udp:127.0.0.1:54321"
    nfc_device = "kiosk-pc"
    metrics_port = 9108
    metrics_addr = "127.0.0.1"
    heartbeat_s = 30
    offline_after_s = 90
    debounce_ms = 1500
    config_check_s = 5       # how often gates' allow-lists are checked for changes
    max_batch = 64
    policy = "/etc/tapkiosk/policy.toml"
    log_level = "info"

    [http]                   # the HTTP API and kiosk screens (host/web/config.py)
    address = "127.0.0.1"
    port = 8080

``--http ADDR:PORT`` overrides the address and port, ``--no-http`` turns the API off.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any, NoReturn

from host.errors import InputError
from host.store.db import default_db_path
from host.web.config import HttpConfig, http_config


@dataclass
class DaemonConfig:
    """Validated daemon settings."""

    db: str = ""
    serial: list[str] = field(default_factory=list)
    baud: int = 115200
    mqtt: str | None = None
    mqtt_user: str | None = None
    mqtt_password: str | None = None
    mqtt_tls: bool = False
    mqtt_ca: str | None = None
    mqtt_client_id: str = "tapkiosk-daemon"
    mqtt_process: bool = True
    nfc: str | None = None
    nfc_device: str | None = None
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    heartbeat_s: int = 30
    offline_after_s: int = 90
    debounce_ms: int = 1500
    config_check_s: int = 5
    max_batch: int = 64
    policy: str | None = None
    log_level: str = "info"
    http: HttpConfig = field(default_factory=HttpConfig)

    @property
    def mqtt_host(self) -> str:
        """Host part of ``mqtt``."""
        return split_host_port(self.mqtt or "", "mqtt")[0]

    @property
    def mqtt_port(self) -> int:
        """Port part of ``mqtt`` (1883, or 8883 with TLS, when not given)."""
        return split_host_port(self.mqtt or "", "mqtt", 8883 if self.mqtt_tls else 1883)[1]


_LOG_LEVELS = ("debug", "info", "warning", "error")


class _Parser(argparse.ArgumentParser):
    """argparse that raises InputError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{message} (see: {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The daemon's command line."""
    p = _Parser(prog="tapkiosk daemon", description="tapkiosk host daemon: serves readers over "
                "serial, MQTT and a host-attached NFC reader")
    p.add_argument("--config", help="TOML file with the settings below (flags win)")
    p.add_argument("--db", help="site database (default: $TAPKIOSK_DB or the user data dir)")
    p.add_argument("--serial", action="append", metavar="PORT",
                   help="serial port or pyserial URL (socket://h:p, rfc2217://h:p); repeatable")
    p.add_argument("--baud", help="serial baud rate (default 115200)")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="MQTT broker")
    p.add_argument("--mqtt-user")
    p.add_argument("--mqtt-password")
    p.add_argument("--mqtt-tls", action="store_const", const=True, default=None,
                   help="TLS to the broker (with --mqtt-ca)")
    p.add_argument("--mqtt-ca", metavar="FILE", help="CA certificate file for --mqtt-tls")
    p.add_argument("--mqtt-client-id", help="fixed client id of the persistent session")
    p.add_argument("--mqtt-process", choices=("on", "off"),
                   help="paho in a child process (on, the default) or in the daemon's (off)")
    p.add_argument("--nfc", metavar="PATH", help="nfcpy reader: usb, usb:BUS:DEV, udp:HOST:PORT")
    p.add_argument("--nfc-device", metavar="ID", help="registered device the NFC reader acts as")
    p.add_argument("--metrics-port", help="serve Prometheus metrics on this port (0 = any)")
    p.add_argument("--metrics-addr", help="address of the metrics endpoint (default 127.0.0.1)")
    p.add_argument("--heartbeat-s", help="heartbeat period announced to devices (s)")
    p.add_argument("--offline-after-s", help="silence after which a device is offline (s)")
    p.add_argument("--debounce-ms", help="card debounce announced to devices (ms)")
    p.add_argument("--config-check-s", help="how often connected gates' allow-lists are "
                   "checked for changes and a new CONFIG pushed (s, default 5)")
    p.add_argument("--max-batch", help="most taps in one database transaction")
    p.add_argument("--policy", help="policy TOML file (default: the shipped policy)")
    p.add_argument("--log-level", help="debug, info, warning or error")
    p.add_argument("--http", metavar="ADDR:PORT",
                   help="serve the HTTP API here (default 127.0.0.1:8080; port 0 = any)")
    p.add_argument("--no-http", action="store_true", default=None,
                   help="do not serve the HTTP API")
    return p


def split_host_port(text: str, what: str, default_port: int | None = None) -> tuple[str, int]:
    """``"host:port"`` -> (host, port); raises InputError."""
    host, sep, port = str(text).rpartition(":")
    if not sep:
        host, port = str(text), ""
    if not host:
        raise InputError(f"bad {what} {text!r}: expected HOST:PORT")
    if not port:
        if default_port is None:
            raise InputError(f"bad {what} {text!r}: expected HOST:PORT")
        return host, default_port
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise InputError(f"bad {what} {text!r}: port must be 1..65535")
    return host, int(port)


def _int(value: Any, key: str, lo: int, hi: int) -> int:
    if isinstance(value, bool):
        raise InputError(f"bad {key} {value!r}: expected a whole number {lo}..{hi}")
    if isinstance(value, str):
        v = value.strip()
        if not (v.isascii() and v.isdigit()):
            raise InputError(f"bad {key} {value!r}: expected a whole number {lo}..{hi}")
        value = int(v)
    if not isinstance(value, int) or not lo <= value <= hi:
        raise InputError(f"bad {key} {value!r}: expected a whole number {lo}..{hi}")
    return value


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise InputError(f"bad {key} {value!r}: expected non-empty text")
    return value


def load_config(argv: list[str]) -> DaemonConfig:
    """Parse flags and the optional TOML file into a validated DaemonConfig."""
    args = build_parser().parse_args(argv)
    raw: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, "rb") as fh:
                raw = tomllib.load(fh)
        except OSError as e:
            raise InputError(f"cannot read config {args.config}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"bad config {args.config}: {e}") from None
        known = {f.name for f in fields(DaemonConfig)}
        for k in raw:
            if k not in known:
                raise InputError(f"bad config {args.config}: unknown key {k!r}")
    http = raw.get("http")
    if http is not None and not isinstance(http, dict):
        raise InputError("bad http: expected a [http] table")
    http = dict(http or {})
    if args.http is not None:
        host, port = _http_flag(args.http)
        http.update(address=host, port=port)
    if args.no_http:
        http["enabled"] = False
    for k, v in vars(args).items():
        if k not in ("config", "http", "no_http") and v is not None:
            raw[k] = v
    raw["http"] = http
    return validate(raw)


def _http_flag(text: str) -> tuple[str, int]:
    """``--http ADDR:PORT`` (port 0 allowed: any free port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise InputError(f"bad --http {text!r}: expected ADDR:PORT (port 0..65535)")
    return host.strip("[]"), int(port)


def validate(raw: dict[str, Any]) -> DaemonConfig:
    """Check every value of ``raw`` (TOML or flags) and build the DaemonConfig."""
    c = DaemonConfig()
    c.db = _str(raw.get("db") or default_db_path(), "db")
    serial = raw.get("serial", [])
    if isinstance(serial, str):
        serial = [serial]
    if not isinstance(serial, list) or not all(isinstance(s, str) and s for s in serial):
        raise InputError(f"bad serial {serial!r}: expected a list of ports")
    if len(set(serial)) != len(serial):
        raise InputError("bad serial: the same port is given twice")
    c.serial = list(serial)
    c.baud = _int(raw.get("baud", c.baud), "baud", 50, 4_000_000)
    if raw.get("mqtt") is not None:
        c.mqtt = _str(raw["mqtt"], "mqtt")
    for k in ("mqtt_user", "mqtt_password", "mqtt_ca", "nfc", "nfc_device", "policy"):
        if raw.get(k) is not None:
            setattr(c, k, _str(raw[k], k))
    if raw.get("mqtt_client_id") is not None:
        c.mqtt_client_id = _str(raw["mqtt_client_id"], "mqtt_client_id")
    proc = raw.get("mqtt_process", True)
    proc = {"on": True, "off": False}.get(proc, proc) if isinstance(proc, str) else proc
    if not isinstance(proc, bool):
        raise InputError(f"bad mqtt_process {proc!r}: expected true or false")
    c.mqtt_process = proc
    tls = raw.get("mqtt_tls", False)
    if not isinstance(tls, bool):
        raise InputError(f"bad mqtt_tls {tls!r}: expected true or false")
    c.mqtt_tls = tls
    if c.mqtt is not None:
        split_host_port(c.mqtt, "mqtt", 1883)
    if c.mqtt_tls and c.mqtt is None:
        raise InputError("mqtt_tls needs mqtt HOST:PORT")
    if c.mqtt_ca is not None and not os.path.isfile(c.mqtt_ca):
        raise InputError(f"bad mqtt_ca {c.mqtt_ca!r}: no such file")
    if (c.mqtt_user is None) != (c.mqtt_password is None):
        raise InputError("mqtt_user and mqtt_password go together")
    if c.nfc is not None:
        if not (c.nfc == "usb" or c.nfc.startswith(("usb:", "udp:", "tty:"))):
            raise InputError(f"bad nfc {c.nfc!r}: use usb, usb:BUS:DEV, tty:PORT or udp:HOST:PORT")
        if c.nfc_device is None:
            raise InputError("nfc needs nfc_device: the registered device the reader acts as")
    if raw.get("metrics_port") is not None:
        c.metrics_port = _int(raw["metrics_port"], "metrics_port", 0, 65535)
    if raw.get("metrics_addr") is not None:
        c.metrics_addr = _str(raw["metrics_addr"], "metrics_addr")
    c.heartbeat_s = _int(raw.get("heartbeat_s", c.heartbeat_s), "heartbeat_s", 1, 3600)
    c.offline_after_s = _int(raw.get("offline_after_s", c.offline_after_s), "offline_after_s",
                             1, 3600)
    if c.offline_after_s < c.heartbeat_s:
        raise InputError(f"bad offline_after_s {c.offline_after_s}: must be >= heartbeat_s "
                         f"({c.heartbeat_s})")
    c.debounce_ms = _int(raw.get("debounce_ms", c.debounce_ms), "debounce_ms", 0, 60000)
    c.max_batch = _int(raw.get("max_batch", c.max_batch), "max_batch", 1, 1024)
    c.config_check_s = _int(raw.get("config_check_s", c.config_check_s), "config_check_s",
                            1, 3600)
    level = raw.get("log_level", c.log_level)
    if level not in _LOG_LEVELS:
        raise InputError(f"bad log_level {level!r}: use {', '.join(_LOG_LEVELS)}")
    c.log_level = level
    c.http = http_config(raw.get("http"))
    if not c.serial and c.mqtt is None and c.nfc is None:
        raise InputError("nothing to serve: give --serial PORT, --mqtt HOST:PORT or --nfc PATH")
    return c
