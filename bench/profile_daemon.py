# Runs on CPython (bench): runs the daemon with cProfile on every thread, stats merged at exit.
"""``python bench/profile_daemon.py OUT.pstats ARGS...`` runs ``python -m host.daemon ARGS...``
with a ``cProfile.Profile`` on each thread (the links, the writer, the reply thread, paho's),
and at exit writes their merged stats to ``OUT.pstats`` (read them with ``python -m pstats``).
The benches use it when ``TAPKIOSK_PROFILE`` names the output file (``bench/support.py``).
"""

from __future__ import annotations

import atexit
import cProfile
import pstats
import runpy
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()


def _profiled_run(run):
    def wrapper(self) -> None:
        prof = cProfile.Profile()
        with _lock:
            _profiles.append(prof)
        prof.enable()
        try:
            run(self)
        finally:
            prof.disable()
    return wrapper


def _dump(out: str) -> None:
    with _lock:
        profs = list(_profiles)
    for p in profs:
        p.disable()
    stats = pstats.Stats(profs[0])
    for p in profs[1:]:
        stats.add(p)
    stats.dump_stats(out)


def main() -> None:
    out = sys.argv[1]
    sys.argv = ["host.daemon", *sys.argv[2:]]
    threading.Thread.run = _profiled_run(threading.Thread.run)
    main_prof = cProfile.Profile()
    _profiles.append(main_prof)
    atexit.register(_dump, out)
    main_prof.enable()
    runpy.run_module("host.daemon", run_name="__main__")


if __name__ == "__main__":
    main()
