# Runs on CPython: benchmark of the tap -> decision round trip over a pty and paced cables (115200 and 921600 baud).
"""Tap -> DECISION round trip over serial.

For each ``--baud`` rate (default: 115200 and 921600, the rate of common ESP32 USB bridges)
the daemon runs as a subprocess started with that ``--baud``, serving two lines: a pty
(``os.openpty``; the daemon opens the slave with pyserial) and ``sim/cable.py`` paced at the
rate (the daemon on ``socket://``). A simulated kiosk on each line times ``--taps`` taps. The
paced figure is reported against the wire time of the two frames (TAP + DECISION, 10 bits
per byte) measured in the same run: ``over_wire_p50_ms`` is what the host, the cable relay
and the simulated device add on top of the line (target at 115200: <= 1 ms).

A third line times the real firmware's serial link (``firmware/link_serial.py`` under the
MicroPython unix port, ``$TAPKIOSK_MICROPYTHON`` when set) over the same paced cable: it sends
the TAP's bytes, an echo host answers each frame at once with the DECISION's bytes, and the
firmware times send -> answer parsed (``fw_over_wire_p50_ms``: its UART polling and framing,
the cable and the echo host; no daemon). It runs again with the echo host making the bare
durable SQLite write of the tap benches (``support.bare_write``) before each answer
(``fw_durable_over_wire_p50_ms``): the floor of a reply that waits for a durable commit at
that rate, where the commits come one wire round trip apart.

``--breakdown`` then runs ``bench/serial_split.py``'s split on a fresh daemon at each rate
(device, cable and daemon parts of the paced line's round trip, the daemon's own means and
the CPU per tap; the figures above are unchanged by it) and adds it under ``breakdown``.

Usage: ``python bench/serial_rtt.py [--taps 300] [--baud 115200 --baud 921600]
[--breakdown]``. Last line JSON: the first rate's figures at the top level
(``paced_p50_ms``, ``wire_ms``, ``ratio_p50_wire``, ``over_wire_p50_ms``), every rate's under
``bauds``.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import Args, BareStore, finish, hello, pct, start_daemon, stop, work_dir  # noqa: E402


ROOT = Path(__file__).resolve().parent.parent

FW_SCRIPT = r"""
import asyncio, binascii, sys, time
import machine
from link_serial import SerialLink

N = int(sys.argv[1])
pkt = binascii.unhexlify(sys.argv[3])
link = SerialLink(machine, 2, int(sys.argv[2]))
ev = asyncio.Event()
link.on_packet = lambda p: ev.set()

async def main():
    asyncio.create_task(link.run())
    await asyncio.sleep_ms(200)
    out = []
    for i in range(N + 20):
        ev.clear()
        t0 = time.ticks_us()
        await link.send(pkt)
        await asyncio.wait_for_ms(ev.wait(), 2000)
        if i >= 20:
            out.append(time.ticks_diff(time.ticks_us(), t0))
        await asyncio.sleep_ms(3 + i % 5)  # taps are not back to back: the poll phase varies
    print("T", " ".join(str(x) for x in out))

asyncio.run(main())
"""


def firmware_link(baud: int, taps: int, tap_raw: bytes, dec_raw: bytes,
                  commit: Callable[[], None] | None = None) -> tuple[float, float]:
    """The firmware's serial link over a paced cable to an echo host: (p50, p99) in ms.
    ``commit``: what the echo host does before each answer (a bare durable write)."""
    from protocol import framing
    from sim.cable import Cable
    from sim.run_device import micropython_exe

    cable = Cable(baud=baud).start()
    host = socket.create_connection(("127.0.0.1", cable.port_b))
    host.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    answer = framing.encode(dec_raw)

    def echo() -> None:
        parser = framing.FrameParser()
        while True:
            try:
                data = host.recv(4096)
            except OSError:
                return
            if not data:
                return
            for _ in parser.feed(data):
                if commit is not None:
                    commit()
                host.sendall(answer)

    threading.Thread(target=echo, daemon=True, name="echo host").start()
    with tempfile.TemporaryDirectory(prefix="tk-fwlink-") as tmp:
        (Path(tmp) / "fwlink.py").write_text(FW_SCRIPT)
        env = {"MICROPYPATH": ":".join([str(ROOT / "sim" / "mpy"), str(ROOT / "firmware"),
                                        str(ROOT), ".frozen"]),
               "TAPKIOSK_SIM_UART2": f"tcp:127.0.0.1:{cable.port_a}", "PATH": "/usr/bin:/bin"}
        try:
            r = subprocess.run([micropython_exe(), "fwlink.py", str(taps), str(baud), tap_raw.hex()],
                               cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
        finally:
            host.close()
            cable.stop()
    line = next((x for x in r.stdout.splitlines() if x.startswith("T ")), None)
    if r.returncode != 0 or line is None:
        raise SystemExit("firmware link bench failed:\n" + r.stdout[-2000:] + r.stderr[-2000:])
    times = [int(x) / 1000 for x in line.split()[1:]]
    return statistics.median(times), pct(times, 99)


def run_rate(baud: int, taps: int) -> dict[str, float]:
    """One daemon at ``baud``: the pty and the paced cable, ``taps`` taps each."""
    from daemon_support import CARD, CARD2, KEY_A, KEY_B, make_site

    from protocol import framing
    from sim.cable import Cable
    from sim.device import FdTransport, SerialTransport, SimDevice

    tmp = work_dir()
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
            hello(dev)
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
            frames = (tap_raw, dec_raw)
            dev.close()
    finally:
        if proc is not None:
            stop(proc)
        cable.stop()
        os.close(master)
        os.close(slave)
    p50, p99, _ = out["pty"]
    c50, c99, wire = out["cable"]
    f50, f99 = firmware_link(baud, taps, *frames)
    store = BareStore(tmp / "echo.db")
    try:
        d50, d99 = firmware_link(baud, taps, *frames, commit=store.commit)
    finally:
        store.close()
    return {"baud": baud, "pty_p50_ms": round(p50, 3), "pty_p99_ms": round(p99, 3),
            "paced_p50_ms": round(c50, 3), "paced_p99_ms": round(c99, 3),
            "wire_ms": round(wire, 3), "ratio_p50_wire": round(c50 / wire, 2),
            "over_wire_p50_ms": round(c50 - wire, 3),
            "fw_p50_ms": round(f50, 3), "fw_p99_ms": round(f99, 3),
            "fw_over_wire_p50_ms": round(f50 - wire, 3),
            "fw_durable_p50_ms": round(d50, 3), "fw_durable_p99_ms": round(d99, 3),
            "fw_durable_over_wire_p50_ms": round(d50 - wire, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = Args(description=__doc__.splitlines()[0])
    ap.add_argument("--taps", type=int, default=300)
    ap.add_argument("--baud", type=int, action="append",
                    help="a rate to measure (repeatable; default 115200 and 921600)")
    ap.add_argument("--breakdown", action="store_true",
                    help="then split each rate's paced round trip (bench/serial_split.py)")
    a = ap.parse_args(argv)
    if a.taps < 1 or any(b < 1200 for b in a.baud or ()):
        ap.error("--taps must be at least 1 and --baud at least 1200")
    rates = a.baud or [115200, 921600]
    runs = [run_rate(b, a.taps) for b in rates]
    for r in runs:
        print(f"{r['baud']} baud: pty p50 {r['pty_p50_ms']:.2f} ms, p99 {r['pty_p99_ms']:.2f} ms; "
              f"cable p50 {r['paced_p50_ms']:.2f} ms, p99 {r['paced_p99_ms']:.2f} ms; wire time "
              f"of TAP + DECISION {r['wire_ms']:.2f} ms; p50 - wire {r['over_wire_p50_ms']:.2f} "
              f"ms; p50/wire {r['ratio_p50_wire']:.2f}  ({a.taps} taps)")
        print(f"{r['baud']} baud: firmware link (unix port) to an echo host over the cable: p50 "
              f"{r['fw_p50_ms']:.2f} ms, p99 {r['fw_p99_ms']:.2f} ms; p50 - wire "
              f"{r['fw_over_wire_p50_ms']:.2f} ms")
        print(f"{r['baud']} baud: the same, the echo host making the bare durable SQLite "
              f"write before each answer: p50 {r['fw_durable_p50_ms']:.2f} ms, p99 "
              f"{r['fw_durable_p99_ms']:.2f} ms; p50 - wire "
              f"{r['fw_durable_over_wire_p50_ms']:.2f} ms")
    if a.breakdown:
        import serial_split

        for r in runs:
            r["breakdown"] = serial_split.measure(r["baud"], a.taps)
            serial_split.report(r["breakdown"], a.taps)
    first = runs[0]
    print(json.dumps({"bench": "serial_rtt", "taps": a.taps, **first,
                      "bauds": {str(r["baud"]): r for r in runs}}))
    return 0


if __name__ == "__main__":
    sys.exit(finish(main()))
