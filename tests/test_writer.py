# Runs on CPython (pytest): the daemon's single writer — batches, encoders, duplicates in a batch.
"""The writer hands each tap to the engine with its own encoder (``decide_many`` of
``(tap, encode_reply)`` pairs); a (device, seq) twice in one batch is applied once and both
callers get the same reply bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.ledger import book as ledger
from host.rules.engine import Decision, Tap
from host.errors import HostError
from host.store.db import open_db
from host.site.writer import Writer
from daemon_support import CARD, CARD2, balance, make_site, tap_count


def _encoder(tag: bytes, calls: list[tuple[bytes, int]]):
    """An encoder that records its calls and returns ``tag`` + the tap's seq and balance."""
    def enc(tap: Tap, d: Decision) -> bytes:
        calls.append((tag, tap.seq))
        return tag + b":%d:%d" % (tap.seq, d.balance_fen)
    return enc


def test_same_tap_twice_in_one_batch_applied_once(site_writer) -> None:
    w, path, ids = site_writer(start=False)
    before = balance(path, ids["m1"])
    calls: list[tuple[bytes, int]] = []
    # Queued before the thread starts, so all four land in one decide_many() batch.
    tap = Tap("kiosk-1", 7, CARD, amount_fen=300)
    futs = [w.submit_tap(tap, _encoder(b"A", calls)),
            w.submit_tap(Tap("kiosk-1", 8, CARD2, amount_fen=100), _encoder(b"B", calls)),
            w.submit_tap(Tap("kiosk-1", 7, CARD, amount_fen=300), _encoder(b"C", calls)),
            w.submit_tap(Tap("kiosk-2", 7, CARD, amount_fen=200), _encoder(b"D", calls))]
    w.start()
    out = [f.result(30) for f in futs]
    w.stop()
    assert w.batches == 1
    # The first copy of kiosk-1/7 encodes, the second is replayed with the same bytes.
    assert calls == [(b"A", 7), (b"B", 8), (b"D", 7)]
    assert out[0].reply == out[2].reply and out[0].reply.startswith(b"A:7:")
    assert not out[0].replayed and out[2].replayed
    assert out[1].reply.startswith(b"B:8:") and out[3].reply.startswith(b"D:7:")
    assert tap_count(path, "kiosk-1") == 2 and tap_count(path, "kiosk-2") == 1
    assert out[3].balance_fen == balance(path, ids["m1"]) < out[0].balance_fen < before
    db = open_db(path)
    try:
        assert ledger.verify(db) == []
        # kiosk-1/7 charged once: two kiosk spends on member 1 (300 and 200 at tier price).
        n = db.execute("SELECT count(*) FROM taps WHERE uid = ? AND charged_fen > 0",
                       (CARD,)).fetchone()[0]
        assert n == 2
    finally:
        db.conn.close()


def test_stored_reply_for_a_tap_applied_in_an_earlier_batch(site_writer) -> None:
    w, _path, _ = site_writer()
    calls: list[tuple[bytes, int]] = []
    first = w.submit_tap(Tap("kiosk-1", 3, CARD, amount_fen=100),
                         _encoder(b"A", calls)).result(30)
    again = w.submit_tap(Tap("kiosk-1", 3, CARD, amount_fen=100),
                         _encoder(b"B", calls)).result(30)
    assert calls == [(b"A", 3)] and again.replayed and again.reply == first.reply


def test_no_checkpoint_on_the_tap_path_checkpointer_does_it(site_writer) -> None:
    """The writer's connection never checkpoints inside COMMIT; the checkpointer copies the
    WAL back from its own connection and the store stays consistent."""
    w, path, _ = site_writer()
    assert w.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    for seq in range(1, 21):
        w.submit_tap(Tap("kiosk-1", seq, CARD, amount_fen=10), _encoder(b"A", [])).result(30)
    assert w.commits >= 20
    busy, frames, done = w.checkpointer.checkpoint()
    assert busy == 0 and frames > 0 and done == frames
    w.stop()
    assert tap_count(path, "kiosk-1") == 20
    db = open_db(path)
    try:
        assert ledger.verify(db) == []
    finally:
        db.conn.close()


def test_full_wal_is_finished_by_the_writer_and_restarts(tmp_path: Path) -> None:
    """Under sustained load the background checkpoint never completes before the next
    transaction; when it reports a full WAL the writer finishes one itself and the WAL
    restarts from its beginning instead of growing."""
    import threading

    from host.site.checkpoint import Checkpointer, passive_checkpoint
    path = tmp_path / "site.db"
    make_site(path)
    db = open_db(path)
    conn = db.conn
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    full = threading.Event()
    commits = [0]
    ck = Checkpointer(str(path), lambda: commits[0], period=0.01, on_full=full.set,
                      full_frames=1)
    try:
        conn.execute("CREATE TABLE filler (x BLOB)")
        for _ in range(50):
            conn.execute("INSERT INTO filler VALUES (randomblob(8000))")
        ck.start()
        commits[0] += 1                                           # the writer committed
        assert full.wait(30), "the checkpoint thread never reported a full WAL"
        _busy, frames_before, _done = passive_checkpoint(conn)   # what the writer does
        conn.execute("INSERT INTO filler VALUES (1)")             # restarts the WAL
        _busy, frames_after, _done = passive_checkpoint(conn)
        assert frames_before > 10 and frames_after < 5
    finally:
        ck.stop()
        db.conn.close()


def test_call_leaving_a_transaction_open_is_rolled_back_and_taps_go_on(tmp_path):
    """A writer call that forgets its COMMIT gets an error and its writes are undone; the
    writer can still begin the next transaction (a tap batch)."""
    w = Writer(str(tmp_path / "site.db")).start()
    try:
        def sloppy(db):
            db.conn.execute("BEGIN IMMEDIATE")
            db.conn.execute("INSERT INTO members (name, tier, created_at) VALUES ('x', 'silver', 0)")

        with pytest.raises(HostError, match="open transaction"):
            w.call(sloppy).result(10)
        assert w.call(lambda db: db.execute("SELECT count(*) FROM members").fetchone()[0]
                      ).result(10) == 0

        def ok(db):
            db.conn.execute("BEGIN IMMEDIATE")
            db.conn.execute("COMMIT")
            return 1
        assert w.call(ok).result(10) == 1
    finally:
        w.stop()


def test_a_tap_that_fails_its_batch_does_not_refuse_the_others(site_writer) -> None:
    """A tap the engine cannot decide (an unexpected exception rolls back the whole batch)
    fails alone: the taps batched with it are decided again one by one, each charged once."""
    from host.rules.engine import Engine

    class Poisoned(Engine):
        def _evaluate(self, conn, tap, *a):
            if tap.seq == 9:
                raise RuntimeError("poison")
            return super()._evaluate(conn, tap, *a)

    w, path, ids = site_writer(start=False, engine_factory=Poisoned)
    before = balance(path, ids["m1"])
    calls: list[tuple[bytes, int]] = []
    futs = [w.submit_tap(Tap("kiosk-1", 8, CARD, amount_fen=300), _encoder(b"A", calls)),
            w.submit_tap(Tap("kiosk-1", 9, CARD, amount_fen=300), _encoder(b"B", calls)),
            w.submit_tap(Tap("kiosk-2", 8, CARD, amount_fen=200), _encoder(b"C", calls))]
    w.start()
    with pytest.raises(RuntimeError, match="poison"):
        futs[1].result(30)
    ok = [futs[0].result(30), futs[2].result(30)]
    w.stop()
    assert [d.verdict for d in ok] == ["grant", "grant"]
    assert not any(d.replayed for d in ok)
    assert tap_count(path, "kiosk-1") == 1 and tap_count(path, "kiosk-2") == 1
    assert balance(path, ids["m1"]) == ok[1].balance_fen < ok[0].balance_fen < before
    db = open_db(path)
    try:
        assert ledger.verify(db) == []
    finally:
        db.conn.close()


def test_submit_tap_then_calls_back_on_the_writer_thread_after_commit(site_writer) -> None:
    """The daemon's tap path, queued (no leader): no future, ``done(decision, None)`` on the
    writer's thread once committed (the tap is in the store by then); a writer that never
    started calls ``done(None, WriterClosed)``; a callback that raises does not stop the
    writer."""
    import threading

    from host.site.writer import WriterClosed
    w, path, _ = site_writer(lead=False)
    got: list[tuple[int, Decision | None, BaseException | None, int, int]] = []
    done = threading.Event()

    def cb(seq: int):
        def then(d: Decision | None, err: BaseException | None) -> None:
            got.append((seq, d, err, threading.get_ident(), tap_count(path, "kiosk-1")))
            if seq == 1:
                raise RuntimeError("a callback that fails")
            if len(got) == 3:
                done.set()
        return then

    for seq in (1, 2, 3):
        w.submit_tap_then(Tap("kiosk-1", seq, CARD, amount_fen=10), _encoder(b"A", []), cb(seq))
    assert done.wait(30)
    w.stop()
    assert [g[0] for g in got] == [1, 2, 3]
    assert all(g[1] is not None and g[2] is None and g[1].reply.startswith(b"A:")
               for g in got)
    assert {g[3] for g in got} == {w.thread_id}
    assert [g[4] >= g[0] for g in got] == [True] * 3   # committed before its callback
    assert tap_count(path, "kiosk-1") == 3

    never = Writer(str(path))
    errs: list[BaseException | None] = []
    never.submit_tap_then(Tap("kiosk-1", 9, CARD, amount_fen=10), _encoder(b"A", []),
                          lambda d, err: errs.append(err))
    never.stop()
    assert len(errs) == 1 and isinstance(errs[0], WriterClosed)


def test_writer_counts_its_cpu_time_in_and_after_the_transaction(site_writer) -> None:
    """``tapkiosk_writer_cpu_seconds_total{phase}``: the writer thread's CPU time on batches
    of taps, in the transaction and answering after COMMIT (the callbacks' time goes to
    ``answer``, not to ``transaction``)."""
    import time

    from host.site.metrics import Metrics
    m = Metrics()
    w, path, _ = site_writer(start=False, metrics=m)

    def spin(d: Decision | None, err: BaseException | None) -> None:
        end = time.thread_time() + 0.05   # CPU spent in the callback, on the writer thread
        while time.thread_time() < end:
            pass

    for seq in (1, 2):
        w.submit_tap_then(Tap("kiosk-1", seq, CARD, amount_fen=10), _encoder(b"A", []), spin)
    w.start()
    w.stop()
    assert tap_count(path, "kiosk-1") == 2
    answer = m.value("tapkiosk_writer_cpu_seconds_total", phase="answer")
    assert answer >= 0.1
    assert 0 < m.value("tapkiosk_writer_cpu_seconds_total", phase="transaction") < answer
