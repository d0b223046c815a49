# Runs on CPython (host): WAL checkpoints of the site database, off the writer's tap path.
"""The writer's WAL checkpoints: a thread with its own connection copies committed WAL frames
back into the database file (:class:`Checkpointer`), and ``passive_checkpoint`` is the one
PASSIVE checkpoint the writer runs itself between two transactions when the WAL is full."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable

from host.store.db import BUSY_TIMEOUT_MS

log = logging.getLogger("tapkiosk.writer")


#: Seconds between background WAL checkpoints (when the writer committed since the last one).
CHECKPOINT_EVERY_S = 0.5
#: WAL size (frames, about 4 KiB each) at which the writer finishes a checkpoint itself.
WAL_FULL_FRAMES = 4096


def passive_checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """``PRAGMA wal_checkpoint(PASSIVE)`` on ``conn``: (busy, WAL frames, checkpointed)."""
    cur = conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    try:
        row = cur.fetchone()
    finally:
        cur.close()
    return row[0], row[1], row[2]


class Checkpointer:
    """Checkpoints the WAL from its own thread and connection, off the tap path.

    With SQLite's automatic checkpoint, the commit that crosses 1000 WAL pages (about every
    80 kiosk taps) copies them into the database file and fsyncs it inside COMMIT, so that
    tap's decision waited for the whole checkpoint. Here a PASSIVE checkpoint runs every
    ``period`` seconds when ``commits()`` moved; it never blocks the writer (SQLite lets a
    writer append to the WAL while a checkpoint copies older frames), and the WAL restarts
    from its beginning at the first transaction that starts after a complete checkpoint.

    Under sustained load a commit lands while every background checkpoint runs, so none is
    complete when the next transaction starts and the WAL would grow without bound. When a
    checkpoint reports ``full_frames`` or more, ``on_full()`` is called: the writer then runs
    one PASSIVE checkpoint itself between two transactions (it only copies what was committed
    since this thread's last pass), which lets the WAL restart. Durability is unchanged: a
    commit is durable once its WAL frames are fsynced (``synchronous=FULL``); a checkpoint
    only moves pages that are already durable.
    """

    def __init__(self, db_path: str, commits: Callable[[], int],
                 period: float = CHECKPOINT_EVERY_S,
                 on_full: Callable[[], None] | None = None,
                 full_frames: int = WAL_FULL_FRAMES) -> None:
        self._conn = sqlite3.connect(os.fspath(db_path), isolation_level=None,
                                     check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._commits = commits
        self._period = period
        self._on_full = on_full
        self._full_frames = full_frames
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tapkiosk-checkpoint",
                                        daemon=True)
        self.checkpoints = 0

    def start(self) -> "Checkpointer":
        """Start the thread; returns self."""
        self._thread.start()
        return self

    def checkpoint(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint: (busy, WAL frames, frames checkpointed)."""
        self.checkpoints += 1
        return passive_checkpoint(self._conn)

    def _run(self) -> None:
        seen = self._commits()
        while not self._stop.wait(self._period):
            now = self._commits()
            if now == seen:
                continue
            seen = now
            try:
                _busy, frames, _done = self.checkpoint()
            except sqlite3.Error as e:   # busy or I/O: the next round tries again
                log.warning("writer: WAL checkpoint failed: %s", e)
                continue
            if frames >= self._full_frames and self._on_full is not None:
                self._on_full()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and close its connection."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._conn.close()


