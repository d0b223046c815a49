"""Daemon over serial: a simulated device through pyserial socket:// (sim/cable.py) and a pty."""

from __future__ import annotations

import os
import tty
from pathlib import Path

import pytest

from host import service as service_mod
from protocol import codes
from sim.cable import Cable
from sim.device import NoReply, Refused, SerialTransport, SimDevice
from test_daemon_support import (CARD, KEY_A, InProcessDaemon, balance, ledger_ok, make_site,
                                 tap_count, wait_for)


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, dict]:
    path = tmp_path / "site.db"
    return path, make_site(path)


def test_tap_over_socket_cable(site: tuple[Path, dict]) -> None:
    path, ids = site
    cable = Cable().start()
    d = InProcessDaemon(["--db", str(path), "--serial", cable.url_b])
    try:
        wait_for(lambda: cable.connected["b"].is_set(), what="daemon on the cable")
        dev = SimDevice("kiosk-1", KEY_A, "kiosk", SerialTransport(cable.url_a))
        w = dev.hello()
        assert w["heartbeat_s"] == 30 and w["cfg_version"] >= 1
        wait_for(lambda: dev.cfg_version == w["cfg_version"], what="CONFIG applied")
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
