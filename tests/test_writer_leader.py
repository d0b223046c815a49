# Runs on CPython (pytest): the writer's leader/follower group commit — who decides a tap, in what order.
"""A tap submitted while the writer is idle is decided on the submitting thread (the
"leader"); one submitted while it is busy is queued for the writer thread. Both give the same
stored result; many threads submitting at once still get each (device, seq) applied once,
one writer on the connection at a time (checked on a statement trace and around
``decide_many``), a device's taps in submission order, and ``stop()`` waits for a leader."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from host.rules.engine import Decision, Engine, Tap
from host.site.writer import Writer, WriterClosed
from host.store.db import open_db
from daemon_support import CARD, CARD2, balance, ledger_ok, tap_count


def _enc(tap: Tap, d: Decision) -> bytes:
    return b"R:%s:%d:%s:%d" % (tap.device_id.encode(), tap.seq, d.verdict.encode(), d.balance_fen)


def _busy(w: Writer) -> tuple[threading.Event, threading.Event]:
    """Keep the writer thread on a ``call`` job until the returned ``release`` is set."""
    inside, release = threading.Event(), threading.Event()

    def hold(db) -> None:
        inside.set()
        release.wait(30)
    w.call(hold)
    assert inside.wait(30)
    return inside, release


def _row(path: Path, device: str, seq: int) -> tuple:
    """The stored tap, without its id, time and latency (which differ run to run)."""
    db = open_db(path)
    try:
        cur = db.conn.execute("SELECT * FROM taps WHERE device_id = ? AND seq = ?", (device, seq))
        names = [c[0] for c in cur.description]
        row = cur.fetchone()
    finally:
        db.conn.close()
    return tuple(v for n, v in zip(names, row) if n not in ("id", "ts", "latency_ms"))


def test_a_lone_tap_is_decided_on_the_submitting_thread_when_the_writer_is_idle(
        site_writer) -> None:
    from host.site.metrics import Metrics
    m = Metrics()
    w, path, _ = site_writer(metrics=m)
    got: list[tuple[int, Decision | None, int]] = []
    w.submit_tap_then(Tap("kiosk-1", 1, CARD, amount_fen=300), _enc,
                      lambda d, err: got.append((threading.get_ident(), d,
                                                 tap_count(path, "kiosk-1"))))
    # Decided, committed and answered before submit_tap_then returned, on this thread.
    assert len(got) == 1
    ident, d, stored = got[0]
    assert ident == threading.get_ident() != w.thread_id
    assert d is not None and d.verdict == "grant" and stored == 1
    assert (w.led, w.taps, w.batches) == (1, 1, 1)
    fut = w.submit_tap(Tap("kiosk-1", 2, CARD, amount_fen=300), _enc)
    assert fut.done() and fut.result().reply.startswith(b"R:kiosk-1:2:grant:")
    assert w.led == 2 and m.value("tapkiosk_writer_led_taps_total") == 2
    _inside, release = _busy(w)
    queued = w.submit_tap(Tap("kiosk-1", 3, CARD, amount_fen=300), _enc)
    release.set()
    assert queued.result(30).verdict == "grant"
    assert w.led == 2 and m.value("tapkiosk_writer_led_taps_total") == 2   # not led


def test_a_tap_submitted_while_the_writer_is_busy_is_queued_for_the_writer_thread(
        site_writer) -> None:
    w, path, _ = site_writer()
    got: list[int] = []
    answered = threading.Event()
    _inside, release = _busy(w)
    w.submit_tap_then(Tap("kiosk-1", 1, CARD, amount_fen=300), _enc,
                      lambda d, err: (got.append(threading.get_ident()), answered.set()))
    assert got == [] and w.led == 0      # not decided here: the writer is busy
    release.set()
    assert answered.wait(30)
    assert got == [w.thread_id] and w.led == 0 and w.taps == 1
    w.stop()
    assert tap_count(path, "kiosk-1") == 1


def test_led_and_queued_taps_store_the_same_result(site_writer) -> None:
    out: dict[str, tuple] = {}
    for way in ("led", "queued"):
        w, path, ids = site_writer(f"{way}.db")
        release = _busy(w)[1] if way == "queued" else None
        taps = [Tap("kiosk-1", 5, CARD, amount_fen=250), Tap("kiosk-2", 6, CARD2, service=1)]
        futs = [w.submit_tap(t, _enc) for t in taps]
        if release is not None:
            assert not any(f.done() for f in futs)
            release.set()
        ds = [f.result(30) for f in futs]
        w.stop()
        assert w.led == (2 if way == "led" else 0)
        out[way] = (tuple((d.verdict, d.reason, d.balance_fen, d.reply) for d in ds),
                    _row(path, "kiosk-1", 5), _row(path, "kiosk-2", 6),
                    balance(path, ids["m1"]), balance(path, ids["m2"]), ledger_ok(path))
    assert out["led"] == out["queued"]
    assert out["led"][0][0][0] == "grant" and out["led"][-1] is True


class _Watched(Engine):
    """An engine that records which threads decided and whether two ever did at once."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.inside = threading.Lock()
        self.overlaps = 0
        self.threads: set[int] = set()

    def decide_many(self, jobs):
        if not self.inside.acquire(blocking=False):
            self.overlaps += 1
            self.inside.acquire()
        try:
            self.threads.add(threading.get_ident())
            return super().decide_many(jobs)
        finally:
            self.inside.release()


def _interleaved(trace: list[tuple[int, str]]) -> list[str]:
    """Statements run by another thread inside a transaction (BEGIN .. COMMIT/ROLLBACK)."""
    bad, owner = [], None
    for ident, stmt in trace:
        word = stmt.lstrip().split(None, 1)[0].upper() if stmt.strip() else ""
        if owner is not None and ident != owner:
            bad.append(stmt)
        if word == "BEGIN":
            owner = ident
        elif word in ("COMMIT", "ROLLBACK", "END"):
            owner = None
    return bad


def test_many_threads_submitting_apply_each_tap_once_one_writer_at_a_time(
        site_writer) -> None:
    w, path, ids = site_writer(engine_factory=_Watched, max_batch=8)
    before = balance(path, ids["m1"])
    trace: list[tuple[int, str]] = []
    w.db.conn.set_trace_callback(lambda s: trace.append((threading.get_ident(), s)))
    n_threads, per = 6, 25
    results: dict[int, list[Decision]] = {}
    errors: list[BaseException] = []

    def mine(i: int) -> list[Tap]:
        return [Tap("kiosk-1", i * 1000 + k, CARD, amount_fen=10) for k in range(1, per + 1)]

    def run(i: int) -> None:
        try:
            # Its own taps and a copy of the previous thread's: every tap is submitted twice.
            taps = [t for pair in zip(mine(i), mine((i - 1) % n_threads)) for t in pair]
            if i % 2:
                results[i] = [w.submit_tap(t, _enc).result(30) for t in taps]
                return
            got: list[Decision] = []
            done = threading.Semaphore(0)

            def then(d, err) -> None:
                got.append(d if err is None else err)
                done.release()
            for k in range(0, len(taps), 5):
                with w.holding():
                    for t in taps[k:k + 5]:
                        w.submit_tap_then(t, _enc, then)
            for _ in taps:
                assert done.acquire(timeout=30)
            results[i] = got
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    stop_calls = threading.Event()

    def calls() -> None:   # other writes keep the queue busy now and then
        while not stop_calls.is_set():
            w.call(lambda db: db.execute("SELECT count(*) FROM taps").fetchone()).result(30)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    caller = threading.Thread(target=calls)
    caller.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop_calls.set()
    caller.join(30)
    w.db.conn.set_trace_callback(None)
    w.stop()
    assert errors == []
    decisions = [d for ds in results.values() for d in ds]
    assert len(decisions) == 2 * n_threads * per and all(isinstance(d, Decision)
                                                          for d in decisions)
    by_reply: dict[bytes, list[Decision]] = {}
    for d in decisions:
        by_reply.setdefault(d.reply, []).append(d)
    # Each (device, seq) once applied and once replayed, with the very same reply bytes.
    assert len(by_reply) == n_threads * per
    assert all(sorted(d.replayed for d in ds) == [False, True] for ds in by_reply.values())
    assert tap_count(path, "kiosk-1") == n_threads * per
    assert balance(path, ids["m1"]) < before and ledger_ok(path)
    assert w.engine.overlaps == 0
    assert trace and _interleaved(trace) == []
    assert w.taps == 2 * n_threads * per


def test_a_devices_taps_keep_their_order_whether_led_or_queued(site_writer) -> None:
    w, path, _ = site_writer()
    order: list[int] = []
    stop = threading.Event()

    def calls() -> None:   # the writer is busy now and then: some taps lead, some queue
        while not stop.is_set():
            w.call(lambda db: stop.wait(0.001))

    caller = threading.Thread(target=calls)
    caller.start()
    try:
        for seq in range(1, 61):
            w.submit_tap_then(Tap("kiosk-1", seq, CARD, amount_fen=1), _enc,
                              lambda d, err, seq=seq: order.append(seq))
    finally:
        stop.set()
        caller.join(30)
        w.stop()
    assert order == list(range(1, 61))
    db = open_db(path)
    try:
        seqs = [r[0] for r in db.execute(
            "SELECT seq FROM taps WHERE device_id = 'kiosk-1' ORDER BY id").fetchall()]
    finally:
        db.conn.close()
    assert seqs == list(range(1, 61))


class _Slow(Writer):
    """A writer thread that, once it took a job off the queue, waits for ``go`` before it
    takes the writer's lock: the window in which a naive leader would overtake that job."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.took, self.go = threading.Event(), threading.Event()

    def _next(self):
        job = super()._next()
        self.took.set()
        self.go.wait(30)
        return job


def test_a_tap_never_overtakes_a_job_queued_before_it(site_writer) -> None:
    """The writer's lock is free while its thread holds a job it took off the queue: a tap
    submitted then is queued behind that job, not led ahead of it."""
    w, _path, _ = site_writer(cls=_Slow)
    order: list[object] = []
    try:
        first = w.call(lambda db: order.append("call"))
        assert w.took.wait(30)
        w.submit_tap_then(Tap("kiosk-1", 1, CARD, amount_fen=10), _enc,
                          lambda d, err: order.append(1))
        assert order == [] and w.led == 0
        w.go.set()
        first.result(30)
    finally:
        w.go.set()
        w.stop()
    assert order == ["call", 1]


def test_stop_waits_for_a_leader_then_refuses_new_and_held_taps(site_writer) -> None:
    w, path, _ = site_writer()
    in_answer, go_on = threading.Event(), threading.Event()

    def slow_answer(d, err) -> None:   # the leader still holds the writer while answering
        in_answer.set()
        go_on.wait(30)

    leader = threading.Thread(target=w.submit_tap_then, args=(
        Tap("kiosk-1", 1, CARD, amount_fen=10), _enc, slow_answer))
    leader.start()
    assert in_answer.wait(30)
    stopper = threading.Thread(target=w.stop)
    stopper.start()
    stopper.join(0.2)
    assert stopper.is_alive()           # the connection is not closed under the leader
    go_on.set()
    leader.join(30)
    stopper.join(30)
    assert not stopper.is_alive() and tap_count(path, "kiosk-1") == 1
    with pytest.raises(sqlite3.ProgrammingError):
        w.db.conn.execute("SELECT 1")   # closed once the leader was done
    with pytest.raises(WriterClosed):
        w.submit_tap_then(Tap("kiosk-1", 2, CARD, amount_fen=10), _enc, slow_answer)
    errs: list[BaseException | None] = []
    with w.holding():
        w.submit_tap_then(Tap("kiosk-1", 3, CARD, amount_fen=10), _enc,
                          lambda d, err: errs.append(err))
    assert len(errs) == 1 and isinstance(errs[0], WriterClosed)
    assert tap_count(path, "kiosk-1") == 1


def test_taps_held_by_a_thread_are_decided_as_one_batch_by_it(site_writer) -> None:
    w, path, _ = site_writer()
    got: list[tuple[int, int]] = []
    with w.holding():
        for seq in (1, 2, 3):
            w.submit_tap_then(Tap("kiosk-1", seq, CARD, amount_fen=10), _enc,
                              lambda d, err, seq=seq: got.append((seq, threading.get_ident())))
        assert got == [] and w.taps == 0   # held until the end of the block
    assert got == [(s, threading.get_ident()) for s in (1, 2, 3)]
    assert (w.batches, w.taps, w.led) == (1, 3, 3)
    w.stop()
    assert tap_count(path, "kiosk-1") == 3


def test_a_held_batch_bigger_than_lead_max_goes_to_the_writer_thread(site_writer) -> None:
    """A busy read's batch is decided by the writer thread; its reader goes back to reading."""
    w, path, _ = site_writer(lead_max=2)
    got: list[int] = []
    three = threading.Semaphore(0)

    def then(d, err) -> None:
        got.append(threading.get_ident())
        three.release()
    with w.holding():
        for seq in (1, 2, 3):
            w.submit_tap_then(Tap("kiosk-1", seq, CARD, amount_fen=10), _enc, then)
    for _ in range(3):
        assert three.acquire(timeout=30)
    assert got == [w.thread_id] * 3 and w.led == 0
    with w.holding():
        for seq in (4, 5):
            w.submit_tap_then(Tap("kiosk-1", seq, CARD, amount_fen=10), _enc, then)
    assert got[3:] == [threading.get_ident()] * 2 and w.led == 2
    w.stop()
    assert tap_count(path, "kiosk-1") == 5
