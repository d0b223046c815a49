# Runs on CPython: benchmark of one kiosk tap through engine.decide() vs a bare SQLite write.
"""Cost of one kiosk tap through ``Engine.decide()`` (commit included) on a populated store,
against a bare ``BEGIN IMMEDIATE; UPDATE; INSERT; COMMIT`` with the same pragmas on the same
database, measured in the same run and interleaved so both see the same disk. Then counts,
for each, the SQL statements run and the WAL pages written per commit (the work the
commit's fsync has to cover). The connection is set up as the daemon's writer runs it: no
automatic checkpoint inside COMMIT, a checkpoint thread instead (``--auto-checkpoint`` for
SQLite's default, to compare).

Usage: ``python bench/ledger.py [--members 100000] [--rows 1000000] [--taps 2000] [--db PATH]
[--auto-checkpoint]``
The kiosk tap is timed and counted in the steady state (the member already has this
month's points lot: ``tap_*``, ``ratio_p50``) and as a member's first tap of the month, which
creates the lot (``tap_new_lot_p50_ms``, ``ratio_p50_new_lot``, ``tap_wal_pages_new_lot``).
The last line printed is JSON: ``{"bench": "ledger", "tap_p50_ms": .., "tap_p99_ms": ..,
"bare_p50_ms": .., "ratio_p50": .., "tap_wal_pages": .., "tap_wal_pages_new_lot": ..,
"tap_cpu_us_sync_off": .., ..}`` (``tap_wal_pages_by_btree``: the steady tap's WAL pages by
table or index, from the WAL's frames and ``dbstat``; ``*_cpu_us_sync_off``: process CPU per
commit with ``synchronous=OFF``, the fsync taken out, a less noisy figure on a loaded
machine; ``tap_in_sqlite_p50_ms``: the part of a steady tap spent inside SQLite's calls,
COMMIT and fsync included, and ``ratio_p50_in_sqlite`` its ratio to the bare write: what
ratio_p50 would be if the engine's Python took no time at all).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from host.rules.engine import Engine, Tap  # noqa: E402
from host.errors import InputError  # noqa: E402
from host.rules.policy import load_policy  # noqa: E402
from host.store.db import open_db  # noqa: E402
from host.store.devices import register_device  # noqa: E402
from host.site.checkpoint import Checkpointer, passive_checkpoint  # noqa: E402
from support import Args, bare_write as _bare_write, pct  # noqa: E402


def uid_of(i: int) -> str:
    """Card UID of bench member ``i`` (7 bytes, canonical hex)."""
    return f"04{i:012X}"


def populate(db, members: int, rows: int, now: int) -> float:
    """Bulk-insert ``members`` members with cards and ``rows`` ledger rows (a top-up then
    small spends per member, consistent with the projections) in one transaction."""
    t0 = time.perf_counter()
    per = max(1, rows // members)
    topup = 100 * per * 100 + 1_000_000
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO members (id, name, tier, principal_fen, created_at, last_active_at) "
        "VALUES (?, ?, 'silver', ?, ?, ?)",
        ((i, f"m{i}", topup - 100 * (per - 1), now - 86400 * 30, now) for i in range(1, members + 1)))
    conn.executemany("INSERT INTO cards (uid, member_id, created_at, updated_at) "
                     "VALUES (?, ?, ?, ?)",
                     ((uid_of(i), i, now, now) for i in range(1, members + 1)))

    def ledger_rows():
        n = 0
        for i in range(1, members + 1):
            yield (now - 86400 * 30, i, "principal", topup, "topup")
            n += 1
            for k in range(per - 1):
                yield (now - 86400 * 29 + k, i, "principal", -100, "spend")
                n += 1
            if n >= rows:
                return

    conn.executemany("INSERT INTO ledger (ts, member_id, currency, delta, kind) "
                     "VALUES (?, ?, ?, ?, ?)", ledger_rows())
    conn.execute("COMMIT")
    return time.perf_counter() - t0


def wal_pages_by_btree(conn, wal_path: str, commits: int) -> dict[str, float]:
    """WAL frames per commit by the b-tree (table or index) their page belongs to, from the
    WAL's frame headers and SQLite's ``dbstat`` table (``{}`` where SQLite lacks it)."""
    try:
        names = dict(conn.execute("SELECT pageno, name FROM dbstat"))
    except sqlite3.Error:
        return {}
    data = Path(wal_path).read_bytes()
    size = int.from_bytes(data[8:12], "big")
    counts: Counter[str] = Counter()
    for off in range(32, len(data) - 23, 24 + size):
        page = int.from_bytes(data[off:off + 4], "big")
        counts["page 1" if page == 1 else names.get(page, "(free)")] += 1
    return {name: round(n / commits, 2) for name, n in counts.most_common()}


class TimedConnection:
    """A connection that adds the wall time spent in its ``execute`` calls to ``spent[0]``
    (COMMIT and its fsync included): what a tap costs inside SQLite, the engine's Python
    being the rest of ``decide()``. Everything else is passed through."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.spent = [0.0]

    def execute(self, sql: str, params=()):  # noqa: ANN001, ANN201 - as sqlite3's
        t0 = time.perf_counter()
        try:
            return self._conn.execute(sql, params)
        finally:
            self.spent[0] += time.perf_counter() - t0

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._conn, name)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print figures, last line JSON. Returns the exit code."""
    ap = Args(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=100_000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--taps", type=int, default=2000)
    ap.add_argument("--db", help="database file to create (default: a temporary file)")
    ap.add_argument("--auto-checkpoint", action="store_true",
                    help="SQLite's automatic WAL checkpoint inside COMMIT (default: as the "
                         "daemon runs, autocheckpoint off and a checkpoint thread)")
    args = ap.parse_args(argv)
    if args.members < 1 or args.rows < args.members or args.taps < 10:
        print("ledger bench: error: need members >= 1, rows >= members, taps >= 10",
              file=sys.stderr)
        return 2
    tmp = None
    if args.db:
        path = args.db
        if os.path.exists(path):
            print(f"ledger bench: error: {path} exists; give a new file", file=sys.stderr)
            return 2
    else:
        tmp = tempfile.TemporaryDirectory(prefix="tapkiosk-bench-")
        path = os.path.join(tmp.name, "bench.db")
    try:
        policy = load_policy()
        db = open_db(path)
        now = datetime(2026, 3, 10, 12, 0, tzinfo=policy.tz)
        build_s = populate(db, args.members, args.rows, int(now.timestamp()))
        register_device(db, "K1", "kiosk")
        n_rows = db.execute("SELECT count(*) FROM ledger").fetchone()[0]
        print(f"populated {args.members} members, {n_rows} ledger rows in {build_s:.1f} s "
              f"({path})")
        clock = lambda: now  # noqa: E731 - fixed clock: no date rule changes mid-run
        engine = Engine(db, policy, clock)
        conn = db.conn
        commits = [0]
        ckpt = None
        wal_full = threading.Event()
        finish_ms: list[float] = []

        def between() -> None:
            """What the daemon's writer does between two transactions (untimed here, and
            reported): finish a checkpoint when the checkpoint thread found the WAL full."""
            commits[0] += 1
            if wal_full.is_set():
                wal_full.clear()
                t = time.perf_counter()
                passive_checkpoint(conn)
                finish_ms.append((time.perf_counter() - t) * 1000)

        if not args.auto_checkpoint:   # the daemon's writer setup (host/site/commit.py)
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            ckpt = Checkpointer(path, lambda: commits[0], on_full=wal_full.set).start()

        ts = int(now.timestamp())

        def bare_write(member: int) -> None:
            """The baseline: one durable UPDATE + INSERT, as small as a money write gets."""
            _bare_write(conn, member, ts)

        rng = random.Random(7)
        warm = 50
        # Distinct members: a steady pool (each taps once untimed first, so its month's
        # points lot exists) and fresh ones (their first tap this month creates the lot).
        picks = rng.sample(range(1, args.members + 1), min(args.members, 500 + args.taps
                                                           + warm + 200))
        pool, fresh = picks[:500], picks[500:]
        seq = [0]

        def tap(member: int, amount: int) -> float:
            seq[0] += 1
            t0 = time.perf_counter()
            d = engine.decide(Tap("K1", seq[0], uid_of(member), amount_fen=amount))
            ms = (time.perf_counter() - t0) * 1000
            between()
            if d.verdict != "grant":
                raise RuntimeError(f"bench tap denied: {d.reason}")
            return ms

        for m in pool:
            tap(m, 300)
        tap_ms: list[float] = []
        new_ms: list[float] = []
        bare_ms: list[float] = []
        for i in range(args.taps + warm):
            steady = tap(rng.choice(pool), 500 + i % 300)
            m2 = rng.randint(1, args.members)
            t2 = time.perf_counter()
            bare_write(m2)
            t3 = time.perf_counter()
            between()
            new = tap(fresh[i % len(fresh)], 500 + i % 300) if len(fresh) > 200 else steady
            if i >= warm:
                tap_ms.append(steady)
                new_ms.append(new)
                bare_ms.append((t3 - t2) * 1000)
        # The steady tap again, its time inside SQLite's calls taken apart from the engine's
        # Python: the part of the tap no change to the rules' code can remove (untimed in
        # the figures above; the wrapper costs well under 1 us a call).
        timed = TimedConnection(conn)
        sql_ms: list[float] = []
        sql_bare_ms: list[float] = []
        db.conn = timed
        try:
            for i in range(max(10, args.taps // 2)):
                timed.spent[0] = 0.0
                tap(rng.choice(pool), 500 + i % 300)
                sql_ms.append(timed.spent[0] * 1000)
                t2 = time.perf_counter()
                bare_write(rng.randint(1, args.members))
                sql_bare_ms.append((time.perf_counter() - t2) * 1000)
                between()
        finally:
            db.conn = conn
        # Group commit as the daemon's writer does it: decide_many() of 8 taps per transaction.
        batch_ms: list[float] = []
        for _ in range(max(10, args.taps // 8)):
            batch = [(Tap("K1", seq[0] + k + 1, uid_of(rng.choice(pool)), amount_fen=300),
                      None) for k in range(8)]
            seq[0] += 8
            t0 = time.perf_counter()
            engine.decide_many(batch)
            batch_ms.append((time.perf_counter() - t0) * 1000 / 8)
            between()
        # Work per commit: statements (trace callback) and WAL pages (WAL growth after a
        # truncating checkpoint; no checkpoint runs in between: autocheckpoint off here).
        n_probe = 100
        frame = db.execute("PRAGMA page_size").fetchone()[0] + 24

        if ckpt is not None:
            ckpt.stop()

        def probe(fn) -> tuple[float, float, float]:
            """(statements sent, trigger programs run, WAL pages) per call of ``fn``. A
            trigger program (the day marks) traces as a repeat of the statement that fired
            it, so a repeat is counted as a trigger run, not as a statement."""
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            stmts: list[str] = []
            conn.set_trace_callback(stmts.append)
            for k in range(n_probe):
                fn(k)
            conn.set_trace_callback(None)
            pages = os.path.getsize(path + "-wal") / frame / n_probe
            sent = sum(1 for i, x in enumerate(stmts) if i == 0 or x != stmts[i - 1])
            return sent / n_probe, (len(stmts) - sent) / n_probe, pages

        def probe_tap(member: int) -> None:
            seq[0] += 1
            engine.decide(Tap("K1", seq[0], uid_of(member), amount_fen=300))

        def probe_batch(k: int) -> None:
            base = seq[0]
            seq[0] += 8
            engine.decide_many([(Tap("K1", base + j + 1, uid_of(rng.choice(pool)),
                                     amount_fen=300), None) for j in range(8)])

        tap_stmts, tap_trig, tap_pages = probe(lambda k: probe_tap(pool[k % len(pool)]))
        by_btree = wal_pages_by_btree(conn, path + "-wal", n_probe)
        new_stmts, _, new_pages = probe(lambda k: probe_tap(fresh[-1 - k % 200]))
        bare_stmts, _, bare_pages = probe(lambda k: bare_write(rng.randint(1, args.members)))
        # Group commit: what a tap costs when the writer commits 8 queued taps at once.
        batch_stmts, _, batch_pages = (x / 8 for x in probe(probe_batch))
        # CPU per commit without the disk: synchronous=OFF (no fsync), process CPU time
        # (less noisy than wall time on a loaded machine), steady taps against bare writes
        # in alternating blocks; medians of the blocks.
        conn.execute("PRAGMA synchronous = OFF")
        tap_cpu, bare_cpu = [], []
        for _ in range(5):
            t0 = time.process_time()
            for k in range(max(10, args.taps // 5)):
                probe_tap(pool[k % len(pool)])
            tap_cpu.append((time.process_time() - t0) * 1e6 / max(10, args.taps // 5))
            t0 = time.process_time()
            for _k in range(max(10, args.taps // 5)):
                bare_write(rng.randint(1, args.members))
            bare_cpu.append((time.process_time() - t0) * 1e6 / max(10, args.taps // 5))
        conn.execute("PRAGMA synchronous = FULL")
        cpu_tap, cpu_bare = statistics.median(tap_cpu), statistics.median(bare_cpu)
        tap50, tap99 = statistics.median(tap_ms), pct(tap_ms, 99)
        new50 = statistics.median(new_ms)
        batch50 = statistics.median(batch_ms)
        sql50, sql_bare50 = statistics.median(sql_ms), statistics.median(sql_bare_ms)
        bare50, bare99 = statistics.median(bare_ms), pct(bare_ms, 99)
        print(f"decide() kiosk tap, member has this month's lot: p50 {tap50:.3f} ms  "
              f"p99 {tap99:.3f} ms  (n={len(tap_ms)})")
        print(f"decide() kiosk tap, first of the month (new lot): p50 {new50:.3f} ms")
        print(f"bare UPDATE+INSERT: p50 {bare50:.3f} ms  p99 {bare99:.3f} ms  (n={len(bare_ms)})")
        print(f"decide_many() batches of 8: p50 {batch50:.3f} ms per tap")
        print(f"the steady tap's time inside SQLite (statements, COMMIT, fsync): p50 "
              f"{sql50:.3f} ms, {sql50 / sql_bare50:.2f}x the bare write measured with it "
              f"(p50 {sql_bare50:.3f} ms): the ratio with no engine Python at all")
        print(f"ratio p50 {tap50 / bare50:.2f} (new lot {new50 / bare50:.2f})  ratio p99 "
              f"{tap99 / bare99:.2f}  (target p50 <= 1.5)")
        if ckpt is not None:
            print(f"checkpoints: {ckpt.checkpoints} by the checkpoint thread, {len(finish_ms)} "
                  f"finished between transactions ({sum(finish_ms):.1f} ms in all, untimed)")
        print(f"per commit: decide() {tap_stmts:.1f} statements (+{tap_trig:.1f} trigger runs), "
              f"{tap_pages:.1f} WAL pages; first tap of the month {new_stmts:.1f} statements, "
              f"{new_pages:.1f} WAL pages; bare {bare_stmts:.1f} statements, "
              f"{bare_pages:.1f} WAL pages")
        print("steady tap's WAL pages by b-tree: " + ", ".join(f"{k} {v}"
                                                              for k, v in by_btree.items()))
        print(f"per tap in batches of 8: {batch_stmts:.1f} statements, {batch_pages:.1f} WAL pages")
        print(f"CPU per commit, synchronous=OFF: decide() {cpu_tap:.0f} us, bare {cpu_bare:.0f} us "
              f"(ratio {cpu_tap / cpu_bare:.2f})")
        print(json.dumps({"bench": "ledger", "tap_p50_ms": round(tap50, 3),
                          "tap_p99_ms": round(tap99, 3), "bare_p50_ms": round(bare50, 3),
                          "bare_p99_ms": round(bare99, 3), "ratio_p50": round(tap50 / bare50, 2),
                          "tap_new_lot_p50_ms": round(new50, 3),
                          "ratio_p50_new_lot": round(new50 / bare50, 2),
                          "batch8_per_tap_p50_ms": round(batch50, 3),
                          "tap_in_sqlite_p50_ms": round(sql50, 3),
                          "ratio_p50_in_sqlite": round(sql50 / sql_bare50, 2),
                          "tap_statements": round(tap_stmts, 1),
                          "tap_trigger_runs": round(tap_trig, 1),
                          "tap_wal_pages": round(tap_pages, 1),
                          "tap_statements_new_lot": round(new_stmts, 1),
                          "tap_wal_pages_new_lot": round(new_pages, 1),
                          "tap_wal_pages_by_btree": by_btree,
                          "bare_statements": round(bare_stmts, 1),
                          "bare_wal_pages": round(bare_pages, 1),
                          "batch8_statements_per_tap": round(batch_stmts, 1),
                          "batch8_wal_pages_per_tap": round(batch_pages, 1),
                          "tap_cpu_us_sync_off": round(cpu_tap), "bare_cpu_us_sync_off":
                          round(cpu_bare),
                          "checkpoint": "auto" if args.auto_checkpoint else "thread",
                          "members": args.members, "ledger_rows": n_rows,
                          "build_s": round(build_s, 1)}))
        db.conn.close()
        return 0
    except (InputError, OSError) as e:
        print(f"ledger bench: error: {e}", file=sys.stderr)
        return 2
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
