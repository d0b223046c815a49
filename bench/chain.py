# Runs on CPython: benchmark of taps/s and tap latency for one and two daemons on one PostgreSQL.
"""A chain on PostgreSQL: one daemon, then two daemons (each with its own mosquitto, as two
stores have) deciding taps on one PostgreSQL database, against a bare PostgreSQL transaction
writing the same rows (the member's balance, a ledger row, a tap row) in the same run.

Besides the readers' latency (which in a closed loop is mostly the queue before the writer:
readers / taps per second), one tap's own transaction is timed: ``Engine.decide`` of a
single tap in this process, alternating with the bare transaction (raw psycopg, one round
trip per statement), so both see the same load: ``txn_p50_ms`` against ``bare_p50_ms``.
``retries``: transactions the daemons ran again (serialization failure, deadlock, a tap
stored first by the other daemon; their ``tapkiosk_store_retries`` metric).

Starts its own PostgreSQL (Debian's package, tests/pg_support.py: initdb in a temporary
directory, fsync on) and brokers. Readers are the closed-loop load generator of
bench/throughput.py (each reader sends its next TAP when the previous DECISION came back);
the tap latency is from publishing the TAP to receiving its DECISION. Each phase uses its own
readers and members. After both phases: ``lost`` = taps a reader saw decided that the store
does not hold, ``doubled`` = duplicate decisions received plus taps charged more than once.

Usage: ``python bench/chain.py [--devices 20] [--seconds 5] [--bare 500]``
Last line JSON: ``{"bench": "chain", "taps_per_s_1": .., "taps_per_s_2": .., "tap_p50_ms": ..,
"tap_p99_ms": .., "tap_p99_ms_2": .., "txn_p50_ms": .., "txn_p99_ms": .., "bare_p50_ms": ..,
"bare_p99_ms": .., "retries": .., "lost": 0, "doubled": 0}`` (``tap_p50_ms``/``tap_p99_ms``:
one daemon; ``retries``: both phases).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import Args, Broker, pct, scrape, start_daemon, stop  # noqa: E402
from throughput import Loader, make_site  # noqa: E402

import pg_support  # noqa: E402  (tests/, put on the path by support)
from host.privacy import keyfile  # noqa: E402
from host.rules.engine import Engine, Tap  # noqa: E402
from host.site.outage import JOURNAL_ENV  # noqa: E402
from host.store.db import open_db  # noqa: E402
from protocol import packet as pk  # noqa: E402


class TimedLoader(Loader):
    """The throughput loader, timing each tap from TAP sent to DECISION received."""

    def __init__(self, *args) -> None:
        self.sent_at: dict[str, float] = {}
        self.ms: list[float] = []
        super().__init__(*args)

    def send_tap(self, dev: str) -> None:
        self.sent_at[dev] = time.perf_counter()
        super().send_tap(dev)

    def _on_message(self, topic: str, payload: bytes) -> None:
        dev = topic.split("/")[2]
        t = time.perf_counter()
        try:
            p = pk.decode(payload, self.devs[dev][0], pk.DOWN)
            if p.type == pk.DECISION and self.pending.get(dev) == p.fields["tap_seq"]:
                self.ms.append((t - self.sent_at[dev]) * 1000)
        except Exception:  # noqa: BLE001 - the base class counts it
            pass
        super()._on_message(topic, payload)


def run_phase(url: str, tmp: Path, groups: list[list[tuple[str, bytes, str]]],
              seconds: float) -> dict:
    """One daemon (and broker) per group of readers; closed loop for ``seconds``."""
    brokers, procs, ports, loaders = [], [], [], []
    try:
        for i, devs in enumerate(groups):
            work = tmp / f"store{len(groups)}-{i}"
            work.mkdir()
            brokers.append(Broker(work))
            # Each store's daemon its own offline journal (not the shared one in the user's
            # data dir, which another daemon or another version may hold).
            os.environ[JOURNAL_ENV] = str(work / "offline-journal.db")
            proc, port = start_daemon(url, work, "--mqtt", brokers[-1].address, metrics=True)
            procs.append(proc)
            ports.append(port)
            half = (len(devs) + 1) // 2
            loaders += [TimedLoader(brokers[-1], part, 10 * len(groups) + i * 2 + k)
                        for k, part in enumerate((devs[:half], devs[half:])) if part]
        for ld in loaders:
            ld.ready.wait(10)
        for ld in loaders:
            ld.start()
        # Warm-up: every reader decided once. A TAP published before the daemon's MQTT link
        # subscribed is lost (no session yet): such a reader sends a new TAP.
        deadline = time.monotonic() + 30
        kick, kicked = time.monotonic() + 2, 0
        while any(ld.decided == 0 for ld in loaders):
            if time.monotonic() > deadline:
                raise RuntimeError(f"readers got no decision (see {tmp}/store*/daemon.log)")
            if time.monotonic() > kick:
                kick = time.monotonic() + 2
                for ld in loaders:
                    with ld.lock:
                        for dev in [d for d in ld.devs if d in ld.pending]:
                            ld.send_tap(dev)
                            kicked += 1
            time.sleep(0.05)
        time.sleep(1.0)
        base = sum(ld.decided for ld in loaders)
        for ld in loaders:
            ld.ms.clear()
        t0 = time.perf_counter()
        time.sleep(seconds)
        done = sum(ld.decided for ld in loaders) - base
        elapsed = time.perf_counter() - t0
        ms = [x for ld in loaders for x in ld.ms]
        for ld in loaders:
            ld.stop()
        for ld in loaders:
            ld.idle.wait(15)
        retries = sum(v for port in ports for k, v in scrape(port).items()
                      if k.startswith("tapkiosk_store_retries"))
        return {"rate": done / elapsed, "ms": ms, "retries": int(retries),
                "decided": sum(ld.decided for ld in loaders),
                "sent": sum(ld.sent for ld in loaders),
                # A kicked reader's first TAP may still be decided, after its second one
                # was sent: that late DECISION is not a duplicate.
                "dupes": max(0, sum(ld.dupes for ld in loaders) - kicked),
                "bad": sum(ld.bad for ld in loaders)}
    finally:
        for ld in loaders:
            ld.close()
        for p in procs:
            stop(p, 30)
        for b in brokers:
            b.stop()


def bare_once(pg, i: int, member: int, now: int) -> float:
    """The baseline: one durable transaction writing the rows a tap writes (the member's
    balance, a ledger row, a tap row), raw psycopg, one round trip per statement."""
    t0 = time.perf_counter()
    pg.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
    pg.execute("UPDATE members SET principal_fen = principal_fen - 1 WHERE id = %s", (member,))
    tap_id = pg.execute("INSERT INTO taps (ts, device_id, seq, uid, member_id, verdict, reason,"
                        " relay_ms, pattern, text, balance_fen, points, uses_left) VALUES (%s, "
                        "'bare', %s, 'BARE', %s, 'grant', 'ok', 0, 0, '', 0, 0, 0) RETURNING id",
                        (now, i, member)).fetchone()[0]
    pg.execute("INSERT INTO ledger (ts, member_id, currency, delta, kind, tap_id) VALUES (%s, "
               "%s, 'principal', -1, 'spend', %s)", (now, member, tap_id))
    pg.execute("COMMIT")
    return (time.perf_counter() - t0) * 1000


def bare_and_txn(url: str, n: int, member: int, reader: tuple[str, bytes, str],
                 first_seq: int = 1) -> tuple[list[float], list[float]]:
    """``n`` bare transactions alternating with ``n`` taps decided one at a time by the
    engine (``reader``'s kiosk and card), each timed: (bare ms, tap transaction ms)."""
    import psycopg
    db = open_db(url)
    engine = Engine(db)
    bare_ms, txn_ms = [], []
    now = int(time.time())
    with psycopg.connect(url, autocommit=True) as pg:
        for i in range(first_seq, first_seq + n):
            bare_ms.append(bare_once(pg, i, member, now))
            t0 = time.perf_counter()
            engine.decide(Tap(reader[0], i, reader[2], amount_fen=100))
            txn_ms.append((time.perf_counter() - t0) * 1000)
    db.close()
    return bare_ms, txn_ms


def main(argv: list[str] | None = None) -> int:
    ap = Args(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=20, help="readers per phase")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--bare", type=int, default=500, help="bare transactions")
    a = ap.parse_args(argv)
    why = pg_support.unavailable()
    if why:
        print(f"skipped: {why}")
        print(json.dumps({"bench": "chain", "skipped": why}))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="tapkiosk-bench-chain-"))
    os.environ[keyfile.ENV] = str(tmp / "chain.key")
    keyfile.create(os.environ[keyfile.ENV])
    server = pg_support.PgServer().init().start()
    try:
        server.admin("CREATE DATABASE chain")
        url = server.url("chain")
        open_db(url, upgrade=True).close()
        devices = make_site(url, 2 * a.devices + 1)
        one, two, solo = devices[:a.devices], devices[a.devices:-1], devices[-1]
        bare_ms, txn_ms = bare_and_txn(url, a.bare // 2, 1, solo)
        p1 = run_phase(url, tmp, [one], a.seconds)
        p2 = run_phase(url, tmp, [two[:len(two) // 2], two[len(two) // 2:]], a.seconds)
        more = bare_and_txn(url, a.bare - a.bare // 2, 2, solo, first_seq=a.bare)
        bare_ms, txn_ms = bare_ms + more[0], txn_ms + more[1]
        db = open_db(url)
        stored = db.execute("SELECT count(*) FROM taps WHERE device_id NOT IN ('bare', ?)",
                            (solo[0],)).fetchone()[0]
        twice = db.execute("SELECT count(*) - count(DISTINCT tap_id) FROM ledger WHERE "
                           "kind = 'spend' AND currency = 'principal' AND tap_id IN "
                           "(SELECT id FROM taps WHERE device_id NOT IN ('bare', ?))",
                           (solo[0],)).fetchone()[0]
        db.close()
    finally:
        server.cleanup()
    decided = p1["decided"] + p2["decided"]
    lost = max(0, decided - stored)
    doubled = p1["dupes"] + p2["dupes"] + twice
    out = {"bench": "chain", "devices": a.devices,
           "taps_per_s_1": round(p1["rate"], 1), "taps_per_s_2": round(p2["rate"], 1),
           "tap_p50_ms": round(statistics.median(p1["ms"]), 2),
           "tap_p99_ms": round(pct(p1["ms"], 99), 2),
           "tap_p50_ms_2": round(statistics.median(p2["ms"]), 2),
           "tap_p99_ms_2": round(pct(p2["ms"], 99), 2),
           "txn_p50_ms": round(statistics.median(txn_ms), 2),
           "txn_p99_ms": round(pct(txn_ms, 99), 2),
           "bare_p50_ms": round(statistics.median(bare_ms), 2),
           "bare_p99_ms": round(pct(bare_ms, 99), 2),
           "retries": p1["retries"] + p2["retries"],
           "decided": decided, "stored": stored, "lost": lost, "doubled": doubled,
           "denied_or_bad": p1["bad"] + p2["bad"]}
    print(f"{a.devices} readers per phase, {a.seconds:.0f} s measured per phase, PostgreSQL "
          "with fsync on")
    print(f"one daemon:  {out['taps_per_s_1']} taps/s, tap p50 {out['tap_p50_ms']} ms, "
          f"p99 {out['tap_p99_ms']} ms")
    print(f"two daemons: {out['taps_per_s_2']} taps/s, tap p50 {out['tap_p50_ms_2']} ms, "
          f"p99 {out['tap_p99_ms_2']} ms")
    print(f"one tap's transaction (engine, alone): p50 {out['txn_p50_ms']} ms, "
          f"p99 {out['txn_p99_ms']} ms")
    print(f"bare PostgreSQL transaction: p50 {out['bare_p50_ms']} ms, p99 {out['bare_p99_ms']} ms")
    print(f"transactions run again (retries): {out['retries']}")
    print(f"decided {decided}, stored {stored}, lost {lost}, doubled {doubled}")
    print(json.dumps(out))
    shutil.rmtree(tmp, ignore_errors=True)   # kept when a phase failed: its daemon logs
    return 0 if lost == 0 and doubled == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
