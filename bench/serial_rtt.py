# Runs on CPython: benchmark of the tap -> decision round trip over a pty and a 115200-baud cable.
"""Tap -> DECISION round trip over serial.

The daemon runs as a subprocess serving two lines: a pty (``os.openpty``; the daemon opens
the slave with pyserial) and ``sim/cable.py`` paced at ``--baud`` (the daemon on
``socket://``). A simulated kiosk on each line times ``--taps`` taps. The paced figure is
reported against the wire time of the two frames (TAP + DECISION, 10 bits per byte) measured
in the same run, so the ratio shows what the host adds on top of the line.

Usage: ``python bench/serial_rtt.py [--taps 300] [--baud 115200]``. Last line JSON.
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--taps", type=int, default=300)
    ap.add_argument("--baud", type=int, default=115200)
    a = ap.parse_args(argv)
    from daemon_support import CARD, CARD2, KEY_A, KEY_B, make_site

    from protocol import framing
    from sim.cable import Cable
    from sim.device import FdTransport, SerialTransport, SimDevice

    tmp = Path(tempfile.mkdtemp(prefix="tapkiosk-bench-"))
    db = tmp / "site.db"
    make_site(db)
    master, slave = os.openpty()
    tty.setraw(master)
    cable = Cable(baud=a.baud).start()
    out = {}
    proc = None
    try:
        proc, _ = start_daemon(db, tmp, "--serial", os.ttyname(slave), "--serial", cable.url_b,
                               "--baud", str(a.baud), metrics=False)
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
            for _ in range(a.taps):
                t0 = time.perf_counter()
                dev.tap(cards[name], amount_fen=1)
                times.append((time.perf_counter() - t0) * 1000.0)
            _, tap_raw = dev.tap_frame(cards[name], amount_fen=1)
            dec_raw = next(r for r in reversed(dev.raw_in) if r[1] == 0x04)
            wire = (len(framing.encode(tap_raw)) + len(framing.encode(dec_raw))) * 10 / a.baud
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
    print(f"pty: tap -> decision p50 {p50:.2f} ms, p99 {p99:.2f} ms ({a.taps} taps)")
    print(f"cable at {a.baud} baud: p50 {c50:.2f} ms, p99 {c99:.2f} ms; wire time of TAP + "
          f"DECISION {wire:.2f} ms; p50/wire {c50 / wire:.2f}")
    print(json.dumps({"bench": "serial_rtt", "taps": a.taps, "pty_p50_ms": round(p50, 3),
                      "pty_p99_ms": round(p99, 3), "baud": a.baud,
                      "paced_p50_ms": round(c50, 3), "paced_p99_ms": round(c99, 3),
                      "wire_ms": round(wire, 3), "ratio_p50_wire": round(c50 / wire, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
