# Runs on CPython (host): the daemon's reply thread and the per-link send queues.
"""Getting answers out without one device holding up another.

:class:`ReplyThread` runs the work that follows a writer commit (count, log, refuse)
off the deciding thread; the DECISION itself is sent from that thread (the writer's, or a
link's reader that decided its own taps) right after
the COMMIT (``host.site.taps``), which sends can never block: every link that can block on a write (a
serial port whose peer stopped reading waits up to its write timeout) sends through its own
:class:`SendQueue`, a bounded queue with one thread writing to that link only. When the
queue is full the frame is dropped (counted in ``tapkiosk_link_dropped_total{link}``): the
device resends and gets the cached reply.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("tapkiosk.service")

#: Frames waiting for one link at most; more are dropped (the device resends).
SEND_QUEUE_MAX = 64


class ReplyThread:
    """One thread running queued jobs in order; a failing job is logged, the rest go on.

    Jobs put while ``defer_on``'s test says so (the thread holding the writer: the writer
    thread, or a reading thread that leads its own taps) are held until that thread calls
    ``flush()`` (once its batch is answered), then queued as one: one hand-off and one
    wake-up of this thread per batch of taps instead of one per tap. After each job (or held
    batch of jobs) it calls every ``after_batch`` function (the taps' events and counters,
    published once per batch)."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None] | list[Callable[[], None]] | None]
        self._jobs = queue.Queue()
        self._defer: Callable[[], bool] | None = None
        self._held: list[Callable[[], None]] = []   # touched by the deferring thread only
        self.after_batch: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._run, name="tapkiosk-reply", daemon=True)
        self._thread.start()

    def on_thread(self) -> bool:
        """Whether the caller is this reply thread."""
        return threading.current_thread() is self._thread

    def defer_on(self, test: Callable[[], bool] | None) -> None:
        """Hold the jobs put while ``test()`` is true (on the caller's thread: one thread at
        a time) until that thread calls ``flush()``."""
        self._defer = test

    def put(self, job: Callable[[], None]) -> None:
        """Run ``job()`` on the reply thread."""
        if self._defer is not None and self._defer():
            self._held.append(job)
            return
        self._jobs.put(job)

    def flush(self) -> None:
        """Hand the held jobs to the reply thread (called by the deferred thread)."""
        if self._held:
            held, self._held = self._held, []
            self._jobs.put(held)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            for one in (job if isinstance(job, list) else [job]) + self.after_batch:
                try:
                    one()
                except Exception:  # noqa: BLE001 - one failed reply must not stop the others
                    log.exception("sending a reply failed")

    def close(self, timeout: float = 10.0) -> None:
        """Stop once what is queued has run."""
        self._jobs.put(None)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)


class SendQueue:
    """Frames for one link, written by a thread of its own; ``put`` never blocks."""

    def __init__(self, name: str, write: Callable[[bytes], None], metrics: Any = None,
                 maxsize: int = SEND_QUEUE_MAX) -> None:
        self.name = name
        self._write = write
        self._metrics = metrics
        self._q: queue.Queue[bytes | None] = queue.Queue(maxsize)
        self._thread = threading.Thread(target=self._run, name=f"send {name}", daemon=True)
        self._thread.start()

    def put(self, frame: bytes) -> bool:
        """Queue ``frame`` for the link: True; False when the queue is full (the frame is
        dropped and counted)."""
        try:
            self._q.put_nowait(frame)
        except queue.Full:
            if self._metrics is not None:
                self._metrics.link_dropped.labels(self.name).inc()
            log.debug("link %s: send queue full, frame dropped", self.name)
            return False
        return True

    def _run(self) -> None:
        while True:
            frame = self._q.get()
            if frame is None:
                return
            try:
                self._write(frame)
            except Exception as e:  # noqa: BLE001 - the device resends and gets it again
                if self._metrics is not None:
                    self._metrics.link_dropped.labels(self.name).inc()
                log.debug("link %s: frame not sent: %s", self.name, e)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (each write bounded by the link's timeout), then stop."""
        try:
            self._q.put(None, timeout=timeout)
        except queue.Full:
            pass
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
