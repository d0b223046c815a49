# Runs on CPython (bench): what the benchmarks share: percentiles, the daemon as a subprocess, its metrics.
"""Helpers shared by the benchmarks in ``bench/``.

Importing this module puts the repository root and ``tests/`` on ``sys.path``, so a bench can
use the test fixtures' ``Broker`` (a real mosquitto on loopback) and the seeded sites of
``tests/daemon_support.py``.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any, NoReturn
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT / "tests"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from conftest import Broker, free_port  # noqa: E402

__all__ = ["ROOT", "Args", "BareStore", "Broker", "bare_write", "cpu_seconds", "free_port", "hist", "pct",
           "scrape", "start_daemon", "stop", "wait_ready"]


class Args(argparse.ArgumentParser):
    """The benches' argparse: a bad argument is one line, ``PROG: error: ...``, exit 2 (no
    usage printed above it; ``--help`` has it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def pct(xs: list[float], p: float) -> float:
    """The p-th percentile (``p`` in percent, e.g. 99) of ``xs`` by nearest rank."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100.0 * len(s)) - 1))]


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of process ``pid`` (None: this process)."""
    if pid is None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hist(m0: dict[str, float], m1: dict[str, float], name: str, labels: str = ""
         ) -> dict[str, float]:
    """A daemon histogram over the run (between two scrapes): count, mean and p99 in ms, the
    p99 as the upper bound of its bucket."""
    def get(key: str) -> float:
        return m1.get(key, 0.0) - m0.get(key, 0.0)
    n = get(f"{name}_count{labels}")
    if not n:
        return {"n": 0, "mean_ms": 0.0, "p99_ms": 0.0}
    inner = labels[1:-1] + "," if labels else ""
    bounds = sorted((float(k.split('le="')[1].split('"')[0]), k) for k in m1
                    if k.startswith(f"{name}_bucket{{{inner}le=") and "+Inf" not in k)
    p99 = next((b for b, k in bounds if get(k) >= 0.99 * n), float("inf"))
    return {"n": int(n), "mean_ms": round(get(f"{name}_sum{labels}") / n * 1000.0, 3),
            "p99_ms": round(p99 * 1000.0, 3)}


def scrape(port: int) -> dict[str, float]:
    """The daemon's Prometheus metrics (name with labels -> value), from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, val = line.rpartition(" ")
            out[key] = float(val)
    return out


def wait_ready(port: int, timeout: float = 30.0) -> None:
    """Wait until the daemon process serves its metrics and every link it reports is up
    (``tapkiosk_link_up`` 1: an MQTT link has subscribed; a slow start, e.g. under the
    profiler, would otherwise lose the first taps), at most ``timeout`` seconds: links still
    down then (a serial peer started later) are left to the bench."""
    deadline = time.monotonic() + timeout
    served = False
    while True:
        try:
            up = [v for k, v in scrape(port).items() if k.startswith("tapkiosk_link_up")]
            served = True
            if up and all(v == 1 for v in up):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            if served:
                return
            raise RuntimeError("the daemon did not start (see its log)") from None
        time.sleep(0.1)


_WORK_DIRS: list[Path] = []


def bare_write(conn: Any, member: int, ts: int) -> None:
    """The baseline of the tap benches: one durable ``BEGIN IMMEDIATE; UPDATE; INSERT;
    COMMIT`` of a member's balance and a ledger row on a site database, as small as a money
    write gets."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE members SET principal_fen = principal_fen - 1 WHERE id = ?", (member,))
    conn.execute("INSERT INTO ledger (ts, member_id, currency, delta, kind) "
                 "VALUES (?, ?, 'principal', -1, 'bench')", (ts, member))
    conn.execute("COMMIT")


class BareStore:
    """A site database with one member, set up as the daemon's writer runs it (host pragmas,
    ``synchronous=FULL``, a checkpoint thread), for an echo that makes ``bare_write`` before
    it answers: the floor of any reply that waits for a durable commit."""

    def __init__(self, path: str | os.PathLike) -> None:
        from host.site.checkpoint import Checkpointer
        from host.store.db import open_db

        self._conn = open_db(path).conn
        self._now = int(time.time())
        self._conn.execute("INSERT INTO members (id, name, tier, principal_fen, created_at) "
                           "VALUES (1, 'echo', 'silver', 1000000000, ?)", (self._now,))
        self._conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._commits = 0
        self._ckpt = Checkpointer(os.fspath(path), lambda: self._commits).start()

    def commit(self) -> None:
        """One ``bare_write``."""
        bare_write(self._conn, 1, self._now)
        self._commits += 1

    def close(self) -> None:
        """Stop the checkpoint thread and close the connection."""
        self._ckpt.stop()
        self._conn.close()


def work_dir(parent: str | None = None) -> Path:
    """A new directory (in ``parent``, default the temp dir) for a bench's site, broker and
    daemon log; ``finish`` removes it."""
    path = Path(tempfile.mkdtemp(prefix="tapkiosk-bench-", dir=parent))
    _WORK_DIRS.append(path)
    return path


def finish(code: int) -> int:
    """A bench's exit: its work directories removed when it passed (``code`` 0), else kept
    for their logs and named on stderr. Returns ``code``."""
    for path in _WORK_DIRS:
        if code == 0:
            shutil.rmtree(path, ignore_errors=True)
        else:
            print(f"bench files kept in {path}", file=sys.stderr)
    _WORK_DIRS.clear()
    return code


def start_daemon(db: Path, workdir: Path, *link_args: str,
                 metrics: bool = True) -> tuple[subprocess.Popen, int | None]:
    """Start ``python -m host.daemon --db DB LINK_ARGS...`` logging to ``workdir/daemon.log``.

    With ``$TAPKIOSK_PROFILE`` set, the daemon runs under ``bench/profile_daemon.py``
    (cProfile on every thread, stats written to that file at exit).
    With ``metrics`` the daemon serves /metrics on a free port; this waits until it answers,
    then half a second more (the links subscribe right after). Returns the process and the
    metrics port (None without ``metrics``).
    """
    mport = free_port() if metrics else None
    profile = os.environ.get("TAPKIOSK_PROFILE")   # cProfile of every daemon thread
    run = ([str(ROOT / "bench" / "profile_daemon.py"), profile] if profile
           else ["-m", "host.daemon"])
    cmd = [sys.executable, *run, "--db", str(db), *link_args, "--log-level", "warning"]
    if "--http" not in link_args:
        cmd += ["--http", "127.0.0.1:0"]     # never the default 8080 another daemon may hold
    if mport is not None:
        cmd += ["--metrics-port", str(mport)]
    with open(workdir / "daemon.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log)
    if mport is not None:
        try:
            wait_ready(mport)
        except BaseException:
            stop(proc)
            raise
        time.sleep(0.5)
    return proc, mport


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM ``proc`` and wait for it; SIGKILL if it has not exited within ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def hello(dev: Any, attempts: int = 5) -> dict:
    """``dev.hello()`` until a WELCOME comes, as the firmware resends its HELLO: a daemon that
    is still opening its ``socket://`` port discards what arrived before (pyserial resets the
    input buffer on open), and a bench that waits only for the connection may send too early."""
    from sim.device import NoReply

    for _ in range(attempts - 1):
        try:
            return dev.hello()
        except NoReply:
            continue
    return dev.hello()
