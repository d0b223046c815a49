# Runs on CPython (pytest): helpers shared by the daemon and link tests (a seeded site, an in-process or subprocess daemon).
"""Helpers shared by the daemon and link tests (a seeded site, an in-process or subprocess
daemon). Not a test module: tests import it, pytest does not collect it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from conftest import poll_until, wait_until

from host.admin import Admin
from host.cli import app as cli
from host.privacy import keyfile
from host.daemon import Daemon
from host.site.config import load_config
from host.store.db import open_db
from host.store.devices import register_device
from protocol import codes

ROOT = Path(__file__).resolve().parent.parent
KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
CARD = "04A1B2C3D4E5F6"        # member 1, 100.00 yuan
CARD2 = "04112233445566"       # member 2, 100.00 yuan, gym pass


def make_site(path: Path, devices: dict[str, tuple[str, bytes]] | None = None) -> dict[str, Any]:
    """A site database with two members with balance and the given devices registered."""
    db = open_db(path)
    if not str(path).startswith("postgresql://"):   # PostgreSQL: the db_url fixture's key file
        keyfile.create(f"{path}.key")  # what `tapkiosk init` makes
    devices = devices or {"kiosk-1": ("kiosk", KEY_A), "kiosk-2": ("kiosk", KEY_B)}
    for dev, (kind, key) in devices.items():
        register_device(db, dev, kind, key=key)
    admin = Admin(db)
    m1 = admin.add_member("Ada", consent_terms="t1")["member_id"]
    admin.enroll_card(m1, CARD)
    admin.topup(m1, 10000)
    m2 = admin.add_member("Bob", consent_terms="t1")["member_id"]
    admin.enroll_card(m2, CARD2)
    admin.topup(m2, 10000)
    admin.sell_pass(m2, "gym_month")
    db.conn.close()
    return {"m1": m1, "m2": m2}


def balance(path: Path, member_id: int) -> int:
    """principal + bonus of a member, read from the database file."""
    db = open_db(path)
    try:
        row = db.execute("SELECT principal_fen + bonus_fen FROM members WHERE id = ?",
                         (member_id,)).fetchone()
        return row[0]
    finally:
        db.conn.close()


def tap_count(path: Path, device_id: str | None = None) -> int:
    """Number of taps recorded (optionally for one device)."""
    db = open_db(path)
    try:
        if device_id is None:
            return db.execute("SELECT count(*) FROM taps").fetchone()[0]
        return db.execute("SELECT count(*) FROM taps WHERE device_id = ?",
                          (device_id,)).fetchone()[0]
    finally:
        db.conn.close()


def ledger_ok(path: Path) -> bool:
    """The ledger's own verify(): projections re-derive from the ledger."""
    from host.ledger import book as ledger
    db = open_db(path)
    try:
        return ledger.verify(db) == []
    finally:
        db.conn.close()


def any_http_port(argv: list[str]) -> list[str]:
    """``argv`` serving the HTTP API on a free port (never the default 8080, which parallel
    test daemons would share) unless it says where."""
    if "--http" in argv or "--no-http" in argv:
        return list(argv)
    return [*argv, "--http", "127.0.0.1:0"]


class InProcessDaemon:
    """A Daemon started in this process (stopped by ``stop()``)."""

    def __init__(self, argv: list[str]) -> None:
        self.daemon = Daemon(load_config(any_http_port(argv)))
        self.daemon.start()

    @property
    def metrics(self) -> Any:
        return self.daemon.metrics

    def stop(self) -> None:
        self.daemon.stop()


class DaemonProcess:
    """``python -m host.daemon`` as a subprocess; waits for its ``daemon ready`` line."""

    def __init__(self, argv: list[str], log_path: Path, journal: Path | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if journal is not None:     # a chain daemon's offline journal (host/site/outage.py)
            env["TAPKIOSK_OFFLINE_JOURNAL"] = str(journal)
        self.proc = subprocess.Popen([sys.executable, "-m", "host.daemon",
                                      *any_http_port(argv)], cwd=ROOT,
                                     stdout=self._log, stderr=self._log, env=env)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError("daemon exited: " + self.log())
            return "daemon ready" in self.log()

        if not poll_until(ready, 20, 0.05):
            raise RuntimeError("daemon not ready: " + self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self) -> int:
        self.proc.terminate()
        return self.proc.wait(20)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._log.close()


def wait_for(pred: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """The former name of ``conftest.wait_until``, kept for the modules that import it."""
    wait_until(pred, timeout, what=what)


# ----------------------------------------------------------------------------- config tests


class TapStream:
    """A reader tapping ``CARD`` ``n`` times for 1.00 yuan from a thread of its own (HELLO
    first; each TAP delivered again until answered, as the firmware does, so a daemon or link
    killed mid-stream is ridden out): ``results`` by seq, ``errors`` raised in the thread."""

    def __init__(self, dev: Any, n: int, attempts: int) -> None:
        self.dev, self.n, self.attempts = dev, n, attempts
        self.results: dict[int, dict] = {}
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "TapStream":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.dev.hello()
            for _ in range(self.n):
                seq, raw = self.dev.tap_frame(CARD, amount_fen=100)
                self.results[seq] = self.dev.deliver(raw, attempts=self.attempts, timeout=0.25)
        except BaseException as e:  # noqa: BLE001 - reported by join()
            self.errors.append(e)

    def join(self, timeout: float = 60) -> None:
        """Wait for the stream; AssertionError when it hangs or its thread raised."""
        self._thread.join(timeout)
        assert not self._thread.is_alive() and not self.errors, self.errors

    def assert_applied_once(self, path: Path, member_id: int, device_id: str) -> None:
        """Every TAP granted and stored once: the store holds ``n`` taps of the
        device, the balances fall tap by tap to the member's, and ``verify`` passes."""
        results = self.results
        assert len(results) == self.n
        assert all(r["verdict"] == codes.GRANT for r in results.values())
        assert tap_count(path, device_id) == self.n          # none lost, none applied twice
        balances = [results[s]["balance"] for s in sorted(results)]
        assert all(a > b for a, b in zip(balances, balances[1:]))
        assert balance(path, member_id) == balances[-1]
        assert cli.main(["--db", str(path), "verify"]) == 0
