# Runs on CPython (pytest): config.json building and validation in tools/flash.py.
"""build_config / write_config: defaults per reader bus, --pins overrides, refusals."""

from __future__ import annotations

import json
import stat

import pytest

from tools.flash import FEEDBACK, READER_PINS, SERIAL_LINK, build_config, config_bytes, parse_pins, write_config
from tools.errors import UsageError

KEY = bytes(range(32))
BASE = {"device_id": "kiosk-7", "kind": "kiosk", "link": "serial"}


def test_defaults_follow_the_contract():
    cfg = build_config(BASE, key=KEY)
    assert cfg["key"] == KEY.hex() and len(cfg["key"]) == 64
    assert cfg["serial"] == {"uart": 2, "baud": 115200, "tx": 17, "rx": 16} == SERIAL_LINK
    assert cfg["reader"] == {"bus": "hsu", **READER_PINS["hsu"]}
    assert cfg["feedback"] == FEEDBACK and cfg["feedback"]["relay"] == 26
    assert cfg["debounce_ms"] == 1500 and cfg["config_version"] == 1
    assert set(cfg) == {"device_id", "kind", "key", "link", "serial", "mqtt", "wifi", "reader", "feedback",
                        "debounce_ms", "config_version"}


@pytest.mark.parametrize("reader, bus", [("pn532-hsu", "hsu"), ("pn532-i2c", "i2c"), ("pn532-spi", "spi")])
def test_each_bus_has_its_own_pins(reader, bus):
    cfg = build_config({**BASE, "reader": reader}, key=KEY)
    assert cfg["reader"] == {"bus": bus, **READER_PINS[bus]}


def test_pins_override_reader_feedback_and_link():
    cfg = build_config({**BASE, "reader": "pn532-spi", "pins": "cs=15,buzzer=none,link_tx=14,link_rx=34"}, key=KEY)
    assert cfg["reader"]["cs"] == 15 and cfg["feedback"]["buzzer"] is None
    assert cfg["serial"]["tx"] == 14 and cfg["serial"]["rx"] == 34


@pytest.mark.parametrize("pins, words", [
    ("sda=21", "not used by a pn532-hsu"),
    ("tx=7", "drives the flash chip"),
    ("relay=36", "input-only"),
    ("relay=32", "both"),
    ("uart=0", "UART 0"),
    ("uart=2", "both use UART 2"),
    ("relay_active=3", "0 or 1"),
    ("tx", "NAME=GPIO"),
    ("foo=1", "unknown pin"),
    ("tx=abc", "must be a number"),
])
def test_bad_pins_are_refused(pins, words):
    with pytest.raises(UsageError, match=words):
        build_config({**BASE, "pins": pins}, key=KEY)


@pytest.mark.parametrize("extra, words", [
    ({"device_id": "a/b"}, "bad device id"),
    ({"device_id": "x" * 17}, "bad device id"),
    ({"kind": "door"}, "bad --kind"),
    ({"link": "ble"}, "bad --link"),
    ({"reader": "rc522"}, "bad --reader"),
    ({"baud": 12345}, "bad --baud"),
    ({"link": "mqtt", "wifi_ssid": "shop", "wifi_password": "short", "broker": "h"}, "8 to 63"),
    ({"link": "mqtt", "wifi_ssid": "shop", "wifi_password": "longenough"}, "--broker"),
    ({"link": "mqtt", "wifi_ssid": "shop", "wifi_password": "longenough", "broker": "h:99999"}, "bad --broker"),
])
def test_bad_values_are_refused(extra, words, monkeypatch):
    monkeypatch.delenv("TAPKIOSK_WIFI_PASSWORD", raising=False)
    with pytest.raises(UsageError, match=words):
        build_config({**BASE, **extra}, key=KEY)


def test_open_wifi_and_default_broker_port():
    cfg = build_config({**BASE, "link": "mqtt", "wifi_ssid": "guest", "wifi_password": "", "broker": "site-pc"},
                       key=KEY)
    assert cfg["wifi"] == {"ssid": "guest", "password": ""}
    assert cfg["mqtt"] == {"broker": "site-pc", "port": 1883, "user": None, "password": None}


def test_write_config_is_private_and_needs_a_key(tmp_path):
    path = write_config(build_config(BASE, key=KEY), tmp_path / "config.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_bytes())["key"] == KEY.hex()
    with pytest.raises(UsageError, match="no device key"):
        config_bytes(build_config(BASE))


def test_parse_pins_none_and_hex():
    assert parse_pins("irq=none, reset=0x4") == {"irq": None, "reset": 4}
