# Runs on CPython (host): the writer's work on its one connection, and what follows each commit.
"""``Committer``: what the thread holding the writer (host/site/writer.py) runs on the one
write connection: a batch of taps (``Engine.decide_many``, or the offline mode's), a call,
the offline mode's idle turn; then what follows a commit: the links' flushes
(``after_job``), a checkpoint when the WAL is full. It counts batches, taps and commits,
and the writer's metrics. Who runs it, and when, is the Writer's business."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

import sqlite_utils

from host.errors import HostError
from host.rules.engine import Decision, Engine, Tap
from host.rules.policy import Policy
from host.site.checkpoint import Checkpointer, passive_checkpoint
from host.site.metrics import Metrics
from host.site.outage import Outage
from host.store.db import is_postgres, open_db, retrying

Encoder = Callable[[Tap, Decision], bytes]
Done = Callable[[Decision | None, BaseException | None], None]

log = logging.getLogger("tapkiosk.writer")


class TapJob:
    """A queued tap: its committed Decision (or the exception) goes to its future, or
    straight to ``done(decision, error)`` on the deciding thread when one was given (no
    future to make, lock and resolve per tap)."""

    __slots__ = ("tap", "encoder", "future", "done", "queued")

    def __init__(self, tap: Tap, encoder: Encoder, done: Done | None = None) -> None:
        self.tap = tap
        self.encoder = encoder
        self.done = done
        self.future: Future[Decision] | None = Future() if done is None else None
        self.queued = time.perf_counter()

    def resolve(self, d: Decision) -> None:
        if self.future is not None:
            self.future.set_result(d)
        else:
            self._call(d, None)

    def fail(self, e: BaseException) -> None:
        if self.future is not None:
            self.future.set_exception(e)
        else:
            self._call(None, e)

    def _call(self, d: Decision | None, e: BaseException | None) -> None:
        try:
            self.done(d, e)   # type: ignore[misc]
        except Exception:  # noqa: BLE001 - as a future's callback: logged, the writer goes on
            log.exception("writer: a tap's done callback failed")


class CallJob:
    """A queued ``Writer.call``: ``fn(db)``'s result (or exception) goes to its future."""

    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[sqlite_utils.Database], Any]) -> None:
        self.fn = fn
        self.future: Future[Any] = Future()


class Committer:
    """See the module doc. ``db_path`` is opened here (migrations applied; InputError when
    it cannot be)."""

    def __init__(self, db_path: str, *, policy: Policy | None = None,
                 metrics: Metrics | None = None,
                 engine_factory: Callable[[sqlite_utils.Database], Engine] | None = None,
                 outage: Outage | None = None) -> None:
        # A chain store's daemon starts even when the chain's database cannot be reached
        # (it then decides from its offline journal); the schema is checked once it can.
        self.db = open_db(db_path, unreachable_ok=outage is not None)
        self.commits = 0
        self._wal_full = threading.Event()
        self.checkpointer: Checkpointer | None = None
        if db_path is not None and str(db_path) != ":memory:" and not is_postgres(db_path):
            self.db.conn.execute("PRAGMA wal_autocheckpoint = 0")
            self.checkpointer = Checkpointer(db_path, lambda: self.commits,
                                             on_full=self._wal_full.set)
        self.engine = (engine_factory(self.db) if engine_factory is not None
                       else Engine(self.db, policy=policy))
        #: A chain store's offline mode (host/site/outage.py): taps decided from the local
        #: journal while the chain's database is unreachable. None: the engine alone.
        self.outage = outage
        self.metrics = metrics
        #: Its CPU-time counters, ``transaction`` and ``answer`` (``_do_taps``).
        self._cpu = ([metrics.writer_cpu.labels(p) for p in ("transaction", "answer")]
                     if metrics is not None else [])
        self.batches = 0
        self.taps = 0
        #: Called after each job or batch of taps, once its futures are resolved (and the
        #: DECISIONs handed to the links): a link that buffers what the writer sends
        #: (``Writer.holds()``) writes it out here, one system call per batch.
        self.after_job: list[Callable[[], None]] = []

    def run_taps(self, batch: list[TapJob]) -> None:
        """Decide ``batch``, then what follows a commit."""
        self._do_taps(batch)
        self._after_commit()

    def run_call(self, job: CallJob) -> None:
        """Run a call job, then what follows a commit."""
        self._do_call(job)
        self._after_commit()

    def idle(self) -> None:
        """The offline mode's idle turn (no job for a while), then send what it made."""
        try:
            self.outage.idle(self.engine)   # type: ignore[union-attr]
        except Exception as e:  # noqa: BLE001 - the writer thread must outlive it
            log.error("writer: offline journal round failed: %s: %s", type(e).__name__, e)
            try:
                if self.db.conn.in_transaction:
                    self.db.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        self._after_job()

    def close(self) -> None:
        """Stop the checkpointer and close the connection."""
        if self.checkpointer is not None:
            self.checkpointer.stop()
        try:
            self.db.conn.close()
        except Exception:  # noqa: BLE001 - closing a connection that already failed
            pass

    def _after_commit(self) -> None:
        self._after_job()
        if self._wal_full.is_set():
            self._finish_checkpoint()

    def _after_job(self) -> None:
        for fn in self.after_job:
            try:
                fn()
            except Exception:  # noqa: BLE001 - a link's flush must not stop the writer
                log.exception("writer: after-job hook failed")

    def _finish_checkpoint(self) -> None:
        """Between transactions: a PASSIVE checkpoint on the writer's own connection, so the
        WAL restarts at the next transaction (see :class:`Checkpointer`)."""
        self._wal_full.clear()
        try:
            passive_checkpoint(self.db.conn)
        except sqlite3.Error as e:   # the next full WAL asks again
            log.warning("writer: WAL checkpoint failed: %s", e)

    def _do_call(self, job: CallJob) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            # On PostgreSQL a serialization failure rolled ``fn``'s transaction back: run
            # again (writes are idempotent; SQLite never raises it).
            result = retrying(partial(job.fn, self.db))
            if self.db.conn.in_transaction:
                # Left open, it would make every later BEGIN IMMEDIATE (every tap) fail.
                raise HostError("a writer call returned inside an open transaction: rolled back")
            self.commits += 1
            job.future.set_result(result)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting caller
            try:
                if self.db.conn.in_transaction:
                    self.db.conn.execute("ROLLBACK")
            except sqlite3.Error as rb:  # the writer thread must outlive a failed rollback
                log.error("writer: rollback after a failed call failed: %s", rb)
            job.future.set_exception(e)

    def _do_taps(self, batch: list[TapJob]) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            jobs = [(j.tap, partial(j.encoder, j.tap)) for j in batch]
            decisions = (self.outage.decide_many(self.engine, jobs) if self.outage is not None
                         else self.engine.decide_many(jobs))
        except Exception as e:  # noqa: BLE001 - every waiter learns the batch failed
            log.error("writer: batch of %d taps failed: %s: %s", len(batch), type(e).__name__, e)
            if len(batch) > 1:
                # The whole batch was rolled back: decide each tap on its own, so one tap
                # that cannot be decided does not refuse the taps that were batched with it.
                for j in batch:
                    self._do_taps([j])
                return
            for j in batch:
                j.fail(e)
            return
        except BaseException as e:  # noqa: BLE001 - every waiter learns the batch failed
            for j in batch:
                j.fail(e)
            return
        self.batches += 1
        self.taps += len(batch)
        self.commits += 1
        if self.metrics is not None:
            m = self.metrics
            m.batch.observe(len(batch))
            m.transaction.observe(time.perf_counter() - t0)
            m.writer_queue.observe(t0 - batch[0].queued)
        c1 = time.thread_time()
        for j, d in zip(batch, decisions):
            j.resolve(d)
        if self.metrics is not None:
            self._cpu[0].inc(c1 - c0)
            self._cpu[1].inc(time.thread_time() - c1)
