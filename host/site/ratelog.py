# Runs on CPython (host): log lines rate-limited per key (a flood of bad frames is one line).
"""``RateLimitedLog(logger)(key, level, msg, *args)`` logs at most one line per ``key`` every
``every_s`` seconds; the next line that gets through says how many were left out."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

_KEYS_MAX = 4096


class RateLimitedLog:
    """See the module doc."""

    def __init__(self, logger: logging.Logger, every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.every_s = every_s
        self.clock = clock
        self._last: dict[Hashable, tuple[float, int]] = {}   # key -> (logged at, left out)
        self._lock = threading.Lock()

    def __call__(self, key: Hashable, level: int, msg: str, *args: Any) -> bool:
        """Log ``msg % args`` unless ``key`` logged within ``every_s``; True when logged."""
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last[0] < self.every_s:
                self._last[key] = (last[0], last[1] + 1)
                return False
            if len(self._last) >= _KEYS_MAX:
                self._last.clear()
            self._last[key] = (now, 0)
        left_out = last[1] if last is not None else 0
        if left_out:
            msg += " (%d similar line(s) left out)"
            args = (*args, left_out)
        self.logger.log(level, msg, *args)
        return True
