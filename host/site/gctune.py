# Runs on CPython (host): the daemon process's garbage collector — start-up heap frozen, pauses timed.
"""``settle(metrics)`` is called once the daemon has started (``host/daemon.py``'s ``main``,
not an in-process test daemon): it collects once and ``gc.freeze()``s what start-up made
(modules, policy, caches), so a full collection no longer walks them, and times every
collection into ``tapkiosk_gc_pause_seconds{generation}``, so a tail that is the collector
shows there. Measured (bench/mqtt_rtt.py, loaded machine): 2 young collections of about
0.05 ms in 350 lone taps, none older: the collector is not the tap's tail (the durable
COMMIT is). Under sustained load (bench/throughput.py, 100 devices, loaded machine) the
young collections added up to about 3.5 us a tap (0.34 us of it the middle generation: a
tap's objects in flight when a young collection runs are promoted, then walked again): the
young threshold is ``YOUNG_THRESHOLD`` (700 by default), so a collection runs once that many
more container objects are alive than freed, which a tap's short-lived objects, freed by
their reference counts, rarely make: 0.01-0.06 us a tap measured with it. Cycles are still
collected, later; the older generations' thresholds are left as they are.
"""

from __future__ import annotations

import gc
import time
from typing import Any

_started = [0.0]
#: Container objects alive beyond those freed that start a young collection.
YOUNG_THRESHOLD = 5000


def settle(metrics: Any) -> None:
    """Freeze the start-up heap and time the collector's pauses."""
    gc.collect()
    gc.freeze()
    _young, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    children = [metrics.gc_pause.labels(str(g)) for g in range(3)]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
        else:
            children[info["generation"]].observe(time.perf_counter() - _started[0])

    gc.callbacks.append(timed)
