# Runs on CPython: profile of Engine.decide_many as the throughput bench drives it (kiosk taps in batches).
"""CPU per tap of ``Engine.decide_many`` over batches of kiosk taps from many devices.

The site is ``bench/throughput.py``'s (``make_site``: kiosks, one member and card each, a
balance); each batch holds one tap of ``--batch`` devices in turn (the writer's ~47 taps a
transaction), each with the daemon's DECISION encoder (``decision_frame`` with the device's
MAC). Timed with the process's CPU clock (``time.process_time``), so the durable COMMIT's
fsync wait is not counted; ``--sync off`` leaves it out altogether.

``--profile N``: cProfile of the run, top N functions by own time. ``--sql``: every
statement timed (wall, per tap) through a proxy around the connection. Both slow the run:
their CPU figure is not comparable (``profiled`` in the JSON).

Usage: ``python bench/engine_batch.py [--devices 100] [--batch 47] [--batches 200]``
Last line JSON: ``{"bench": "engine_batch", "cpu_us_per_tap": .., ...}``.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import gc
import json
import pstats
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import Args  # noqa: E402
from throughput import make_site  # noqa: E402

from host.rules.engine import Engine, Tap  # noqa: E402
from host.site.decision_frame import decision_frame  # noqa: E402
from host.site.taps import decision_fields  # noqa: E402
from host.store.db import open_db  # noqa: E402
from protocol.mac import Mac  # noqa: E402


class _Timed:
    """The connection with every ``execute`` timed by statement text."""

    def __init__(self, conn, acc, cnt) -> None:
        self._c, self._acc, self._cnt = conn, acc, cnt

    def __getattr__(self, name):
        return getattr(self._c, name)

    def execute(self, sql, *a):
        t = time.perf_counter()
        r = self._c.execute(sql, *a)
        k = " ".join(sql.split())[:80]
        self._acc[k] += time.perf_counter() - t
        self._cnt[k] += 1
        return r


def _encoder(dev: str, mac: Mac, down: list[int]):
    def encode(tap: Tap, d) -> bytes:
        down[0] += 1
        return decision_frame(down[0], dev, decision_fields(tap.seq, d), mac)
    return encode


def main(argv: list[str] | None = None) -> int:
    ap = Args(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--batch", type=int, default=47)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--sync", choices=("full", "off"), default="full")
    ap.add_argument("--profile", type=int, default=0)
    ap.add_argument("--sql", action="store_true")
    ap.add_argument("--cache-kib", type=int, default=0,
                    help="PRAGMA cache_size of the engine's connection (0: open_db's)")
    a = ap.parse_args(argv)
    if a.devices < 1 or a.batch < 1 or a.batches < 1 or a.profile < 0 or a.cache_kib < 0:
        ap.error("need devices, batch and batches >= 1, profile and cache-kib >= 0")
    with tempfile.TemporaryDirectory(prefix="tapkiosk-engine-") as tmp:
        return _run(a, Path(tmp) / "site.db")


def _run(a: argparse.Namespace, path: Path) -> int:
    """The bench on a new site at ``path``; the exit code (1 when a tap was not granted)."""
    devices = make_site(path, a.devices)
    db = open_db(path)
    if a.sync == "off":
        db.conn.execute("PRAGMA synchronous = OFF")
    if a.cache_kib:
        db.conn.execute(f"PRAGMA cache_size = -{a.cache_kib}")
    eng = Engine(db)
    down = [0]
    encs = {d: _encoder(d, Mac(k), down) for d, k, _u in devices}
    seq = {d: 0 for d, _k, _u in devices}
    uid = {d: u for d, _k, u in devices}
    order = [d for d, _k, _u in devices]
    pos = [0]

    def batch() -> list:
        jobs = []
        for _ in range(a.batch):
            d = order[pos[0] % len(order)]
            pos[0] += 1
            seq[d] += 1
            tap = Tap(d, seq[d], uid[d], sak=8, amount_fen=100)
            jobs.append((tap, partial(encs[d], tap)))   # as host/site/commit.py
        return jobs

    for _ in range(20):                      # warm-up: devices, statements, pages
        eng.decide_many(batch())
    gc.collect()
    gc.freeze()                              # as the daemon after start (host/site/gctune.py)
    acc: dict[str, float] = collections.defaultdict(float)
    cnt: collections.Counter = collections.Counter()
    if a.sql:
        db.conn = _Timed(db.conn, acc, cnt)
    prof = cProfile.Profile() if a.profile else None
    per_batch = []
    granted = 0
    if prof:
        prof.enable()
    for _ in range(a.batches):
        jobs = batch()
        t = time.process_time()
        out = eng.decide_many(jobs)
        per_batch.append((time.process_time() - t) / len(jobs) * 1e6)
        granted += sum(d.verdict == "grant" for d in out)
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(a.profile)
    taps = a.batch * a.batches
    if a.sql:
        for k, v in sorted(acc.items(), key=lambda x: -x[1]):
            print(f"{v * 1e6 / taps:7.1f} us  x{cnt[k] / taps:.2f}  {k}")
        print(f"sql total {sum(acc.values()) * 1e6 / taps:.1f} us a tap, "
              f"{len(acc)} distinct statements")
    per_batch.sort()
    cpu = sum(per_batch) / len(per_batch)
    med = statistics.median(per_batch)
    p99 = per_batch[min(len(per_batch) - 1, int(len(per_batch) * 0.99))]
    print(f"CPU per tap: mean {cpu:.1f} us, median batch {med:.1f} us, p99 batch {p99:.1f} us "
          f"({a.batches} batches of {a.batch}, sync {a.sync}); granted {granted}/{taps}")
    print(json.dumps({"bench": "engine_batch", "cpu_us_per_tap": round(cpu, 1),
                      "cpu_us_per_tap_median": round(med, 1),
                      "cpu_us_per_tap_p99_batch": round(p99, 1), "batch": a.batch,
                      "batches": a.batches, "sync": a.sync, "granted": granted,
                      "taps": taps, "profiled": bool(a.profile or a.sql)}))
    db.conn.close()
    return 0 if granted == taps else 1


if __name__ == "__main__":
    sys.exit(main())
