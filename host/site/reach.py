# Runs on CPython (host): whether the chain's database answers again, asked off the writer thread.
"""A probe of the chain's database during a WAN outage (issue 17).

While a store is offline its writer must keep deciding taps from the journal at once. A
connection attempt to a server that does not answer (a WAN link that drops packets) blocks
for the whole connect timeout, so the writer does not make it: a :class:`Prober` calls
``probe()`` (for PostgreSQL ``host.store.pg.reachable``: a fresh connection, closed at once)
on a thread of its own every ``every_s`` seconds while started, and the writer replays the
journal only once a probe succeeded (:meth:`Prober.take`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable


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
