# Runs on CPython (pytest): config.json building and validation in tools/flash.py.
"""build_config / write_config: defaults per reader bus, --pins overrides, refusals."""

from __future__ import annotations

import json
import stat

import pytest

from conftest import ROOT

from tools.flash import FEEDBACK, READER_PINS, SERIAL_LINK, build_config, config_bytes, parse_pins, write_config
from tools.errors import UsageError

KEY = bytes(range(32))
BASE = {"device_id": "kiosk-7", "kind": "kiosk", "link": "serial", "amount": "12.50"}
WIFI = {"link": "mqtt", "wifi_ssid": "shop", "wifi_password": "longenough", "mqtt_password": "pw-kiosk-7"}


def test_defaults_follow_the_contract():
    cfg = build_config(BASE, key=KEY)
    assert cfg["key"] == KEY.hex() and len(cfg["key"]) == 64
    assert cfg["serial"] == {"uart": 2, "baud": 115200, "tx": 17, "rx": 16} == SERIAL_LINK
    assert cfg["reader"] == {"bus": "hsu", **READER_PINS["hsu"]}
    assert cfg["feedback"] == FEEDBACK and cfg["feedback"]["relay"] == 26
    assert cfg["debounce_ms"] == 1500 and cfg["config_version"] == 1
    assert set(cfg) == {"device_id", "kind", "key", "link", "serial", "mqtt", "wifi", "reader", "feedback",
                        "debounce_ms", "config_version", "service", "amount", "direction"}


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
    # issue #20 item 9: GPIO1/GPIO3 are UART 0, the USB console the tool flashes through.
    ("link_tx=3,link_rx=1", "UART 0 RX, the USB console"),
    ("link_tx=1", "UART 0 TX, the USB console"),
    ("relay=3", "UART 0 RX"),
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
    ({**WIFI}, "--broker"),
    ({**WIFI, "broker": "h:99999"}, "bad --broker"),
    # issue #20 item 5: a Wi-Fi reader's own loopback is never the site PC's broker.
    ({**WIFI, "broker": "127.0.0.1"}, "is the reader itself"),
    ({**WIFI, "broker": "localhost:1883"}, "is the reader itself"),
    # the broker refuses anonymous readers; the ACL knows each reader by its device id.
    ({**WIFI, "broker": "h", "mqtt_password": None}, "--mqtt-password is required"),
    ({**WIFI, "broker": "h", "mqtt_user": "tapkiosk"}, "not the device id"),
])
def test_bad_values_are_refused(extra, words, monkeypatch):
    monkeypatch.delenv("TAPKIOSK_WIFI_PASSWORD", raising=False)
    monkeypatch.delenv("TAPKIOSK_MQTT_PASSWORD", raising=False)
    with pytest.raises(UsageError, match=words):
        build_config({**BASE, **extra}, key=KEY)


def test_open_wifi_and_default_broker_port():
    cfg = build_config({**BASE, **WIFI, "wifi_ssid": "guest", "wifi_password": "", "broker": "site-pc"},
                       key=KEY)
    assert cfg["wifi"] == {"ssid": "guest", "password": ""}
    # The reader logs in as its device id: the user the broker ACL gives its own topics.
    assert cfg["mqtt"] == {"broker": "site-pc", "port": 1883, "user": "kiosk-7", "password": "pw-kiosk-7"}


def test_mqtt_password_from_the_environment(monkeypatch):
    monkeypatch.setenv("TAPKIOSK_MQTT_PASSWORD", "from-env")
    cfg = build_config({**BASE, **WIFI, "mqtt_password": None, "broker": "10.0.0.2"}, key=KEY)
    assert cfg["mqtt"]["password"] == "from-env" and cfg["mqtt"]["user"] == "kiosk-7"


# issue #20 item 2: a wash bay or kiosk provisioned without its program or amount sent 0 in
# every TAP and the host refused every card (bad_service, "Invalid amount").
@pytest.mark.parametrize("args, settings", [
    ({"device_id": "wash-3", "kind": "wash", "program": 2}, {"service": 2, "amount": 0, "direction": 0}),
    ({"device_id": "kiosk-7", "kind": "kiosk", "amount": "12.50"}, {"service": 0, "amount": 1250, "direction": 0}),
    ({"device_id": "gate-01", "kind": "gate"}, {"service": 0, "amount": 0, "direction": 0}),
    ({"device_id": "gate-01", "kind": "gate", "direction": "in"}, {"service": 0, "amount": 0, "direction": 1}),
    ({"device_id": "gate-02", "kind": "gate", "direction": "out"}, {"service": 0, "amount": 0, "direction": 2}),
])
def test_each_kind_gets_what_its_taps_ask_for(args, settings):
    cfg = build_config(args, key=KEY)
    assert {k: cfg[k] for k in settings} == settings


@pytest.mark.parametrize("args, words", [
    ({"kind": "wash"}, "needs --program"),
    ({"kind": "wash", "program": 0}, "bad --program"),
    ({"kind": "wash", "program": 256}, "bad --program"),
    ({"kind": "kiosk"}, "needs --amount"),
    ({"kind": "kiosk", "amount": "0"}, "more than 0.00"),
    ({"kind": "kiosk", "amount": "12.505"}, "bad --amount"),
    ({"kind": "kiosk", "amount": "-1"}, "bad --amount"),
    ({"kind": "gate", "program": 1}, "--program is for wash readers"),
    ({"kind": "wash", "program": 1, "amount": "3"}, "--amount is for kiosk readers"),
    ({"kind": "kiosk", "amount": "3", "direction": "in"}, "--direction is for gate readers"),
    ({"kind": "gate", "direction": "up"}, "bad --direction"),
])
def test_kind_flags_are_required_and_checked(args, words):
    with pytest.raises(UsageError, match=words):
        build_config({"device_id": "r-1", "link": "serial", **args}, key=KEY)


def test_config_passes_the_firmware_checker():
    """What build_config writes is what firmware/config_check.py reads back (same keys, same codes)."""
    import sys

    sys.path.insert(0, str(ROOT / "firmware"))
    try:
        import config as fw_config

        for args in ({"device_id": "wash-3", "kind": "wash", "program": 2},
                     {"device_id": "kiosk-7", "kind": "kiosk", "amount": "12.50"},
                     {"device_id": "gate-02", "kind": "gate", "direction": "out"}):
            cfg = json.loads(config_bytes(build_config(args, key=KEY)))
            c = fw_config.check(cfg)
            assert (c.service, c.amount, c.direction) == (cfg["service"], cfg["amount"], cfg["direction"])
    finally:
        sys.path.remove(str(ROOT / "firmware"))
        sys.modules.pop("config", None)


def test_write_config_is_private_and_needs_a_key(tmp_path):
    path = write_config(build_config(BASE, key=KEY), tmp_path / "config.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_bytes())["key"] == KEY.hex()
    with pytest.raises(UsageError, match="no device key"):
        config_bytes(build_config(BASE))


def test_parse_pins_none_and_hex():
    assert parse_pins("irq=none, reset=0x4") == {"irq": None, "reset": 4}


def test_flash_tool_outside_the_venv_says_how_to_run_it():
    """issue #20 item 6: `python tools/flash.py` with a Python lacking the tool's packages printed a traceback."""
    import subprocess
    import sys

    # -S: no site-packages, as with a system python3 that never saw `make venv`.
    r = subprocess.run([sys.executable, "-S", str(ROOT / "tools" / "flash.py"), "ports"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "is not installed" in r.stderr and "make venv" in r.stderr
