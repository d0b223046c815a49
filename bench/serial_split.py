# Runs on CPython: where the time over the wire goes on a paced serial line (device, cable, daemon).
"""Serial tap round trip, split at the cable.

One daemon on one paced ``sim/cable.py`` line (``socket://``), one simulated kiosk on the
other end, as in ``bench/serial_rtt.py``. The cable stamps each relayed frame: when it was
written (the kernel's receive stamp: its wire time starts there), when its wire time was up,
when its last byte was handed on; the kiosk's transport stamps when its reader had the
DECISION and when the kiosk had checked it. Per tap (medians over ``--taps``, ms):

- ``device_to_cable``: ``tap()`` called until the TAP is written (the device builds the frame);
- ``pace_tap``, ``pace_decision``: each frame's time on the simulated wire;
- ``relay``: the cable handing each frame's last byte on after its wire time (both directions);
- ``daemon``: the TAP's last byte handed to the daemon's end until the DECISION is written
  (the daemon's read, MAC, writer and durable commit, reply);
- ``cable_to_device``: the DECISION handed on until the device's ``tap()`` returns, of it
  ``device_read`` (its reader woken, the frame read and CRC-checked), ``device_check`` (MAC,
  fields) and ``device_return`` (the waiting ``tap()`` woken);
- ``over_wire``: the whole round trip minus the wire time of both frames (the baseline,
  computed from the frame sizes in the same run).

Inside the daemon, from its own metrics over the timed taps (MEANS, not medians, ms):
``daemon_link_to_sent`` (the link read the frame -> the DECISION written: the
``tapkiosk_tap_latency_seconds`` histogram), of it ``daemon_queue`` (handed to the writer ->
taken) and ``daemon_transaction`` (BEGIN -> durable COMMIT); and the CPU per tap of the
daemon's process and of this one (the cable and the kiosk), from the kernel's counters.

``--db-dir`` puts the site database elsewhere (a tmpfs, where a commit's fsync costs nothing:
the difference in ``daemon`` is what the durable commit's fsync costs on the default disk).

Usage: ``python bench/serial_split.py [--taps 200] [--baud 115200] [--db-dir DIR]``. Prints
the split, then one JSON line last.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import (Args, cpu_seconds, finish, hello, hist, pct, scrape,  # noqa: E402
                     start_daemon, stop, work_dir)

import sim.cable as cable_mod  # noqa: E402

PARTS = ("device_to_cable", "pace_tap", "relay", "daemon", "pace_decision", "cable_to_device",
         "device_read", "device_check", "device_return")
_METRICS = {"daemon_link_to_sent": "tapkiosk_tap_latency_seconds",
            "daemon_queue": "tapkiosk_writer_queue_seconds",
            "daemon_transaction": "tapkiosk_writer_transaction_seconds"}


def _split(t0: float, t1: float, stamps: list, dev: dict[str, float],
           baud: int) -> tuple[float, ...] | None:
    """One tap's parts (ms), or None when a frame crossed the cable in more than one write."""
    up = [s for s in stamps if s[0] == "a" and s[1] >= t0]
    down = [s for s in stamps if s[0] == "b" and s[1] >= t0]
    if len(up) != 1 or len(down) != 1 or len(dev) != 2:
        return None
    (_, a_in, a_due, a_out, a_n), (_, b_in, b_due, b_out, b_n) = up[0], down[0]
    wire = (a_n + b_n) * 10 / baud
    parts = (a_in - t0, a_due - a_in, (a_out - a_due) + (b_out - b_due), b_in - a_out,
             b_due - b_in, t1 - b_out, dev["got"] - b_out, dev["checked"] - dev["got"],
             t1 - dev["checked"])
    return tuple(x * 1000.0 for x in parts) + ((t1 - t0 - wire) * 1000.0, wire * 1000.0)


def _wait_stamp(stamps: list) -> None:
    """Until the cable's pump has stamped the DECISION (it may still wait for the interpreter
    lock after handing the last byte on), at most 20 ms."""
    deadline = time.perf_counter() + 0.02
    while not any(s[0] == "b" for s in stamps) and time.perf_counter() < deadline:
        time.sleep(0.0002)


def _stamped(transport: Any, dev: dict[str, float]) -> Any:
    """``transport`` whose received packets are stamped into ``dev`` (read, then checked)."""
    attach = transport.attach

    def stamped_attach(device_id: str, on_packet: Any) -> None:
        def on(pkt: bytes) -> None:
            dev["got"] = time.perf_counter()
            on_packet(pkt)
            dev["checked"] = time.perf_counter()
        attach(device_id, on)
    transport.attach = stamped_attach
    return transport


def _means(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The histograms' means (ms) over the taps between two scrapes."""
    return {name: hist(before, after, metric)["mean_ms"] for name, metric in _METRICS.items()}


def run(baud: int, taps: int, db_dir: str | None) -> tuple[list[tuple[float, ...]], dict]:
    """``taps`` timed taps (after 20 warm-up) on one paced line: their splits, and the
    daemon's means and the CPU per tap (ms)."""
    from daemon_support import CARD2, KEY_B, make_site

    from sim.device import SerialTransport, SimDevice

    tmp = work_dir(db_dir)
    make_site(tmp / "site.db")
    cable = cable_mod.Cable(baud=baud)
    stamps: list[tuple[str, float, float, float, int]] = []
    cable.on_relay = lambda *row: stamps.append(row)
    cable.start()
    proc = None
    rows = []
    try:
        proc, mport = start_daemon(tmp / "site.db", tmp, "--serial", cable.url_b, "--baud",
                                   str(baud))
        deadline = time.monotonic() + 20
        while not cable.connected["b"].is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        dev_stamps: dict[str, float] = {}
        dev = SimDevice("kiosk-2", KEY_B, "kiosk",
                        _stamped(SerialTransport(cable.url_a), dev_stamps))
        hello(dev)
        for _ in range(20):
            dev.tap(CARD2, amount_fen=1)
        before, cpu0 = scrape(mport), (cpu_seconds(proc.pid), cpu_seconds())
        for _ in range(taps):
            stamps.clear()
            dev_stamps.clear()
            t0 = time.perf_counter()
            dev.tap(CARD2, amount_fen=1)
            t1 = time.perf_counter()
            _wait_stamp(stamps)
            row = _split(t0, t1, list(stamps), dict(dev_stamps), baud)
            if row is not None:
                rows.append(row)
        cpu1 = (cpu_seconds(proc.pid), cpu_seconds())
        inside = _means(before, scrape(mport))
        inside["cpu_daemon"] = (cpu1[0] - cpu0[0]) / taps * 1000.0
        inside["cpu_bench"] = (cpu1[1] - cpu0[1]) / taps * 1000.0
        dev.close()
    finally:
        if proc is not None:
            stop(proc)
        cable.stop()
    return rows, inside


def measure(baud: int, taps: int, db_dir: str | None = None) -> dict[str, Any]:
    """The split's medians, the daemon's means and the CPU per tap, ms (``bench/serial_rtt.py
    --breakdown`` prints it too)."""
    rows, inside = run(baud, taps, db_dir)
    if not rows:
        raise SystemExit("serial_split: every frame crossed the cable in pieces; nothing to split")
    over = [r[len(PARTS)] for r in rows]
    out: dict[str, Any] = {"baud": baud, "taps": len(rows),
                           "wire_ms": round(statistics.median(r[-1] for r in rows), 3),
                           "over_wire_p50_ms": round(statistics.median(over), 3),
                           "over_wire_p99_ms": round(pct(over, 99), 3)}
    for i, name in enumerate(PARTS):
        out[name + "_ms"] = round(statistics.median(r[i] for r in rows), 3)
    for name, v in inside.items():
        out[name + "_ms"] = round(v, 3)
    return out


def report(s: dict[str, Any], asked: int) -> None:
    """Print one split (``measure``'s dict) as lines."""
    print(f"{s['baud']} baud, {s['taps']} of {asked} taps split (medians, ms; wire time of TAP "
          f"+ DECISION {s['wire_ms']:.3f}):")
    for name in PARTS:
        indent = "    " if name.startswith("device_") and name != "device_to_cable" else "  "
        print(f"{indent}{name:16s} {s[name + '_ms']:.3f}")
    print(f"  over wire p50 {s['over_wire_p50_ms']:.3f}, p99 {s['over_wire_p99_ms']:.3f}")
    print(f"  inside the daemon (its metrics, MEANS): link read -> DECISION written "
          f"{s['daemon_link_to_sent_ms']:.3f}, of it writer queue {s['daemon_queue_ms']:.3f}, "
          f"transaction {s['daemon_transaction_ms']:.3f}")
    print(f"  CPU per tap: daemon {s['cpu_daemon_ms']:.3f}, cable + kiosk {s['cpu_bench_ms']:.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = Args(description=__doc__.splitlines()[0])
    ap.add_argument("--taps", type=int, default=200)
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--db-dir", default=None, help="directory for the site database (default: the temp dir)")
    a = ap.parse_args(argv)
    if a.taps < 1 or a.baud < 1200:
        ap.error("--taps must be at least 1 and --baud at least 1200")
    s = measure(a.baud, a.taps, a.db_dir)
    report(s, a.taps)
    print(json.dumps({"bench": "serial_split", "db_dir": a.db_dir, **s}))
    return 0


if __name__ == "__main__":
    sys.exit(finish(main()))
