"""host/site/gctune.py: after ``settle`` the young threshold is ``YOUNG_THRESHOLD`` (the
older ones as they were), cycles are still collected, and pauses are timed by generation.
Run in a child interpreter: ``settle`` changes the process's collector for good."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import gc, json, weakref
from host.site import gctune
from host.site.metrics import Metrics
before = gc.get_threshold()
m = Metrics()
gctune.settle(m)
after = gc.get_threshold()
class Node:
    pass
gone = []
for i in range(3 * gctune.YOUNG_THRESHOLD):   # cycles only the collector can free
    a, b = Node(), Node()
    a.b, b.a = b, a
    if i == 0:
        ref = weakref.ref(a, lambda r: gone.append(1))
    del a, b
young = m.value("tapkiosk_gc_pause_seconds_count", generation="0")
print(json.dumps({"before": before, "after": after, "young": gctune.YOUNG_THRESHOLD,
                  "freed": bool(gone), "timed": young}))
"""


def test_settle_raises_the_young_threshold_and_cycles_are_still_collected() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    got = json.loads(out)
    assert got["after"] == [got["young"], *got["before"][1:]]
    assert got["young"] > got["before"][0]
    assert got["freed"] is True    # a young collection ran by itself and freed the cycle
    assert got["timed"] >= 1
