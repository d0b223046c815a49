# Runs on CPython: benchmark of the tap -> decision round trip over a pty and paced cables (115200 and 921600 baud).
"""Tap -> DECISION round trip over serial.

For each ``--baud`` rate (default: 115200 and 921600, the rate of common ESP32 USB bridges)
the daemon runs as a subprocess started with that ``--baud``, serving two lines: a pty
(``os.openpty``; the daemon opens the slave with pyserial) and ``sim/cable.py`` paced at the
rate (the daemon on ``socket://``). A simulated kiosk on each line times ``--taps`` taps. The
paced figure is reported against the wire time of the two frames (TAP + DECISION, 10 bits
per byte) measured in the same run: ``over_wire_p50_ms`` is what the host, the cable relay
and the simulated device add on top of the line (target at 115200: <= 1 ms).

Usage: ``python bench/serial_rtt.py [--taps 300] [--baud 115200 --baud 921600]``. Last line
JSON: the first rate's figures at the top level (``paced_p50_ms``, ``wire_ms``,
``ratio_p50_wire``, ``over_wire_p50_ms``), every rate's under ``bauds``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import tty
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import pct, start_daemon, stop  # noqa: E402


def run_rate(baud: int, taps: int) -> dict[str, float]:
    """One daemon at ``baud``: the pty and the paced cable, ``taps`` taps each."""
    from daemon_support import CARD, CARD2, KEY_A, KEY_B, make_site

    from protocol import framing
    from sim.cable import Cable
    from sim.device import FdTransport, SerialTransport, SimDevice

    tmp = Path(tempfile.mkdtemp(prefix="tapkiosk-bench-"))
    db = tmp / "site.db"
    make_site(db)
    master, slave = os.openpty()
    tty.setraw(master)
    cable = Cable(baud=baud).start()
    out = {}
    proc = None
    try:
        proc, _ = start_daemon(db, tmp, "--serial", os.ttyname(slave), "--serial", cable.url_b,
                               "--baud", str(baud), metrics=False)
        deadline = time.monotonic() + 20
        while not cable.connected["b"].is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = {"pty": SimDevice("kiosk-1", KEY_A, "kiosk", FdTransport(master)),
                 "cable": SimDevice("kiosk-2", KEY_B, "kiosk", SerialTransport(cable.url_a))}
        cards = {"pty": CARD, "cable": CARD2}
        for name, dev in lines.items():
            dev.hello()
            for _ in range(20):
                dev.tap(cards[name], amount_fen=1)
            times = []
            for _ in range(taps):
                t0 = time.perf_counter()
                dev.tap(cards[name], amount_fen=1)
                times.append((time.perf_counter() - t0) * 1000.0)
            _, tap_raw = dev.tap_frame(cards[name], amount_fen=1)
            dec_raw = next(r for r in reversed(dev.raw_in) if r[1] == 0x04)
            wire = (len(framing.encode(tap_raw)) + len(framing.encode(dec_raw))) * 10 / baud
            out[name] = (statistics.median(times), pct(times, 99), wire * 1000.0)
            dev.close()
    finally:
        if proc is not None:
            stop(proc)
        cable.stop()
        os.close(master)
        os.close(slave)
    p50, p99, _ = out["pty"]
    c50, c99, wire = out["cable"]
    return {"baud": baud, "pty_p50_ms": round(p50, 3), "pty_p99_ms": round(p99, 3),
            "paced_p50_ms": round(c50, 3), "paced_p99_ms": round(c99, 3),
            "wire_ms": round(wire, 3), "ratio_p50_wire": round(c50 / wire, 2),
            "over_wire_p50_ms": round(c50 - wire, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--taps", type=int, default=300)
    ap.add_argument("--baud", type=int, action="append",
                    help="a rate to measure (repeatable; default 115200 and 921600)")
    a = ap.parse_args(argv)
    rates = a.baud or [115200, 921600]
    runs = [run_rate(b, a.taps) for b in rates]
    for r in runs:
        print(f"{r['baud']} baud: pty p50 {r['pty_p50_ms']:.2f} ms, p99 {r['pty_p99_ms']:.2f} ms; "
              f"cable p50 {r['paced_p50_ms']:.2f} ms, p99 {r['paced_p99_ms']:.2f} ms; wire time "
              f"of TAP + DECISION {r['wire_ms']:.2f} ms; p50 - wire {r['over_wire_p50_ms']:.2f} "
              f"ms; p50/wire {r['ratio_p50_wire']:.2f}  ({a.taps} taps)")
    first = runs[0]
    print(json.dumps({"bench": "serial_rtt", "taps": a.taps, **first,
                      "bauds": {str(r["baud"]): r for r in runs}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
