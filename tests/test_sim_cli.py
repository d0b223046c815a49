"""`tapkiosk sim`: simulated readers (real firmware, emulated PN532) against a running daemon,
taps typed on stdin or sent with `tapkiosk sim tap`; and `tapkiosk demo --stay` + `sim tap`."""

from __future__ import annotations

import json
import os
import queue
import signal
import sqlite3
import subprocess
import urllib.request
import sys
import threading
from pathlib import Path

import pytest

from conftest import ROOT, free_port, micropython_path, poll_until, wait_until
from process_support import alive, descendants

from host.cli import app as cli
from sim import cli as simcli

pytestmark = pytest.mark.skipif(micropython_path() is None, reason="needs the MicroPython unix port")

ANN = "04A1B2C3D4E5F6"  # gym pass
BOB = "04D1E2F3A4B5C6"  # no pass


def _cli(db: Path, *args: str) -> None:
    assert cli.main(["--db", str(db), *args]) == 0


class Lines:
    """stdout of a child, line by line, in a thread."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.q: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.q.put(line.rstrip("\n"))

    def wait(self, text: str, timeout: float = 30) -> str:
        def next_match() -> str | None:
            try:
                line = self.q.get(timeout=0.2)
            except queue.Empty:
                return None
            self.seen.append(line)
            return line if text in line else None

        line = poll_until(next_match, timeout, 0)
        if line is None:
            raise AssertionError(f"{text!r} not seen in:\n" + "\n".join(self.seen))
        return line


def test_sim_run_serves_the_daemon_and_taps_from_stdin_and_sim_tap(tmp_path, capsys):
    db = tmp_path / "site.db"
    _cli(db, "init")
    _cli(db, "device", "add", "gate-1", "gate")
    _cli(db, "member", "add", "--consent-terms", "t1", "--name", "Ann")
    _cli(db, "card", "enroll", "1", ANN)
    _cli(db, "pass", "sell", "1", "gym_month")
    _cli(db, "member", "add", "--consent-terms", "t1", "--name", "Bob")
    _cli(db, "card", "enroll", "2", BOB)
    capsys.readouterr()
    port = free_port()
    log = open(tmp_path / "daemon.log", "w")
    daemon = subprocess.Popen([sys.executable, "-m", "host.daemon", "--db", str(db), "--serial",
                               f"socket://127.0.0.1:{port}", "--no-http"], cwd=ROOT, stdout=log, stderr=log,
                              start_new_session=True)
    sim = subprocess.Popen([sys.executable, "-m", "sim.cli", "run", "--db", str(db), "--device",
                            "gate-1", "--serial", f"socket://127.0.0.1:{port}"], cwd=ROOT,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
    try:
        out = Lines(sim)
        out.wait(f"daemon connects to socket://127.0.0.1:{port}")
        out.wait("[gate-1] tapkiosk: online")
        kids = descendants(sim.pid)
        assert kids and all(alive(k) for k in kids)
        assert (tmp_path / simcli.CONTROL_FILE).exists()
        # A tap typed at the prompt: the firmware shows the daemon's answer.
        sim.stdin.write(f"tap {ANN}\n")
        sim.stdin.flush()
        out.wait("[gate-1] DISPLAY: Welcome A*")
        # A tap from another terminal: tapkiosk sim tap prints the stored decision.
        assert simcli.main(["tap", "gate-1", BOB, "--db", str(db), "--json"]) == 0
        row = json.loads(capsys.readouterr().out)
        assert (row["uid"], row["member"], row["verdict"], row["reason"]) == \
            (BOB, "B*", "deny", "no_pass")  # the masked name
        out.wait("[gate-1] DISPLAY: No valid pass")
        # Mistakes are one line and exit 2.
        assert simcli.main(["tap", "gate-9", BOB, "--db", str(db)]) == 2
        assert "unknown device 'gate-9'" in capsys.readouterr().err
        sim.stdin.write("tap nothex\n")
        sim.stdin.flush()
        out.wait("sim: error: bad card UID 'nothex'")
        sim.stdin.write("quit\n")
        sim.stdin.flush()
        assert sim.wait(30) == 0
        wait_until(lambda: not any(alive(k) for k in kids), 5, 0.1,
                   what="the simulator's readers to exit")
        assert not (tmp_path / simcli.CONTROL_FILE).exists()
    finally:
        for p in (sim, daemon):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
        log.close()


def test_sim_tap_without_a_simulator_says_what_to_start(tmp_path, capsys):
    db = tmp_path / "site.db"
    _cli(db, "init")
    capsys.readouterr()
    assert simcli.main(["tap", "gate-1", ANN, "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tapkiosk sim: error: no simulator is running") and "--stay" in err
    assert simcli.main(["tap", "gate-1", "04A1B2", "--db", str(db)]) == 2
    assert "4, 7 or 10 bytes" in capsys.readouterr().err
    assert simcli.main(["run", "--db", str(db), "--device", "gate-1", "--mqtt", "x:1"]) == 2
    assert "not registered" in capsys.readouterr().err


def test_demo_stay_then_sim_tap_then_ctrl_c(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "sim.demo", "--stay", "--json"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        summary = None
        for line in p.stdout:
            obj = json.loads(line)
            if obj.get("summary"):
                summary = obj
                break
        assert summary is not None and summary["ok"] is True, p.stderr.read()
        site = Path(summary["site"])
        kids = descendants(p.pid)
        # Ben (gold, 78.00 left after his wash) buys at the kiosk: 30.00 x 88 % = 26.40.
        r = subprocess.run([sys.executable, "-m", "host.cli", "sim", "tap", "kiosk-1",
                            "04B1B2C3D4E5F6", "--db", str(site / "site.db")], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "B*  grant ok" in r.stdout and "charged 26.40  balance 51.60" in r.stdout, r.stdout
        # The front desk console is served while the demo stays, with the login it printed.
        console = summary["console_url"]
        staff, password = summary["console_login"]
        assert console.startswith("http://127.0.0.1:") and console.endswith("/console/")
        page = urllib.request.urlopen(console + "login", timeout=10).read().decode()
        assert "csrf" in page.lower() and 'name="password"' in page
        from host.store.staff import verify_password
        with sqlite3.connect(f"file:{site / 'site.db'}?mode=ro", uri=True) as c:
            (stored, role), = c.execute("SELECT pw_hash, role FROM staff WHERE name = ?", (staff,))
        assert role == "manager" and verify_password(stored, password)
        p.send_signal(signal.SIGINT)
        assert p.wait(60) == 0, p.stderr.read()
        wait_until(lambda: not any(alive(k) for k in kids), 5, 0.1,
                   what="the demo's daemon and readers to exit")
        assert not site.exists()
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def _sim_run(db: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sim.cli", "run", "--db", str(db), "--device",
                             "gate-1", "--serial", f"socket://127.0.0.1:{port}", "--no-input"],
                            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_sim_traps_second_run_restart_and_debounce(tmp_path, capsys):
    """A second `sim run` for the same site is refused (it would hide the first one's readers
    from `sim tap`); a restarted `sim run` keeps its boards' flash (no replay refusals); the
    same card twice in a row is decided twice (the simulator waits out the debounce)."""
    db = tmp_path / "site.db"
    _cli(db, "init")
    _cli(db, "device", "add", "gate-1", "gate", "--anti-passback", "off",
         "--duplicate-window", "0")
    _cli(db, "member", "add", "--consent-terms", "t1", "--name", "Ann")
    _cli(db, "card", "enroll", "1", ANN)
    _cli(db, "pass", "sell", "1", "gym_month")
    capsys.readouterr()
    port = free_port()
    log = open(tmp_path / "daemon.log", "w")
    daemon = subprocess.Popen([sys.executable, "-m", "host.daemon", "--db", str(db), "--serial",
                               f"socket://127.0.0.1:{port}"], cwd=ROOT, stdout=log, stderr=log,
                              start_new_session=True)
    procs = [daemon]
    try:
        sim = _sim_run(db, port)
        procs.append(sim)
        Lines(sim).wait("[gate-1] tapkiosk: online")
        second = _sim_run(db, free_port())
        procs.append(second)
        assert second.wait(30) == 2
        assert "another simulator" in second.stdout.read()
        for _ in range(2):   # the same card twice, at once: two decisions
            assert simcli.main(["tap", "gate-1", ANN, "--db", str(db), "--json",
                                "--timeout", "5"]) == 0
            assert json.loads(capsys.readouterr().out)["verdict"] == "grant"
        _stop(sim)
        again = _sim_run(db, port)      # no --board-dir: the same boards, the boot counter goes on
        procs.append(again)
        Lines(again).wait("[gate-1] tapkiosk: online", timeout=60)
        assert simcli.main(["tap", "gate-1", ANN, "--db", str(db), "--timeout", "5"]) == 0
        assert "grant" in capsys.readouterr().out
        assert "cause=replay" not in (tmp_path / "daemon.log").read_text()
    finally:
        for p in reversed(procs):
            _stop(p)
        log.close()


def test_a_refused_tap_is_not_reported_as_ok():
    class Board:
        def __init__(self):
            self.lines = []

        def output(self):
            return list(self.lines)

    r = simcli.VirtualReader.__new__(simcli.VirtualReader)
    r.device_id, r.board = "gate-1", Board()
    r.tap = lambda uid, hold_s=0.4: r.board.lines.append(
        "tapkiosk: host error 3 for seq 65538 replay")
    with pytest.raises(simcli.SimError, match="refused the tap on gate-1: .*host error 3"):
        r.tap_and_watch(ANN, wait_s=1)
