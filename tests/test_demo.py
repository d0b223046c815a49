"""`make demo` (python -m sim.demo): every scripted tap gets its decision through the real
firmware, daemon and engine; verify passes; Ctrl-C leaves no process and no directory behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, micropython_path, wait_until
from process_support import alive, descendants

pytestmark = pytest.mark.skipif(micropython_path() is None, reason="needs the MicroPython unix port")

# What each scripted tap must give, written out here independently of sim/demo.py:
# (device, card, member (the masked name), verdict, reason, charged_fen, balance_fen after, relay pulsed, LED).
EXPECTED = [
    ("gate-1", "04A1B2C3D4E5F6", "A*", "grant", "ok", 0, 0, True, "green"),
    ("wash-1", "04C1B2C3D4E5F6", "C*", "grant", "ok", 0, 0, True, "green"),
    ("wash-1", "04B1B2C3D4E5F6", "B*", "grant", "ok", 2200, 7800, True, "green"),  # 25.00 x 88 %
    ("wash-1", "04E1B2C3D4E5F6", "E*", "grant", "ok", 0, 0, True, "green"),
    ("kiosk-1", "04D1B2C3D4E5F6", "D*", "grant", "ok", 2400, 19600, False, "green"),  # 30.00 x 80 %
    ("gate-1", "04F1B2C3D4E5F6", "F*", "deny", "blocked", 0, 5000, False, "red"),
    ("kiosk-1", "5A6B7C8D", "G*", "deny", "insufficient_balance", 0, 500, False, "red"),
    ("gate-1", "04991122334455", None, "deny", "unknown_card", 0, 0, False, "red"),
    ("gate-1", "04A1B2C3D4E5F6", "A*", "deny", "passback", 0, 0, False, "red"),
]


def _site_from(stderr: str) -> Path:
    m = re.search(r"^site: (\S+)", stderr, re.M)
    assert m, stderr
    return Path(m.group(1))


def test_demo_json_every_tap_as_expected_and_verify_passes():
    r = subprocess.run([sys.executable, "-m", "sim.demo", "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    rows, summary = lines[:-1], lines[-1]
    assert len(rows) == len(EXPECTED), r.stdout
    for row, (dev, card, member, verdict, reason, charged, balance, relay, led) in zip(rows, EXPECTED):
        got = (row["device"], row["card"], row["member"], row["verdict"], row["reason"])
        assert got == (dev, card, member, verdict, reason), row
        assert row["charged_fen"] == charged, row
        if member is not None:
            assert row["balance_fen"] == balance, row
        # What the firmware did with the DECISION, from its pins log.
        assert row["relay"] is relay and row["led"] == led, row
    assert rows[3]["uses_left"] == 9  # one of the ten punch-card washes used
    assert rows[4]["points_earned"] >= 24  # 1 point per yuan paid (x2 on member/birthday days)
    assert summary["summary"] is True and summary["ok"] is True and summary["taps"] == 9
    assert summary["verify"]["ok"] is True and summary["verify"]["problems"] == []
    assert summary["verify"]["ledger_rows"] > 0
    report = summary["report"]
    assert report[-1]["taps"] == 9 and report[-1]["granted"] == 5
    assert report[-1]["consumption_fen"] == 2200 + 2400
    assert summary["metrics_url"].startswith("http://127.0.0.1:")
    # The temporary site is gone (no --keep).
    assert not _site_from(r.stderr).exists()


def test_demo_human_output_shows_table_report_and_next_steps():
    r = subprocess.run([sys.executable, "-m", "sim.demo", "--keep"], cwd=ROOT,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for text in ("scene", "wash from balance, gold price", "Basic wash · paid 22.00 left 78.00",
                 "insufficient_balance", "passback", "tapkiosk verify: ok",
                 "9 of 9 taps decided as expected.", "Try next:", "tapkiosk sim tap gate-1"):
        assert text in out, out
    m = re.search(r"^site kept: (\S+)", out, re.M)
    assert m, out
    site = Path(m.group(1))
    try:
        assert (site / "site.db").exists() and not (site / "sim-control.json").exists()
        # The kept site is an ordinary site database: the operator CLI reads it.
        rep = subprocess.run([sys.executable, "-m", "host.cli", "--db", str(site / "site.db"),
                              "--json", "verify"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
        assert rep.returncode == 0 and json.loads(rep.stdout)["ok"] is True, rep.stderr
    finally:
        import shutil
        shutil.rmtree(site, ignore_errors=True)


def test_ctrl_c_mid_run_leaves_nothing_running():
    p = subprocess.Popen([sys.executable, "-m", "sim.demo", "--json"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        first = p.stdout.readline()  # the first tap is decided: daemon and readers are up
        assert first.startswith("{"), first + p.stderr.read()
        kids = descendants(p.pid)
        names = [Path(f"/proc/{k}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                 for k in kids if alive(k)]
        assert sum("micropython" in n for n in names) == 3, names
        assert any("host.daemon" in n for n in names), names
        p.send_signal(signal.SIGINT)  # what Ctrl-C sends to the demo
        p.wait(60)
        err = p.stderr.read()
        assert p.returncode == 130, err
        assert "interrupted" in err
        wait_until(lambda: not any(alive(k) for k in kids), 5, 0.1,
                   what="the demo's daemon and readers to exit")
        assert not _site_from(err).exists()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def test_bad_option_is_refused():
    from sim import demo
    assert demo.main(["--mqtt", "nohostport"]) == 2
    assert demo.main(["--no-such-option"]) == 2


@pytest.mark.mqtt
def test_demo_over_mqtt(broker):
    r = subprocess.run([sys.executable, "-m", "host.cli", "--json", "demo", "--mqtt",
                        broker.address], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(x["verdict"], x["reason"]) for x in lines[:-1]] == [(e[3], e[4]) for e in EXPECTED]
    assert "linked by MQTT broker" in r.stderr
    assert lines[-1]["ok"] is True and lines[-1]["verify"]["ok"] is True
