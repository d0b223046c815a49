"""Daemon over MQTT with a real mosquitto: taps, retransmissions, status, security, broker crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol import codes
from protocol import packet as pk
from protocol.mac import Mac
from sim.device import MqttTransport, NoReply, Refused, SimDevice
from conftest import wait_until
from daemon_support import (CARD, CARD2, KEY_A, KEY_B, InProcessDaemon, balance, ledger_ok,
                                 make_site, tap_count)


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, dict]:
    path = tmp_path / "site.db"
    return path, make_site(path)


def _device(broker, dev_id: str, key: bytes, **kw) -> SimDevice:
    return SimDevice(dev_id, key, "kiosk", MqttTransport(broker.host, broker.port), **kw)


def _daemon(path: Path, broker, *extra: str) -> InProcessDaemon:
    d = InProcessDaemon(["--db", str(path), "--mqtt", broker.address, "--offline-after-s",
                         "60", *extra])
    link = d.daemon.links[0]
    wait_until(link.connected.is_set, what="daemon connected to the broker")
    return d


def test_tap_retransmit_status(site, broker) -> None:
    path, ids = site
    d = _daemon(path, broker)
    try:
        dev = _device(broker, "kiosk-1", KEY_A)
        # The retained status "online" proves nothing (anyone may publish it): the device is
        # online from its first authenticated frame.
        assert d.metrics.value("tapkiosk_devices_online") == 0
        dev.hello()
        assert d.metrics.value("tapkiosk_devices_online") == 1
        r = dev.tap(CARD, amount_fen=500)
        assert r["verdict"] == codes.GRANT and r["balance"] == balance(path, ids["m1"])
        before = r["balance"]
        # The device did not get the answer and sends the same frame again: same bytes back,
        # nothing applied twice.
        seq, raw = dev.tap_frame(CARD, amount_fen=700)
        first = dev.resend(raw)
        again = dev.resend(raw)
        assert first == again and first["balance"] < before
        assert first["balance"] == balance(path, ids["m1"])
        decisions = [x for x in dev.raw_in if x[1] == pk.DECISION]
        assert len(decisions) == 3 and decisions[-1] == decisions[-2]
        assert tap_count(path, "kiosk-1") == 2
        assert d.metrics.value("tapkiosk_retransmits_total") >= 1
        # Counted on the reply thread once the DECISION went out: wait for it.
        wait_until(lambda: d.metrics.value("tapkiosk_taps_total", verdict="grant",
                                           reason="ok") == 2, what="taps counted")
        dev.transport.close(graceful=False)   # the broker publishes the LWT "offline"
        wait_until(lambda: d.metrics.value("tapkiosk_devices_online") == 0, what="LWT offline")
    finally:
        d.stop()
    assert ledger_ok(path)


def test_security_refusals_counted_nothing_applied(site, broker) -> None:
    path, ids = site
    d = _daemon(path, broker)
    try:
        a = _device(broker, "kiosk-1", KEY_A)
        b = _device(broker, "kiosk-2", KEY_B)
        a.hello()
        bal0 = balance(path, ids["m1"])

        # Wrong MAC: the frame of kiosk-1 signed with kiosk-2's key.
        forged = SimDevice("kiosk-1", KEY_B, "kiosk")
        forged.boot = 9
        seq, raw = forged.tap_frame(CARD, amount_fen=100)
        a.send(raw)

        # Unknown device: no reply at all on MQTT, counted.
        ghost = SimDevice("ghost-9", KEY_A, "kiosk", MqttTransport(broker.host, broker.port))
        with pytest.raises(NoReply):
            ghost.tap(CARD, amount_fen=100, timeout=0.5)

        # Spoofing: kiosk-2 sends its own valid TAP on kiosk-1's topic.
        seq2, raw2 = b.tap_frame(CARD, amount_fen=100)
        b.transport.publish("tapkiosk/v1/kiosk-1/up", raw2)
        # ... and a frame saying it is kiosk-1 (MAC'd with kiosk-2's key) on its own topic.
        _, raw3 = forged.tap_frame(CARD, amount_fen=100)
        b.transport.publish("tapkiosk/v1/kiosk-2/up", raw3)

        # Replay: an old seq with new content is refused with ERROR replay.
        r = a.tap(CARD, amount_fen=100)
        assert r["verdict"] == codes.GRANT
        seq_old = a.ctr
        _, replay = a.frame(pk.TAP, {"uid": bytes.fromhex(CARD), "sak": 8, "flags": 0,
                                     "direction": 0, "service": 0, "amount": 999,
                                     "device_time": 0, "secure": b""}, seq=(1 << 16) | 1)
        a.send(replay)
        assert a.wait_error((1 << 16) | 1).code == codes.ERR_REPLAY
        assert seq_old > 1

        wait_until(lambda: d.metrics.value("tapkiosk_frames_rejected_total",
                                         cause="topic_mismatch") >= 2, what="spoofs counted")
        m = d.metrics
        assert m.value("tapkiosk_frames_rejected_total", cause="bad_mac", device="kiosk-1") == 1
        # The forged frame got no answer: an ERROR naming its seq would make kiosk-1 give up
        # on that seq. (The honest frames after it were answered, so it was handled.)
        with pytest.raises(NoReply):
            a.wait_error(seq, timeout=0.2)
        assert m.value("tapkiosk_frames_rejected_total", cause="unknown_device") >= 1
        assert m.value("tapkiosk_frames_rejected_total", cause="replay") == 1
    finally:
        d.stop()
    # Only the one honest tap was applied.
    assert tap_count(path) == 1
    assert balance(path, ids["m1"]) < bal0
    assert ledger_ok(path)


def test_broker_killed_and_restarted_mid_stream(site, broker) -> None:
    path, ids = site
    d = _daemon(path, broker)
    decided: dict[int, dict] = {}
    try:
        dev = _device(broker, "kiosk-1", KEY_A, timeout=3)
        dev.hello()
        for _ in range(5):
            seq, raw = dev.tap_frame(CARD, amount_fen=100)
            decided[seq] = dev.resend(raw)
        broker.stop()
        # Taps made while the broker is down stay in the outbox.
        for _ in range(3):
            with pytest.raises(NoReply):
                dev.tap(CARD, amount_fen=100, timeout=0.3)
        assert len(dev.outbox) == 3
        broker.start()
        wait_until(lambda: d.daemon.links[0].connected.is_set(), 20, what="daemon reconnected")
        wait_until(dev.transport.connected.is_set, 20, what="device reconnected")
        pending = list(dev.outbox)
        # The client library redelivers its unacknowledged publishes on reconnect; if the
        # daemon subscribed between two of them, a newer tap of the outbox reaches it first.
        # Make that happen every time: the newest tap goes before the others.
        dev.send(dev.outbox[pending[-1]])
        # What the firmware does on every reconnect (firmware/session.py): a HELLO whose
        # resend_floor is the oldest outbox seq, so the older taps count as late deliveries.
        dev.hello()
        for seq, res in zip(pending, dev.flush_outbox(timeout=10)):
            decided[seq] = res
        assert not dev.outbox
    finally:
        d.stop()
    assert len(decided) == 8 and all(r["verdict"] == codes.GRANT for r in decided.values())
    # Each tap applied exactly once, whatever the broker did.
    assert tap_count(path, "kiosk-1") == 8
    assert balance(path, ids["m1"]) == min(r["balance"] for r in decided.values())
    assert ledger_ok(path)


_ = (Refused, Mac, CARD2)


def test_gate_gets_allow_list_config_and_events_are_stored(tmp_path: Path, broker) -> None:
    from host.store.db import open_db
    path = tmp_path / "site.db"
    make_site(path, {"gate-1": ("gate", KEY_A)})
    d = _daemon(path, broker)
    try:
        dev = SimDevice("gate-1", KEY_A, "gate", MqttTransport(broker.host, broker.port))
        w = dev.hello()
        wait_until(lambda: dev.cfg_version == w["cfg_version"], what="CONFIG applied")
        # Only Bob (CARD2) holds a gym pass: the offline allow-list is exactly his card.
        assert dev.allow == {bytes.fromhex(CARD2)}
        seq = dev.event(codes.EV_READER_FAULT, 3, "pn532 timeout")
        wait_until(lambda: open_db(path).execute(
            "SELECT count(*) FROM device_events WHERE device_id='gate-1' AND seq=?",
            (seq,)).fetchone()[0] == 1, what="event stored")
        # Acknowledged: a new HELLO gets no CONFIG again.
        n = len(dev.configs)
        dev.hello()
        assert dev.ping()["nonce"] >= 0
        assert len(dev.configs) == n
    finally:
        d.stop()


def test_allow_list_change_pushes_config_while_gate_stays_connected(tmp_path: Path,
                                                                   broker) -> None:
    """Blocking a card (through the CLI, another process's write) while the gate is connected
    pushes a CONFIG with a higher version that no longer carries that card; selling a pass
    adds one."""
    from host.cli.app import main as cli
    path = tmp_path / "site.db"
    ids = make_site(path, {"gate-1": ("gate", KEY_A)})
    d = _daemon(path, broker, "--config-check-s", "1")
    try:
        dev = SimDevice("gate-1", KEY_A, "gate", MqttTransport(broker.host, broker.port))
        w = dev.hello()
        wait_until(lambda: dev.cfg_version == w["cfg_version"], what="CONFIG applied")
        assert dev.allow == {bytes.fromhex(CARD2)}
        v0 = dev.cfg_version
        assert cli(["--db", str(path), "card", "block", CARD2]) == 0
        wait_until(lambda: dev.cfg_version > v0, what="CONFIG pushed after the block")
        assert dev.allow == set()
        v1 = dev.cfg_version
        assert cli(["--db", str(path), "pass", "sell", str(ids["m1"]), "gym_month"]) == 0
        wait_until(lambda: dev.cfg_version > v1, what="CONFIG pushed after the pass sale")
        assert dev.allow == {bytes.fromhex(CARD)}
        # Acknowledged and unchanged: nothing more is pushed.
        wait_until(lambda: open_db_acked(path, "gate-1") == dev.cfg_version, what="ACK stored")
        n = len(dev.configs)
        assert d.daemon.service.check_configs() == 0 and len(dev.configs) == n
    finally:
        d.stop()


def open_db_acked(path: Path, device_id: str) -> int:
    """The acknowledged config version of a device, read from the database file."""
    from host.store.db import open_db
    db = open_db(path)
    try:
        row = db.execute("SELECT acked FROM device_config WHERE device_id = ?",
                         (device_id,)).fetchone()
        return row[0] if row else 0
    finally:
        db.conn.close()


def test_a_tap_of_a_loaded_device_skips_the_worker_only_when_nothing_is_queued() -> None:
    """Issue 19: a TAP of a device already in RAM is handled on paho's thread (one hand-off
    less) when the worker has nothing queued; behind a queued frame, or for a device not
    loaded yet, it waits its turn on the worker, so frames stay in arrival order."""
    import threading
    from types import SimpleNamespace

    from host.site.links.mqtt import MqttLink
    from host.site.metrics import Metrics

    calls: list[tuple[str, str, int]] = []

    class Service:
        metrics = Metrics()
        registry = SimpleNamespace(known=lambda dev: object() if dev == "kiosk-1" else None)

        def handle(self, raw, send, *, link, expect, received):  # noqa: ANN001 - a stand-in
            calls.append((threading.current_thread().name, expect, raw[1]))

    link = MqttLink("127.0.0.1", 1, Service())    # never started: no broker needed
    here = threading.current_thread().name
    tap, hello = bytes([1, pk.TAP, 0]), bytes([1, pk.HELLO, 0])

    def message(dev: str, payload: bytes) -> None:
        link._on_message(link.client, None, SimpleNamespace(topic=f"tapkiosk/v1/{dev}/up",
                                                           payload=payload))

    message("kiosk-1", tap)
    assert calls == [(here, "kiosk-1", pk.TAP)]
    message("kiosk-1", hello)          # not a TAP: queued
    message("kiosk-1", tap)            # behind the queued HELLO: queued too
    message("kiosk-9", tap)            # not loaded: queued
    assert len(calls) == 1
    link._worker.start()
    wait_until(lambda: len(calls) == 4, what="the worker handled the queued frames")
    assert calls[1:] == [("mqtt worker", "kiosk-1", pk.HELLO), ("mqtt worker", "kiosk-1", pk.TAP),
                         ("mqtt worker", "kiosk-9", pk.TAP)]
    wait_until(lambda: link._handled == link._queued == 3, what="the worker idle")
    message("kiosk-1", tap)
    assert calls[-1] == (here, "kiosk-1", pk.TAP)
    link._q.put(None)
    link._worker.join(5)
