# Runs on CPython (host): the daemon's single SQLite writer, with leader/follower group commit.
"""The single SQLite writer.

One connection, and one thread at a time writing on it: whoever holds the writer's lock.
Links hand it taps (``submit_tap``, ``submit_tap_then``) and other writes (``call``). When
the writer is idle (nothing queued, nobody writing), the thread that read a tap takes the
lock and decides it itself, COMMITs and answers exactly as the writer thread would (the
"leader": no hand-off, no wake-up of another thread for a lone tap). Otherwise the tap goes
through one queue to the writer thread, and taps waiting there together are decided in ONE
``engine.decide_many`` transaction (group commit). ``call`` jobs always go through the
queue. A reading thread can hold the taps it submits (``holding()``) and hand them over as
one batch (the MQTT pipe reader: a batch per read from its socket). A tap leads only when
nothing is queued, so taps are decided in the order they were submitted (a device's frames
keep their order). A future is resolved only after that transaction has committed, so no
decision leaves the host before it is durable. What runs on the connection, and what
follows each commit, is :class:`host.site.commit.Committer`'s: when a batch fails as a
whole (an exception the engine does not turn into an ``internal`` deny), nothing of it was
committed and its taps are decided again one by one, so only the tap that cannot be
decided gets the error.

The reply bytes of each tap are built inside the transaction by the caller's encoder
``encoder(tap, decision) -> bytes`` and stored with the tap, so a retransmission after a
restart gets the very same bytes. The writer hands each tap to the engine together with its
own encoder (``decide_many([(tap, encode_reply), ...])``): the tap flows one way, the engine
never calls back to ask which tap it is encoding. A (device, seq) that appears twice in one
batch is applied once: the second copy comes back replayed with the same reply bytes.

The daemon's own tables (``device_events``, ``device_config``) are created by the store's
migrations (version 3).

No checkpoint runs on the tap path: the writer's connection has ``wal_autocheckpoint`` off
and a checkpoint thread (``host/site/checkpoint.py``) copies the WAL back into the database
file from its own connection.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlite_utils

from host.rules.engine import Decision, Engine, Tap
from host.errors import HostError
from host.site.commit import Committer, Done, Encoder, CallJob, TapJob
from host.site.metrics import Metrics
from host.site.outage import Outage
from host.rules.policy import Policy

T = TypeVar("T")

log = logging.getLogger("tapkiosk.writer")


class WriterClosed(HostError):
    """The writer has stopped and accepts no more work."""


class _Held(threading.local):
    """The taps a thread holds inside ``Writer.holding()`` (None: not holding)."""

    taps: list[TapJob] | None = None


_STOP = object()

#: Most taps a submitting thread decides itself (a bigger batch goes to the writer thread).
#: As many as a batch: the MQTT pipe reader under load then reads, decides, COMMITs and
#: answers in turn, and no other thread competes with it for the interpreter lock around
#: each SQLite statement. bench/throughput.py, alternated runs on a quiet machine: 4,052 /
#: 4,088 / 4,123 taps/s against 3,427 / 3,593 / 3,388 with at most 4 (the writer thread
#: deciding what the reader handed over while the reader read on).
LEAD_MAX = 64


class Writer:
    """Who writes, when: the writer's lock, its queue and thread, and the submitting threads
    that lead (the work itself: ``self.committer``).

    ``db_path``: the site database (opened by the Committer; InputError when it cannot
    be). ``max_batch``: most taps in one transaction. ``lead``: whether a submitting thread
    may decide its taps itself when the writer is idle (at most ``lead_max`` at once; never
    with an ``outage``).
    """

    def __init__(self, db_path: str, *, policy: Policy | None = None,
                 metrics: Metrics | None = None, max_batch: int = 64,
                 engine_factory: Callable[[sqlite_utils.Database], Engine] | None = None,
                 outage: Outage | None = None, lead: bool = True,
                 lead_max: int = LEAD_MAX) -> None:
        self.db_path = db_path
        self.committer = c = Committer(db_path, policy=policy, metrics=metrics,
                                       engine_factory=engine_factory, outage=outage)
        self.db, self.engine, self.outage = c.db, c.engine, c.outage
        self.checkpointer, self.metrics = c.checkpointer, metrics
        #: Run by the thread holding the writer after each job or batch (``Committer``).
        self.after_job = c.after_job
        self.max_batch = max(1, int(max_batch))
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()   # C: a cheaper put and get
        self._closed = False
        self._lock = threading.Lock()   # guards _closed, _queued and putting on the queue
        #: The one writer: held by whichever thread writes on the connection (the writer
        #: thread, or a leader deciding its own taps); ``_owner`` is that thread's ident.
        self._wlock = threading.Lock()
        self._owner: int | None = None
        self._queued = 0   # jobs put on the queue and not yet done
        self._started = False
        #: Taps may be decided by the thread that submits them when the writer is idle (not
        #: with an offline mode, whose journal rounds stay on the writer thread).
        self.lead = lead and outage is None
        self.lead_max = lead_max
        self._held = _Held()
        self._thread = threading.Thread(target=self._run, name="tapkiosk-writer", daemon=True)
        #: Taps decided by the thread that submitted them (the rest by the writer thread).
        self.led = 0

    @property
    def batches(self) -> int:
        """Transactions of taps committed."""
        return self.committer.batches

    @property
    def taps(self) -> int:
        """Taps decided."""
        return self.committer.taps

    @property
    def commits(self) -> int:
        """Transactions committed (taps and calls)."""
        return self.committer.commits

    @property
    def thread_id(self) -> int | None:
        """The writer thread's ident (None before ``start``)."""
        return self._thread.ident

    def holds(self) -> bool:
        """Whether the calling thread is the one writing now (the writer thread on a job, or
        a leader deciding its taps): what it sends is flushed by ``after_job``."""
        return self._owner == threading.get_ident()

    def start(self) -> "Writer":
        """Start the writer thread (and the checkpointer); returns self."""
        self._thread.start()
        self._started = True
        if self.checkpointer is not None:
            self.checkpointer.start()
        if self.outage is not None:
            self.call(lambda db: self.outage.prime(self.engine))
        return self

    def submit_tap(self, tap: Tap, encoder: Encoder) -> Future[Decision]:
        """Decide ``tap`` (here when the writer is idle, else queued); the future gets its
        committed Decision (or the exception)."""
        job = TapJob(tap, encoder)
        self._submit([job])
        return job.future   # type: ignore[return-value]

    def submit_tap_then(self, tap: Tap, encoder: Encoder, done: Done) -> None:
        """Decide ``tap``; ``done(decision, None)`` once committed (``done(None, error)``
        when it cannot be), called by the thread that decided it (this one when the writer
        was idle, else the writer thread): it must not block. Inside ``holding()`` the tap
        waits for the end of it (or ``release_held()``)."""
        job = TapJob(tap, encoder, done)
        held = self._held.taps
        if held is None:
            self._submit([job])
            return
        held.append(job)
        if len(held) >= self.max_batch:
            self.release_held()

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Taps this thread submits with ``submit_tap_then`` inside are decided together,
        as one batch, when it ends (led or queued like a lone tap)."""
        self._held.taps = []
        try:
            yield
        finally:
            self.release_held()
            self._held.taps = None

    def release_held(self) -> None:
        """Hand over the taps this thread holds now (before anything it queues elsewhere
        that must come after them)."""
        held = self._held.taps
        if not held:
            return
        self._held.taps = []
        try:
            self._submit(held)
        except WriterClosed as e:
            for j in held:
                j.fail(e)

    def _submit(self, jobs: list[Any], may_lead: bool = True) -> None:
        """Lead ``jobs`` (taps: decide them on this thread) when ``may_lead``, nothing is
        queued and nobody writes; else queue them for the writer thread."""
        with self._lock:
            if self._closed:
                raise WriterClosed("the database writer has stopped")
            lead = (may_lead and self.lead and self._started and self._queued == 0
                    and len(jobs) <= self.lead_max and self._wlock.acquire(blocking=False))
            if not lead:
                self._queued += len(jobs)
                for j in jobs:
                    self._q.put(j)
                return
        self._owner = threading.get_ident()
        try:
            self.led += len(jobs)
            if self.metrics is not None:
                self.metrics.writer_led.inc(len(jobs))
            self.committer.run_taps(jobs)
        finally:
            self._owner = None
            self._wlock.release()

    def call(self, fn: Callable[[sqlite_utils.Database], T]) -> Future[T]:
        """Run ``fn(db)`` on the writer thread (its own transaction is up to ``fn``; on
        PostgreSQL ``fn`` runs again when a serialization failure rolled it back)."""
        job = CallJob(fn)
        self._submit([job], may_lead=False)
        return job.future

    def stop(self, timeout: float = 10.0) -> None:
        """Finish every queued job, then close the database. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._q.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)
        else:
            self._drain_unstarted()
        self.committer.close()

    def _drain_unstarted(self) -> None:
        while True:
            try:
                job = self._q.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, TapJob):
                job.fail(WriterClosed("the database writer never started"))
            elif job is not _STOP:
                job.future.set_exception(WriterClosed("the database writer never started"))

    # ----------------------------------------------------------------- thread
    def _run(self) -> None:
        pending: Any = None
        while True:
            job = pending if pending is not None else self._next()
            with self._wlock:
                self._owner = threading.get_ident()
                try:
                    pending, done = self._turn(job)
                finally:
                    self._owner = None
                    if done:
                        with self._lock:
                            self._queued -= done
            if job is _STOP:
                return

    def _turn(self, job: Any) -> tuple[Any, int]:
        """One turn of the writer thread, holding the writer: ``job`` (and the taps queued
        after it); returns (a job taken but not done, how many jobs were done)."""
        if job is _STOP:
            return None, 0
        if job is None:
            self.committer.idle()
            return None, 0
        if isinstance(job, CallJob):
            self.committer.run_call(job)
            return None, 1
        batch, pending = [job], None
        while len(batch) < self.max_batch:
            try:
                nxt = self._q.get_nowait()
            except queue.Empty:
                break
            if isinstance(nxt, TapJob):
                batch.append(nxt)
            else:
                pending = nxt
                break
        self.committer.run_taps(batch)
        return pending, len(batch)

    def _next(self) -> Any:
        """The next job; None after a second without one when the writer has an offline
        mode, which then gets its idle turn (an outage ends without waiting for a tap)."""
        if self.outage is None:
            return self._q.get()
        try:
            return self._q.get(timeout=min(1.0, max(0.05, self.outage.retry_s)))
        except queue.Empty:
            return None

