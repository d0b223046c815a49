"""The fleet's host side without a reader: bundles, rollouts and waves in the store, the
daemon's update job (chunks wait for taps), `tapkiosk fleet`, `tools/flash.py bundle`."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import Future
from types import SimpleNamespace

import pytest

from host.cli.app import main as tapkiosk
from host.errors import Conflict, InputError, NotFound
from host.site.update import Job, Updates
from host.store import fleet
from host.store.db import open_db
from host.store.devices import register_device
from protocol import ota
from tools.appfiles import build_bundle
from tools.flash import main as flash

FILES = {"app.mpy": b"A" * 300, "protocol/packet.mpy": b"P" * 100, "main.py": b"stub"}


def _db():
    db = open_db(None)
    for d in ("g1", "g2", "g3"):
        register_device(db, d, "gate")
    return db


def test_bundle_manifest_names_every_file_but_the_boot_stub():
    blob = build_bundle(FILES, "1.2.3")
    man = fleet.parse_bundle(blob)
    assert man["version"] == "1.2.3"
    assert [f[0] for f in man["files"]] == ["app.mpy", "protocol/packet.mpy"]
    assert man["files"][0][2] == hashlib.sha256(b"A" * 300).hexdigest()


@pytest.mark.parametrize("change, message", [
    (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "does not match its manifest hash"),
    (lambda b: b + b"x", "bytes its manifest does not name"),
    (lambda b: b"\x00\x00\x00\x05nope!", "manifest unreadable"),
    (lambda b: b"\x00", "too short"),
])
def test_a_changed_or_foreign_bundle_is_refused(change, message):
    with pytest.raises(InputError, match=message):
        fleet.parse_bundle(change(build_bundle(FILES, "1.2.3")))


def test_rollout_waves_idempotence_and_refusals():
    db = _db()
    blob = build_bundle(FILES, "1.2.3")
    r = fleet.add_rollout(db, blob, ["g1", "g2", "g3"], 1, 100)
    assert r["new"]
    assert fleet.add_rollout(db, blob, ["g1", "g2", "g3"], 1, 101) == {**r, "new": False}
    rows = {j["device_id"]: j for j in fleet.rollout_rows(db, r["rollout"])}
    assert [rows[d]["state"] for d in ("g1", "g2", "g3")] == ["pending", "waiting", "waiting"]
    assert rows["g1"]["chunks"] == (len(blob) + 191) // 192
    with pytest.raises(Conflict):
        fleet.add_rollout(db, build_bundle(FILES, "1.2.4"), ["g2"], 0, 102)
    with pytest.raises(NotFound):
        fleet.add_rollout(db, blob, ["nope"], 0, 102)
    with pytest.raises(InputError):
        fleet.add_rollout(db, blob, ["g1"], 2, 102)
    # The canary is not healthy yet: wave 2 waits; once it is, wave 2 starts.
    fleet.advance_waves(db, 103)
    assert [j["state"] for j in fleet.rollout_rows(db, r["rollout"])][1:] == ["waiting"] * 2
    fleet.set_job(db, rows["g1"]["id"], "healthy", 0, "", 104)
    fleet.advance_waves(db, 105)
    assert [j["state"] for j in fleet.rollout_rows(db, r["rollout"])] == ["healthy", "pending",
                                                                           "pending"]
    # A job that is done stays done.
    fleet.set_job(db, rows["g1"]["id"], "failed", 0, "late", 106)
    assert fleet.rollout_rows(db, r["rollout"])[0]["state"] == "healthy"


def test_a_failed_canary_cancels_the_second_wave():
    db = _db()
    r = fleet.add_rollout(db, build_bundle(FILES, "1.2.3"), ["g1", "g2"], 1, 100)
    fleet.set_job(db, fleet.rollout_rows(db, r["rollout"])[0]["id"], "rolled_back", 0, "x", 101)
    fleet.advance_waves(db, 102)
    assert [j["state"] for j in fleet.rollout_rows(db, r["rollout"])] == ["rolled_back",
                                                                           "cancelled"]


class _Writer:
    def __init__(self):
        self.db = _db()

    def call(self, fn):
        f: Future = Future()
        f.set_result(fn(self.db))
        return f


class _Gate:
    def __init__(self):
        self.taps = 0

    def busy(self, device_id):
        return self.taps > 0


class _Registry:
    def __init__(self, st):
        self.st = st

    def known(self, device_id):
        return self.st if device_id == self.st.device_id else None

    def encode(self, st, ptype, fields):
        return (ptype, fields)


def _updates():
    sent = []
    st = SimpleNamespace(device_id="g1", send=sent.append, online=True)
    gate = _Gate()
    u = Updates(_Writer(), _Registry(st), gate, reader=None)
    blob = bytes(range(256)) * 4
    job = Job(7, "g1", "1.2.3", blob, "sending")
    u._jobs["g1"] = job
    return u, st, gate, job, sent


def test_a_chunk_waits_while_a_tap_of_that_reader_is_in_flight():
    u, st, gate, job, sent = _updates()
    u.pump()
    assert [p for p, _f in sent] == [ota.UPDATE_BEGIN]
    assert sent[0][1]["sha256"] == hashlib.sha256(job.blob).digest()
    gate.taps = 1
    u.on_update_status(st, {"update_id": 7, "have": 3, "state": ota.UPD_RECEIVING, "code": 0})
    u.pump()
    assert len(sent) == 1  # held back: a tap is being decided
    gate.taps = 0
    u.pump()
    assert sent[1] == (ota.UPDATE_CHUNK, {"update_id": 7, "index": 3,
                                         "data": job.blob[3 * 192:4 * 192]})
    u.pump()
    assert len(sent) == 2  # one chunk per answer
    # An answer for another update changes nothing.
    u.on_update_status(st, {"update_id": 8, "have": 0, "state": ota.UPD_RECEIVING, "code": 0})
    assert len(sent) == 2


def test_reader_answers_move_the_job():
    u, st, gate, job, sent = _updates()
    u.on_update_status(st, {"update_id": 7, "have": 0, "state": ota.UPD_FAILED,
                            "code": ota.UPD_ERR_FILE_HASH})
    assert job.state == "failed"
    u, st, gate, job, sent = _updates()
    u.on_update_status(st, {"update_id": 7, "have": 6, "state": ota.UPD_STAGED, "code": 0})
    assert job.state == "staged"
    status = {"app": "1.2.3", "mpy": "1.24.0", "uptime_s": 5, "heap_free": 1000, "reset": 1,
              "link": 1, "outbox": 0, "trial": 1}
    u.on_status(st, status)
    assert job.state == "staged"  # still on trial
    u.on_status(st, {**status, "trial": 0})
    assert job.state == "healthy"


@pytest.fixture
def run(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TAPKIOSK_DB", raising=False)
    db = str(tmp_path / "site.db")

    def run(*argv):
        code = tapkiosk(["--db", db, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    assert run("init")[0] == 0
    assert run("device", "add", "gate-01", "gate")[0] == 0
    return run


def test_fleet_cli(run, tmp_path):
    code, out, err = run("fleet", "status")
    assert code == 0 and "gate-01" in out
    code, out, err = run("fleet", "update", str(tmp_path / "missing.bundle"))
    assert code == 2 and err.count("\n") == 1 and "cannot read bundle" in err
    b = tmp_path / "b.bundle"
    b.write_bytes(build_bundle(FILES, "1.2.3"))
    code, out, err = run("fleet", "update", str(b), "--device", "nope")
    assert code == 2 and "unknown device nope" in err
    code, out, err = run("--json", "fleet", "update", str(b))
    assert code == 0, err
    assert [j["state"] for j in json.loads(out)["jobs"]] == ["pending"]
    code, out, err = run("fleet", "status")
    assert "pending" in out


def test_flash_bundle_builds_what_the_store_accepts(tmp_path, capsys):
    out = tmp_path / "app.bundle"
    assert flash(["bundle", "--version", "0.9.0", "--out", str(out), "--arch", "none"]) == 0
    man = fleet.parse_bundle(out.read_bytes())
    names = [f[0] for f in man["files"]]
    assert "main.py" not in names and "update.mpy" in names and "protocol/ota.mpy" in names
    assert flash(["bundle", "--version", "x" * 33, "--out", str(out)]) != 0
    assert "must be 1..32 bytes" in capsys.readouterr().err


def test_flash_bundle_of_a_firmware_image(tmp_path, capsys):
    image = tmp_path / "micropython.bin"
    image.write_bytes(b"\xe9" + bytes(5000))
    out = tmp_path / "fw.bundle"
    assert flash(["bundle", "--version", "1.25.0", "--out", str(out), "--firmware", str(image)]) == 0
    blob = out.read_bytes()
    assert fleet.parse_bundle(blob)["kind"] == "firmware"
    assert fleet.payload(blob) == (ota.KIND_FIRMWARE, image.read_bytes())
    assert fleet.payload(build_bundle(FILES, "1")) == (ota.KIND_APP, build_bundle(FILES, "1"))
    image.write_bytes(b"\x00" * 100)  # a whole-flash image (bootloader first), not an app image
    assert flash(["bundle", "--version", "1.25.0", "--out", str(out), "--firmware", str(image)]) == 2
    assert "not an ESP32 app image" in capsys.readouterr().err
