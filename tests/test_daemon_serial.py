"""Daemon over serial: a simulated device through pyserial socket:// (sim/cable.py) and a pty."""

from __future__ import annotations

import os
import tty
from pathlib import Path

import pytest

from protocol import codes
from sim.cable import Cable
from sim.device import FdTransport, SerialTransport, SimDevice
from conftest import wait_until
from daemon_support import (CARD, KEY_A, KEY_B, InProcessDaemon, balance, ledger_ok, make_site,
                                 tap_count)


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, dict]:
    path = tmp_path / "site.db"
    return path, make_site(path)


def test_tap_over_socket_cable(site: tuple[Path, dict]) -> None:
    path, ids = site
    cable = Cable().start()
    d = InProcessDaemon(["--db", str(path), "--serial", cable.url_b])
    try:
        # Both the cable's accept (bytes for an end not accepted yet are lost) and the link's
        # open (pyserial's open() drops what arrived before it finished): a HELLO sent
        # between the two was lost either way (NoReply, loaded).
        wait_until(lambda: cable.connected["b"].is_set() and d.daemon.links[0].opened.is_set(),
                   what="daemon on the cable, its line open")
        dev = SimDevice("kiosk-1", KEY_A, "kiosk", SerialTransport(cable.url_a))
        w = dev.hello()
        assert w["heartbeat_s"] == 30 and w["cfg_version"] >= 1
        wait_until(lambda: dev.cfg_version == w["cfg_version"], what="CONFIG applied")
        r = dev.tap(CARD, amount_fen=1250)
        assert r["verdict"] == codes.GRANT and codes.reason_name(r["reason"]) == "ok"
        assert r["balance"] == balance(path, ids["m1"]) < 10000
        pong = dev.ping(1234)
        assert pong["nonce"] == 1234 and pong["host_time"] > 0
        dev.close()
    finally:
        d.stop()
        cable.stop()
    assert tap_count(path) == 1 and ledger_ok(path)


def test_tap_over_pty(site: tuple[Path, dict]) -> None:
    path, ids = site
    master, slave = os.openpty()
    tty.setraw(master)
    d = InProcessDaemon(["--db", str(path), "--serial", os.ttyname(slave)])
    try:
        link = d.daemon.links[0]
        wait_until(link.opened.is_set, what="pty open")
        dev = SimDevice("kiosk-1", KEY_A, "kiosk", FdTransport(master))
        dev.hello()
        results = [dev.tap(CARD, amount_fen=100) for _ in range(5)]
        assert [r["verdict"] for r in results] == [codes.GRANT] * 5
        assert results[-1]["balance"] == balance(path, ids["m1"])
        # Lone taps on an idle writer: decided by the line's reader thread itself (a few may
        # queue behind the daemon's own periodic writes).
        assert 1 <= d.daemon.writer.led <= 5 == d.daemon.writer.taps
        # The line is bound to kiosk-1: a kiosk-2 frame on it is refused, nothing applied.
        other = SimDevice("kiosk-2", KEY_B, "kiosk", None)
        _, raw = other.tap_frame(CARD, amount_fen=100)
        dev.send(raw)
        wait_until(lambda: d.metrics.value("tapkiosk_frames_rejected_total",
                                         cause="line_mismatch") == 1, what="line mismatch")
        dev.close()
    finally:
        d.stop()
        os.close(master)
        os.close(slave)
    assert tap_count(path) == 5 and ledger_ok(path)


def test_faulty_cable_garbage_flips_drops_split_frames(site: tuple[Path, dict]) -> None:
    """Damage in both directions: every tap is decided exactly once anyway."""
    path, ids = site
    cable = Cable(chunk=7, seed=7).start()
    d = InProcessDaemon(["--db", str(path), "--serial", cable.url_b])
    try:
        # Both the cable's accept (bytes for an end not accepted yet are lost) and the link's
        # open (pyserial's open() drops what arrived before it finished): a HELLO sent
        # between the two was lost either way (NoReply, loaded).
        wait_until(lambda: cable.connected["b"].is_set() and d.daemon.links[0].opened.is_set(),
                   what="daemon on the cable, its line open")
        dev = SimDevice("kiosk-1", KEY_A, "kiosk", SerialTransport(cable.url_a))
        dev.hello()
        cable.set_faults("ab", flip=0.002, drop=0.001, garbage=0.05)
        cable.set_faults("ba", flip=0.002, drop=0.001, garbage=0.05)
        dev.transport.write_raw(b"\x00\x07garbage\xff\x00\x00\x01\x02")
        results = {}
        for _ in range(20):
            seq, raw = dev.tap_frame(CARD, amount_fen=10)
            results[seq] = dev.deliver(raw, attempts=50, timeout=0.2)
        cable.set_faults("ab")
        cable.set_faults("ba")
        dev.close()
        damaged = d.metrics.value("tapkiosk_frames_rejected_total", cause="bad_frame")
    finally:
        d.stop()
        cable.stop()
    assert cable.stats["flipped"] + cable.stats["dropped"] + cable.stats["garbage"] > 0
    assert damaged > 0
    assert all(r["verdict"] == codes.GRANT for r in results.values())
    assert tap_count(path, "kiosk-1") == 20
    # Every tap was charged once, in order: balances strictly fall and the last one is what
    # the store holds (a tap applied twice would need a second row under UNIQUE(device, seq)).
    balances = [results[s]["balance"] for s in sorted(results)]
    assert all(a > b for a, b in zip(balances, balances[1:]))
    assert balance(path, ids["m1"]) == balances[-1]
    assert ledger_ok(path)


def test_921600_baud_end_to_end(site: tuple[Path, dict]) -> None:
    """921600 baud (common on ESP32 USB bridges): tools/flash.py writes it, the firmware's
    config checker keeps it and opens its UART at it, the daemon opens its port at it and
    a tap over that line is decided."""
    import json
    import sys

    from conftest import ROOT
    from tools.flash import build_config, config_bytes

    cfg = json.loads(config_bytes(build_config(
        {"device_id": "kiosk-1", "kind": "kiosk", "link": "serial", "amount": "1.00",
         "baud": 921600}, key=KEY_A)))
    assert cfg["serial"]["baud"] == 921600
    opened: dict = {}

    class Machine:
        @staticmethod
        def UART(uart_id, **kw):  # noqa: N802 - machine.UART's name
            opened.update(kw, id=uart_id)
            return object()

    sys.path.insert(0, str(ROOT / "firmware"))
    try:
        import config as fw_config
        from link_serial import SerialLink as FirmwareLink

        s = fw_config.check(cfg).serial
        FirmwareLink(Machine, s["uart"], s["baud"], s.get("tx"), s.get("rx"))
    finally:
        sys.path.remove(str(ROOT / "firmware"))
    assert opened["baudrate"] == 921600

    path, ids = site
    master, slave = os.openpty()
    tty.setraw(master)
    d = InProcessDaemon(["--db", str(path), "--serial", os.ttyname(slave), "--baud", "921600"])
    try:
        link = d.daemon.links[0]
        wait_until(link.opened.is_set, what="pty open")
        assert link._port.baudrate == 921600
        dev = SimDevice("kiosk-1", KEY_A, "kiosk", FdTransport(master))
        dev.hello()
        r = dev.tap(CARD, amount_fen=100)
        assert r["verdict"] == codes.GRANT and r["balance"] == balance(path, ids["m1"])
    finally:
        d.stop()
        os.close(master)
        os.close(slave)


def test_low_latency_asked_for_and_optional() -> None:
    """The link asks a tty for ASYNC_LOW_LATENCY (a USB bridge then hands bytes on at once, not
    after its latency timer); a port that cannot do it (a pty, socket://) still opens."""
    import serial

    from host.site.links.serial import _low_latency

    class Tty:
        asked: list[bool] = []

        def set_low_latency_mode(self, on: bool) -> None:
            self.asked.append(on)

    port = Tty()
    assert _low_latency(port) is True and port.asked == [True]
    assert _low_latency(object()) is False            # socket:// has no such call
    master, slave = os.openpty()
    try:
        pty = serial.Serial(os.ttyname(slave))
        assert _low_latency(pty) is False             # a pty refuses the ioctl: no error
        pty.close()
    finally:
        os.close(master)
        os.close(slave)
