# Runs on CPython: where the time over the wire goes on a paced serial line (device, cable, daemon).
"""Serial tap round trip, split at the cable.

One daemon on one paced ``sim/cable.py`` line (``socket://``), one simulated kiosk on the
other end, as in ``bench/serial_rtt.py``. The cable stamps each relayed frame: when it was
written (the kernel's receive stamp: its wire time starts there), when its wire time was up,
when its last byte was handed on. Per tap (medians over ``--taps``, ms):

- ``device_to_cable``: ``tap()`` called until the TAP is written (the device builds the frame);
- ``pace_tap``, ``pace_decision``: each frame's time on the simulated wire;
- ``relay``: the cable handing each frame's last byte on after its wire time (both directions);
- ``daemon``: the TAP's last byte handed to the daemon's end until the DECISION is written
  (the daemon's read, MAC, writer and durable commit, reply);
- ``cable_to_device``: the DECISION handed on until the device's ``tap()`` returns;
- ``over_wire``: the whole round trip minus the wire time of both frames (the baseline,
  computed from the frame sizes in the same run).

``--db-dir`` puts the site database elsewhere (a tmpfs, where a commit's fsync costs nothing:
the difference in ``daemon`` is what the durable commit's fsync costs on the default disk).

Usage: ``python bench/serial_split.py [--taps 200] [--baud 115200] [--db-dir DIR]``. Prints
the split, then one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import hello, pct, start_daemon, stop  # noqa: E402

import sim.cable as cable_mod  # noqa: E402

PARTS = ("device_to_cable", "pace_tap", "relay", "daemon", "pace_decision", "cable_to_device")


def _split(t0: float, t1: float, stamps: list, baud: int) -> tuple[float, ...] | None:
    """One tap's parts (ms), or None when a frame crossed the cable in more than one write."""
    up = [s for s in stamps if s[0] == "a"]
    down = [s for s in stamps if s[0] == "b"]
    if len(up) != 1 or len(down) != 1:
        return None
    (_, a_in, a_due, a_out, a_n), (_, b_in, b_due, b_out, b_n) = up[0], down[0]
    wire = (a_n + b_n) * 10 / baud
    parts = (a_in - t0, a_due - a_in, (a_out - a_due) + (b_out - b_due), b_in - a_out,
             b_due - b_in, t1 - b_out)
    return tuple(x * 1000.0 for x in parts) + ((t1 - t0 - wire) * 1000.0, wire * 1000.0)


def run(baud: int, taps: int, db_dir: str | None) -> list[tuple[float, ...]]:
    """``taps`` timed taps (after 20 warm-up) on one paced line: their splits."""
    from daemon_support import CARD2, KEY_B, make_site

    from sim.device import SerialTransport, SimDevice

    tmp = Path(tempfile.mkdtemp(prefix="tapkiosk-split-", dir=db_dir))
    make_site(tmp / "site.db")
    cable = cable_mod.Cable(baud=baud)
    stamps: list[tuple[str, float, float, float, int]] = []
    cable.on_relay = lambda *row: stamps.append(row)
    cable.start()
    proc = None
    rows = []
    try:
        proc, _ = start_daemon(tmp / "site.db", tmp, "--serial", cable.url_b, "--baud", str(baud),
                               metrics=False)
        deadline = time.monotonic() + 20
        while not cable.connected["b"].is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        dev = SimDevice("kiosk-2", KEY_B, "kiosk", SerialTransport(cable.url_a))
        hello(dev)
        for _ in range(20):
            dev.tap(CARD2, amount_fen=1)
        for _ in range(taps):
            stamps.clear()
            t0 = time.perf_counter()
            dev.tap(CARD2, amount_fen=1)
            row = _split(t0, time.perf_counter(), list(stamps), baud)
            if row is not None:
                rows.append(row)
        dev.close()
    finally:
        if proc is not None:
            stop(proc)
        cable.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--taps", type=int, default=200)
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--db-dir", default=None, help="directory for the site database (default: the temp dir)")
    a = ap.parse_args(argv)
    if a.taps < 1 or a.baud < 1200:
        ap.error("--taps must be at least 1 and --baud at least 1200")
    rows = run(a.baud, a.taps, a.db_dir)
    if not rows:
        raise SystemExit("serial_split: every frame crossed the cable in pieces; nothing to split")
    med = {name: statistics.median(r[i] for r in rows) for i, name in enumerate(PARTS)}
    over = [r[6] for r in rows]
    wire = statistics.median(r[7] for r in rows)
    print(f"{a.baud} baud, {len(rows)} of {a.taps} taps split (medians, ms; wire time of TAP + "
          f"DECISION {wire:.3f}):")
    for name in PARTS:
        print(f"  {name:16s} {med[name]:.3f}")
    print(f"  over wire p50 {statistics.median(over):.3f}, p99 {pct(over, 99):.3f}")
    print(json.dumps({"bench": "serial_split", "baud": a.baud, "taps": len(rows), "wire_ms": round(wire, 3),
                      "over_wire_p50_ms": round(statistics.median(over), 3),
                      "over_wire_p99_ms": round(pct(over, 99), 3),
                      "db_dir": a.db_dir, **{k + "_ms": round(v, 3) for k, v in med.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
