# Runs on CPython (host): whether the chain's database answers again, asked off the writer thread.
"""A probe of the chain's database during a WAN outage (issue 17).

While a store is offline its writer must keep deciding taps from the journal at once. A
connection attempt to a server that does not answer (a WAN link that drops packets) blocks
for the whole connect timeout, so the writer does not make it: a :class:`Prober` calls
``probe()`` (for PostgreSQL ``host.store.pg.reachable``: a fresh connection, closed at once)
on a thread of its own every ``every_s`` seconds while started, and the writer replays the
journal only once a probe succeeded (:meth:`Prober.take`).

Online, a statement sent to a server that vanished without a word can wait for an answer
that never comes (the kernel's keepalives and ``tcp_user_timeout``, host/store/pg.py
``LINK_SETTINGS``, do not help when something on the way still acknowledges the packets).
A :class:`Watchdog` bounds the writer's work on the database: armed around a batch of taps,
it breaks the connection (``interrupt``) once the batch outlasts its limit, so the batch
fails as a lost connection and the store goes offline within seconds.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator


class Prober:
    """Runs ``probe()`` every ``every_s`` seconds on its own thread between start and stop."""

    def __init__(self, probe: Callable[[], bool], every_s: float) -> None:
        self.probe = probe
        self.every_s = max(0.05, every_s)
        self._ok = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Probe until :meth:`stop` (a thread already probing is kept)."""
        with self._lock:
            self._stopped.clear()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="tapkiosk-probe",
                                                daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Stop probing (the thread ends after the probe in progress)."""
        self._stopped.set()
        self._ok.clear()

    def mark(self) -> None:
        """The database answered some other request: the next :meth:`take` is True."""
        self._ok.set()

    def take(self) -> bool:
        """True (once) when the database answered since the last call."""
        ok = self._ok.is_set()
        self._ok.clear()
        return ok

    def _loop(self) -> None:
        while not self._stopped.is_set():
            if not self._ok.is_set() and self.probe():
                self._ok.set()
            self._stopped.wait(self.every_s)


class Watchdog:
    """Calls the ``interrupt()`` given to :meth:`armed` when the block outlasts its limit;
    one thread of its own, started at the first arming."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._until: float | None = None
        self._interrupt: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        #: How many times a block outlasted its limit.
        self.fired = 0

    @contextlib.contextmanager
    def armed(self, limit_s: float, interrupt: Callable[[], None]) -> Iterator[None]:
        """Within the block, ``interrupt()`` is called (on the watchdog's thread) once
        ``limit_s`` seconds have passed."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="tapkiosk-watchdog",
                                                daemon=True)
                self._thread.start()
            self._until, self._interrupt = time.monotonic() + limit_s, interrupt
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._until = self._interrupt = None
                self._cond.notify()

    def _loop(self) -> None:
        with self._cond:
            while True:
                if self._until is None:
                    self._cond.wait()
                    continue
                left = self._until - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                hook, self._until, self._interrupt = self._interrupt, None, None
                self.fired += 1
                if hook is not None:
                    hook()
