"""Over-the-air app updates end to end: the real firmware under the MicroPython unix port
(TAPKIOSK_MICROPYTHON picks the build, e.g. the i386 one), real serial cables, the real
daemon, the `tapkiosk fleet` CLI."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from conftest import ROOT, micropython_path, wait_until
from firmware_rig import CARD
from fleet_rig import OLD_APP, Fleet, bundle, forged

from protocol import ota
from tools.appfiles import build_firmware_bundle

pytestmark = [pytest.mark.micropython, pytest.mark.skipif(not micropython_path(), reason="micropython missing")]


@pytest.fixture
def fleet(tmp_path):
    made = []

    def make(n=1, **kw):
        f = Fleet(tmp_path, n, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def _line_index(log: str, *words: str) -> int:
    for i, line in enumerate(log.splitlines()):
        if all(w in line for w in words):
            return i
    return -1


def test_status_then_canary_update_of_three_readers(fleet, tmp_path):
    f = fleet(3)
    f.boot()
    ids = [r.device_id for r in f.readers]
    assert wait_until(lambda: all(f.status(d) for d in ids), 20), f.console()
    assert all(f.status(d)[0] == OLD_APP for d in ids)
    out = f.cli("fleet", "status")
    assert out.returncode == 0, out.stderr
    for d in ids:
        assert d in out.stdout
    rows = json.loads(f.cli("--json", "fleet", "status").stdout)
    assert [r["device_id"] for r in rows] == ids
    assert all(r["app"] == OLD_APP and r["link"] == "serial" and r["heap_free"] > 0
               and r["mpy"].count(".") == 2 for r in rows)

    b = bundle(tmp_path, "0.2.0-ota")
    r = f.cli("fleet", "update", str(b), "--canary", "1", "--wait", "--timeout", "500")
    assert r.returncode == 0, r.stdout + r.stderr + f.console()
    assert all(s == "healthy" for s, _h, _d in f.jobs().values()), f.jobs()
    for reader in f.readers:
        assert f.status(reader.device_id)[:2] == ("0.2.0-ota", 0)
        assert (reader.board.dir / "app" / "VERSION").read_text() == "0.2.0-ota"
        assert reader.board.wait_for("switched to app 0.2.0-ota", 1)
    log = f.daemon_log()
    canary_ok = _line_index(log, "device=gate-01", "healthy")
    assert canary_ok >= 0
    for d in ids[1:]:
        assert _line_index(log, f"device={d}", " sending") > canary_ok, log
    # The new app decides taps as usual.
    f.readers[1].tap()
    rows = wait_until(lambda: f.taps("gate-02"), 15)
    assert rows and rows[0][2] == "grant", f.console()


def test_corrupted_chunks_taps_and_kill_mid_transfer(fleet, tmp_path):
    f = fleet(1)
    f.boot()
    rd = f.readers[0]
    b = bundle(tmp_path, "0.3.0-ota")
    # One flipped bit in about every 10th frame to the reader: its CRC drops it.
    rd.cable.set_faults("ba", flip=0.0005)
    r = f.cli("fleet", "update", str(b))
    assert r.returncode == 0, r.stderr
    assert wait_until(lambda: f.jobs()["gate-01"][1] >= 60, 120), f.console()
    log = f.daemon_log()
    assert "no answer: BEGIN again" in log, "no corrupted chunk was resent"
    # A tap in the middle of the transfer is decided as usual.
    rd.tap()
    rows = wait_until(lambda: f.taps("gate-01"), 15)
    assert rows and rows[0][2] == "grant", f.console()
    assert f.jobs()["gate-01"][0] == "sending"
    # Power cut mid-transfer: the old app boots, the transfer resumes where it was.
    rd.board.kill()
    assert not (rd.board.dir / "app").exists() and not (rd.board.dir / "next").exists()
    mark = len(rd.board.output())
    rd.board.start(supervise=True)
    assert rd.board.wait_for("online", 30, mark), f.console()
    line = rd.board.wait_for("resumes at chunk", 30, mark)
    assert line and int(line.split("resumes at chunk")[1].split()[0]) > 0, f.console()
    assert wait_until(lambda: f.jobs()["gate-01"][0] == "healthy", 300), f.console()
    assert f.status("gate-01")[0] == "0.3.0-ota"
    sizes = json.loads(b.read_bytes()[4:4 + int.from_bytes(b.read_bytes()[:4], "big")])
    for path, size, sha in sizes["files"]:
        assert hashlib.sha256((rd.board.dir / "app" / path).read_bytes()).hexdigest() == sha


def test_frames_with_the_wrong_key_and_bad_bundles_are_refused(fleet, tmp_path):
    f = fleet(1)
    f.boot()
    rd = f.readers[0]
    blob = bundle(tmp_path, "0.4.0-ota").read_bytes()
    mark = len(rd.board.output())
    chunks = (len(blob) + 191) // 192
    rd.to_device(forged("gate-01", ota.UPDATE_BEGIN, 0x7FFF0001, {
        "update_id": 77, "version": "0.4.0-evil", "size": len(blob), "chunks": chunks,
        "sha256": hashlib.sha256(blob).digest(), "kind": 0}))
    rd.to_device(forged("gate-01", ota.UPDATE_CHUNK, 0x7FFF0002, {
        "update_id": 77, "index": 0, "data": blob[:192]}))
    assert wait_until(lambda: sum("dropped frame" in x for x in rd.board.output()[mark:]) >= 2,
                      10), f.console()
    assert not any("update" in x and "begins" in x for x in rd.board.output()[mark:])
    assert not (rd.board.dir / "upd").exists()

    # A bundle changed after it was built: the CLI refuses it, nothing is queued.
    bad = bytearray(blob)
    bad[-10] ^= 0xFF
    p = tmp_path / "bad.bundle"
    p.write_bytes(bytes(bad))
    r = f.cli("fleet", "update", str(p))
    assert r.returncode == 2 and "does not match its manifest hash" in r.stderr
    assert f.jobs() == {}

    # The same bundle put in the store behind the CLI's back: the reader checks every file.
    sha = hashlib.sha256(bytes(bad)).hexdigest()
    with __import__("sqlite3").connect(f.db) as c:
        c.execute("INSERT INTO fleet_bundles VALUES (?, '0.4.0-bad', ?, ?, 0)",
                  (sha, len(bad), bytes(bad)))
        c.execute("INSERT INTO fleet_updates (rollout, device_id, bundle, wave, state, chunks, "
                  "created_at, updated_at) VALUES ('x', 'gate-01', ?, 1, 'pending', ?, 0, 0)",
                  (sha, chunks))
    assert wait_until(lambda: f.jobs()["gate-01"][0] == "failed", 120), f.console()
    assert f.jobs()["gate-01"][2] == "file hash mismatch"
    assert not (rd.board.dir / "next").exists() and not (rd.board.dir / "app").exists()


def test_new_app_that_crashes_at_import_is_rolled_back(fleet, tmp_path):
    f = fleet(1)
    f.boot()
    rd = f.readers[0]

    def crash(root):
        dev = root / "firmware" / "device.py"
        dev.write_text('raise RuntimeError("boom at import")\n' + dev.read_text())

    b = bundle(tmp_path, "0.5.0-broken", crash)
    r = f.cli("fleet", "update", str(b), "--wait", "--timeout", "300")
    assert r.returncode == 1, r.stdout + r.stderr + f.console()
    state, _have, detail = f.jobs()["gate-01"]
    assert state == "rolled_back" and "boom at import" in detail, f.jobs()
    assert rd.board.wait_for("update rolled back", 1)
    assert not (rd.board.dir / "app").exists()
    assert wait_until(lambda: f.status("gate-01")[0] == OLD_APP, 10)
    ev = f.query("SELECT text FROM device_events WHERE device_id = 'gate-01' AND "
                 "name = 'update_rollback'")
    assert ev and "0.5.0-broken" in ev[0][0]
    out = f.cli("fleet", "status").stdout
    assert "rolled_back" in out
    rd.tap()
    rows = wait_until(lambda: f.taps("gate-01"), 15)
    assert rows and rows[0][2] == "grant", f.console()


def test_new_app_that_never_reaches_the_host_is_rolled_back(fleet, tmp_path):
    f = fleet(1, trial_ms=6000)
    f.boot()
    rd = f.readers[0]

    def mute(root):
        # A new app whose HELLO never goes out: it runs, but the host never answers it.
        ses = root / "firmware" / "session.py"
        ses.write_text(ses.read_text().replace("        await app.send_raw(pkt)\n", "        pkt = None\n", 1))

    b = bundle(tmp_path, "0.6.0-mute", mute)
    r = f.cli("fleet", "update", str(b), "--wait", "--timeout", "300")
    assert r.returncode == 1, r.stdout + r.stderr + f.console()
    state, _have, detail = f.jobs()["gate-01"]
    assert state == "rolled_back" and "no answer from the host in 6 s" in detail, f.jobs()
    assert rd.board.wait_for("switched to app 0.6.0-mute", 1)
    assert wait_until(lambda: f.status("gate-01")[0] == OLD_APP, 10)


def test_update_over_mqtt(rigs, broker):
    rig = rigs(kind="gate", link="mqtt", broker=broker)
    rig.board.start(supervise=True)
    assert rig.board.wait_for("online", 30), rig.console()
    b = bundle(rig.tmp, "0.7.0-mqtt")
    r = subprocess.run([sys.executable, "-m", "host.cli", "--db", str(rig.db), "fleet", "update",
                        str(b), "--wait", "--timeout", "300"],
                       capture_output=True, text=True, cwd=ROOT, timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr + rig.console()
    with sqlite3.connect(rig.db) as c:
        app, link = c.execute("SELECT app, link FROM fleet_status").fetchone()
    assert (app, link) == ("0.7.0-mqtt", "mqtt")
    rig.tap(CARD)
    rows = wait_until(lambda: rig.wait_taps(1, 1), 15)
    assert rows[0][2] == "grant", rig.console()


def test_firmware_image_through_the_ota_partitions_and_boot_loader_rollback(fleet, tmp_path):
    # The sim/mpy esp32 stand-in keeps the OTA partitions in files of the board directory and
    # plays the boot loader (rollback of an image that was started and never marked valid).
    f = fleet(1)
    f.boot()
    rd = f.readers[0]
    image = b"\xe9" + os.urandom(30000)
    b = tmp_path / "fw.bundle"
    b.write_bytes(build_firmware_bundle(image, "1.99.0-test"))
    r = f.cli("fleet", "update", str(b), "--wait", "--timeout", "300")
    assert r.returncode == 0, r.stdout + r.stderr + f.console()
    assert (rd.board.dir / "ota_1.bin").read_bytes()[:len(image)] == image
    assert (rd.board.dir / "otadata.txt").read_text() == "ota_1 valid"  # marked valid on trial
    assert f.query("SELECT mpy, trial FROM fleet_status")[0] == ("1.99.0-test", 0)
    assert not (rd.board.dir / "app").exists()  # the app itself did not change
    rd.tap()
    rows = wait_until(lambda: f.taps("gate-01"), 15)
    assert rows and rows[0][2] == "grant", f.console()

    # An image that resets before it reaches Python: the boot loader goes back to ota_1 and
    # the reader reports the rollback.
    bad = b"\xe9CRASH" + os.urandom(20000)
    b2 = tmp_path / "bad.bundle"
    b2.write_bytes(build_firmware_bundle(bad, "2.0.0-crash"))
    r = f.cli("fleet", "update", str(b2), "--wait", "--timeout", "300")
    assert r.returncode == 1, r.stdout + r.stderr + f.console()
    state, _have, detail = f.jobs()["gate-01"]
    assert state == "rolled_back" and "firmware did not start" in detail, f.jobs()
    assert (rd.board.dir / "ota_0.bin").read_bytes()[:len(bad)] == bad
    assert (rd.board.dir / "otadata.txt").read_text() == "ota_1 valid"
    assert wait_until(lambda: f.query("SELECT mpy FROM fleet_status")[0][0] == "1.99.0-test", 10)
