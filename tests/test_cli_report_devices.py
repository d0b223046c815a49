"""`tapkiosk report devices`: the per-reader health view (refusals by cause, last error, last
boot, reader faults) beside the tap counts."""

from __future__ import annotations

import json
import time

from host.cli.app import main
from host.store import site_state
from host.store.db import open_db
from host.store.devices import register_device
from protocol import codes


def test_report_devices_shows_refusals_last_error_boot_and_reader_faults(tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.delenv("TAPKIOSK_DB", raising=False)
    path = tmp_path / "site.db"
    db = open_db(path)
    register_device(db, "gate-1", "gate")
    register_device(db, "wash-1", "wash")
    now = int(time.time())
    site_state.save_refusals(db, [("gate-1", "replay", 2, now - 60, "seq 65537 reused"),
                                  ("gate-1", "bad_mac", 5, now - 10, "bad MAC from gate-1")])
    site_state.save_event(db, (now - 3600, "gate-1", 65537, codes.EV_BOOT, "boot", 1, "fw"))
    site_state.save_event(db, (now - 30, "gate-1", 65538, codes.EV_READER_FAULT,
                               "reader_fault", 3, "no answer"))
    db.conn.close()
    assert main(["--db", str(path), "--json", "report", "devices"]) == 0
    rows = {r["device_id"]: r for r in json.loads(capsys.readouterr().out)}
    gate = rows["gate-1"]
    assert gate["refusals"] == "bad_mac:5 replay:2"
    assert gate["last_error"] == "bad MAC from gate-1" and gate["last_error_at"] == now - 10
    assert gate["booted_at"] == now - 3600 and gate["reader_faults"] == 1
    assert rows["wash-1"]["refusals"] == "" and rows["wash-1"]["booted_at"] is None
    assert main(["--db", str(path), "report", "devices"]) == 0
    out = capsys.readouterr().out
    assert "refusals" in out and "bad_mac:5 replay:2" in out
