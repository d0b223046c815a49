"""The daemon as a subprocess: SIGKILL mid-stream and restart (no acknowledged tap lost, none
applied twice, `tapkiosk verify` passes), SIGTERM exits 0, the metrics endpoint answers."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from conftest import free_port
from host.cli import app as cli
from protocol import codes
from sim.device import MqttTransport, SimDevice
from conftest import wait_until
from daemon_support import CARD, KEY_A, DaemonProcess, TapStream, make_site

N_TAPS = 40


def test_sigkill_mid_stream_then_restart(tmp_path: Path, broker) -> None:
    path = tmp_path / "site.db"
    ids = make_site(path)
    argv = ["--db", str(path), "--mqtt", broker.address]
    d = DaemonProcess(argv, tmp_path / "d1.log")
    dev = SimDevice("kiosk-1", KEY_A, "kiosk", MqttTransport(broker.host, broker.port))
    stream = TapStream(dev, N_TAPS, attempts=60).start()
    try:
        wait_until(lambda: len(stream.results) >= 10, 20, what="ten decisions")
        d.kill()                                   # SIGKILL mid-stream
        d.close()
        d = DaemonProcess(argv, tmp_path / "d2.log")
        stream.join(60)
        first = (tmp_path / "d1.log").read_text().count("tap device=kiosk-1")
        second = d.log().count("tap device=kiosk-1")
        # Both daemons decided taps: the kill did land mid-stream.
        assert 10 <= first < N_TAPS and second >= 1
    finally:
        dev.close()
        d.close()
    stream.assert_applied_once(path, ids["m1"], "kiosk-1")


def test_sigterm_is_graceful_and_metrics_served(tmp_path: Path, broker) -> None:
    path = tmp_path / "site.db"
    make_site(path)
    port = free_port()
    d = DaemonProcess(["--db", str(path), "--mqtt", broker.address, "--metrics-port", str(port)],
                      tmp_path / "d.log")
    try:
        dev = SimDevice("kiosk-1", KEY_A, "kiosk", MqttTransport(broker.host, broker.port))
        dev.hello()
        assert dev.tap(CARD, amount_fen=100)["verdict"] == codes.GRANT

        def counted() -> str | None:
            # Counted on the reply thread once the DECISION went out: it may trail the device.
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                          timeout=5).read().decode()
            return text if 'tapkiosk_taps_total{reason="ok",verdict="grant"} 1.0' in text \
                else None
        text = wait_until(counted, what="the tap counted")
        assert "tapkiosk_tap_latency_seconds_bucket" in text
        assert "tapkiosk_devices_online 1.0" in text
        dev.close()
        assert d.terminate() == 0
        log = d.log()
        assert "stopped" in log and "tap device=kiosk-1" in log and "verdict=grant" in log
    finally:
        d.close()
    assert cli.main(["--db", str(path), "verify"]) == 0
