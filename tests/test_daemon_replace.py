"""A replaced device in the running service (no restart): the new key's epoch starts again at
boot 1, its taps and voids are stored apart from the old board's under the same wire seqs, the
DECISION names the wire seq, and the old key's frames stay refused."""

from __future__ import annotations

import time

import pytest
from conftest import wait_until
from daemon_support import CARD, KEY_A, make_site
from host.rules.policy import load_policy
from host.site import registry as registry_mod
from host.site.metrics import Metrics
from host.site.service import Service
from host.site.writer import Writer
from host.store.db import open_db
from host.store.devices import device_key, replace_device
from protocol import packet as pk
from protocol.mac import Mac

WIRE = (1 << 16) | 2          # boot 1, second frame: both boards send it


def _tap(key: bytes, seq: int, amount: int) -> bytes:
    return pk.encode(pk.TAP, seq, "kiosk-1",
                     {"uid": bytes.fromhex(CARD), "sak": 0x20, "flags": 0, "direction": 0,
                      "service": 0, "amount": amount, "device_time": 0, "secure": b""},
                     Mac(key), pk.UP)


def _decision(raw: bytes, key: bytes) -> dict:
    p = pk.parse(raw)
    pk.verify(p, Mac(key), pk.DOWN)
    assert p.type == pk.DECISION
    return pk.decode_body(p.type, p.body)


@pytest.fixture
def svc(tmp_path, monkeypatch):
    monkeypatch.setattr(registry_mod, "KEY_RELOAD_S", 0.0)
    path = tmp_path / "site.db"
    make_site(path)
    w = Writer(str(path)).start()
    s = Service(w, Metrics(), load_policy())
    yield s
    s.close()
    w.stop()


def _handle(svc: Service, raw: bytes) -> list[bytes]:
    sent: list[bytes] = []
    svc.handle(raw, sent.append, link="test")
    wait_until(lambda: sent, timeout=10, what="an answer")
    return sent


def test_replaced_device_taps_and_voids_in_a_new_epoch(svc: Service) -> None:
    old = _handle(svc, _tap(KEY_A, WIRE, 100))
    assert _decision(old[0], KEY_A)["tap_seq"] == WIRE
    db = open_db(svc.writer.db_path)
    try:
        replace_device(db, "kiosk-1")
        new_key = device_key(db, "kiosk-1")
    finally:
        db.conn.close()
    # The wiped board: the same wire seq under the new key is a new tap, not the old one.
    d = _decision(_handle(svc, _tap(new_key, WIRE, 300))[0], new_key)
    assert d["tap_seq"] == WIRE and d["verdict"] == 1
    void = pk.encode(pk.VOID, WIRE + 1, "kiosk-1", {"tap_seq": WIRE}, Mac(new_key), pk.UP)
    v = _decision(_handle(svc, void)[0], new_key)
    assert v["tap_seq"] == WIRE
    # The old board's frame (captured) stays refused: no answer, nothing stored.
    sent: list[bytes] = []
    assert svc.handle(_tap(KEY_A, WIRE + 5, 100), sent.append, link="test") is None
    time.sleep(0.2)
    assert sent == []
    db = open_db(svc.writer.db_path)
    try:
        base = db.execute("SELECT seq_base FROM devices WHERE device_id = 'kiosk-1'"
                          ).fetchone()[0]
        taps = db.execute("SELECT seq, amount_fen FROM taps WHERE device_id = 'kiosk-1' "
                          "ORDER BY seq").fetchall()
        voids = db.execute("SELECT tap_seq, void_seq, outcome FROM tap_voids").fetchall()
    finally:
        db.conn.close()
    assert taps == [(WIRE, 100), (base + WIRE, 300)]
    assert voids == [(base + WIRE, base + WIRE + 1, "reversed")]
