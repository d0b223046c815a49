# Runs on CPython: benchmark of the disk's fdatasync against the idle time before it.
"""What one durable commit's flush costs on this disk, by how long the disk was idle before it.

Writes ``--pages`` WAL-sized frames (4,120 bytes: a 4 KiB page and its 24-byte header) over
a preallocated file, as SQLite's WAL does after a checkpoint, then ``fdatasync``; repeats
after each idle gap, the gaps interleaved round by round so all see the same machine. A
serial kiosk at 115200 baud commits about every 12 ms (one TAP and one DECISION on the
wire), a busy site every few hundred microseconds: on a virtual machine whose disk path
sleeps when idle, the same flush costs more after a long gap. The baseline is the shortest
gap, measured in the same run.

Usage: ``python bench/fsync_gap.py [--rounds 300] [--pages 7] [--dir DIR]``. Last line
JSON: ``{"bench": "fsync_gap", "pages": .., "gaps_ms": {"0.5": {"p50_ms": .., "p99_ms": ..,
"ratio_p50": ..}, ..}}``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import Args, pct  # noqa: E402

FRAME = 4096 + 24
GAPS_MS = (0.5, 2.0, 5.0, 12.0)
SLOTS = 1024


def flush_times(fd: int, pages: int, rounds: int) -> dict[float, list[float]]:
    """``rounds`` rounds of one write of ``pages`` frames + fdatasync after each gap: the
    flushes' times in ms by gap."""
    frame = os.urandom(FRAME)
    times: dict[float, list[float]] = {g: [] for g in GAPS_MS}
    slot = 0
    for _ in range(rounds):
        for gap in GAPS_MS:
            time.sleep(gap / 1000)
            t0 = time.perf_counter()
            for _k in range(pages):
                os.pwrite(fd, frame, slot * FRAME)
                slot = (slot + 1) % SLOTS
            os.fdatasync(fd)
            times[gap].append((time.perf_counter() - t0) * 1000)
    return times


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print figures, last line JSON. Returns the exit code."""
    ap = Args(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--pages", type=int, default=7)
    ap.add_argument("--dir", help="directory on the disk to measure (default: the temp dir)")
    a = ap.parse_args(argv)
    if a.rounds < 10 or not 1 <= a.pages <= SLOTS:
        ap.error(f"--rounds must be at least 10 and --pages between 1 and {SLOTS}")
    if a.dir is not None and not os.path.isdir(a.dir):
        ap.error(f"--dir {a.dir}: not a directory")
    with tempfile.TemporaryDirectory(prefix="tapkiosk-bench-", dir=a.dir) as tmp:
        fd = os.open(os.path.join(tmp, "wal"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, bytes(FRAME * SLOTS), 0)
            os.fsync(fd)
            times = flush_times(fd, a.pages, a.rounds)
        finally:
            os.close(fd)
    base = statistics.median(times[GAPS_MS[0]])
    out = {}
    for gap, xs in times.items():
        p50, p99 = statistics.median(xs), pct(xs, 99)
        out[f"{gap:g}"] = {"p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
                           "ratio_p50": round(p50 / base, 2)}
        print(f"{a.pages} frames + fdatasync after {gap:g} ms idle: p50 {p50:.3f} ms, p99 "
              f"{p99:.3f} ms, p50 {p50 / base:.2f}x the {GAPS_MS[0]:g} ms gap's")
    print(json.dumps({"bench": "fsync_gap", "pages": a.pages, "rounds": a.rounds,
                      "gaps_ms": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
