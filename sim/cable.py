# Runs on CPython (sim): a simulated serial cable — TCP relay with two ends, baud pacing, faults.
"""Simulated serial cable.

Two TCP listening ends on loopback: end A (the device: the firmware's UART stand-in or a
``SimDevice`` with ``socket://``) and end B (the daemon: ``--serial socket://HOST:PORT_B``).
Bytes written at one end come out of the other, like a null-modem cable:

- ``baud``: pace each direction at ``baud`` bits/s, 10 bits per byte (8N1), so a frame takes
  its real wire time;
- ``chunk``: deliver at most this many bytes per write (frames arrive split);
- faults (per direction ``"ab"``/``"ba"``, from a seeded RNG so a run is repeatable):
  ``flip`` (probability per byte of one flipped bit), ``drop`` (probability per byte of losing
  it), ``garbage`` (probability per write of a burst of random bytes before it).

Either end may disconnect and reconnect; bytes sent while the other end is absent are lost,
as on a cable with nothing plugged in.

Command line (for the firmware's tests and the demo)::

    python -m sim.cable --port-a 7001 --port-b 7002 [--baud 115200] [--flip 0.001]
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


# time.sleep() wakes up late (timer slack, an idle CPU waking up: 0.1-0.3 ms on a VM), which
# a wire does not: sleep until this close to the deadline, then spin the rest.
_SPIN_S = 0.0005
# Between a frame's first and last byte, hand on what is due every 0.2 ms (a UART delivers
# each byte at its wire time). How often the receiver is woken during a frame matters to it:
# a CPU idle for 5 ms runs the next Python several times slower; but pieces every 0.1 ms cost
# the bench's process 4-5 ms of CPU a tap against 2.7-3.4 (0.2 ms) and 1.6 (none), which a
# loaded 2-core machine pays back in outliers (host/README.md, the serial paragraphs).
_PIECE_S = 0.0002
# SO_TIMESTAMPNS (asm-generic/socket.h; the socket module has no name for it): the kernel's
# receive time of the bytes, i.e. when the sender wrote them, not when this pump woke up.
_SO_TIMESTAMPNS = 35
_ANC = socket.CMSG_SPACE(16)


def _wait_until(deadline: float) -> None:
    """Return at ``deadline`` (time.monotonic()), not a scheduler tick later."""
    left = deadline - time.monotonic()
    if left > _SPIN_S:
        time.sleep(left - _SPIN_S)
    while time.monotonic() < deadline:
        pass


def _written_at(anc: list, got: float) -> float:
    """When the bytes were written, on time.monotonic()'s clock: the kernel's receive stamp
    when there is one (a few microseconds after the sender's write, so never earlier than
    it), else ``got``. Never later than ``got``."""
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= 16:
            sec, ns = struct.unpack("qq", data[:16])
            real = time.time_ns()
            mono = time.monotonic()   # read after the wall clock: the start is never early
            return min(got, mono - (real - (sec * 1_000_000_000 + ns)) / 1e9)
    return got


@dataclass
class Faults:
    """Fault rates for one direction."""

    flip: float = 0.0
    drop: float = 0.0
    garbage: float = 0.0
    garbage_len: int = 16

    @property
    def active(self) -> bool:
        """Any fault enabled."""
        return bool(self.flip or self.drop or self.garbage)


class Cable:
    """The relay; see the module doc. ``start()`` binds both ends (port 0 = a free port)."""

    def __init__(self, host: str = "127.0.0.1", port_a: int = 0, port_b: int = 0, *,
                 baud: int | None = None, chunk: int | None = None, seed: int = 1) -> None:
        self.host = host
        self.baud = baud
        self.chunk = chunk
        self.faults = {"ab": Faults(), "ba": Faults()}
        self.rng = random.Random(seed)
        self.stats = {"ab": 0, "ba": 0, "flipped": 0, "dropped": 0, "garbage": 0, "lost": 0}
        self._lock = threading.Lock()
        self._conns: dict[str, socket.socket | None] = {"a": None, "b": None}
        self._listeners: dict[str, socket.socket] = {}
        self._want = {"a": port_a, "b": port_b}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.connected = {"a": threading.Event(), "b": threading.Event()}
        #: Called for each write relayed, from its pump's thread, when set (bench/serial_split.py):
        #: ``(from end, written (its wire time starts), wire time up, its last byte handed on
        #: (read just before that send), bytes)``, time.monotonic() seconds
        #: (time.perf_counter()'s clock on Linux).
        self.on_relay: Callable[[str, float, float, float, int], None] | None = None

    def start(self) -> "Cable":
        """Bind both ends and start relaying."""
        for end in ("a", "b"):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.host, self._want[end]))
            s.listen(4)
            s.settimeout(0.2)
            self._listeners[end] = s
            t = threading.Thread(target=self._accept, args=(end,), daemon=True,
                                 name=f"cable accept {end}")
            t.start()
            self._threads.append(t)
        return self

    @property
    def port_a(self) -> int:
        """TCP port of the device end."""
        return self._listeners["a"].getsockname()[1]

    @property
    def port_b(self) -> int:
        """TCP port of the daemon end."""
        return self._listeners["b"].getsockname()[1]

    @property
    def url_a(self) -> str:
        """pyserial URL of the device end."""
        return f"socket://{self.host}:{self.port_a}"

    @property
    def url_b(self) -> str:
        """pyserial URL of the daemon end."""
        return f"socket://{self.host}:{self.port_b}"

    def set_faults(self, direction: str = "ab", **rates: float) -> None:
        """Set fault rates for ``"ab"`` (device -> daemon) or ``"ba"``; no rates = clear."""
        with self._lock:
            self.faults[direction] = Faults(**rates)

    def unplug(self, end: str) -> None:
        """Close the connection at one end (it may reconnect)."""
        with self._lock:
            s = self._conns[end]
            self._conns[end] = None
            self.connected[end].clear()
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def stop(self) -> None:
        """Close everything."""
        self._stop.set()
        for end in ("a", "b"):
            self.unplug(end)
            self._listeners[end].close()
        for t in self._threads:
            t.join(2)

    # ----------------------------------------------------------------- relay
    def _accept(self, end: str) -> None:
        lst = self._listeners[end]
        while not self._stop.is_set():
            try:
                conn, _ = lst.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.unplug(end)   # a new connection replaces the old one
            with self._lock:
                self._conns[end] = conn
                self.connected[end].set()
            t = threading.Thread(target=self._pump, args=(end, conn), daemon=True,
                                 name=f"cable pump {end}")
            t.start()

    def _mangle(self, data: bytes, f: Faults) -> bytes:
        rng = self.rng
        out = bytearray()
        if f.garbage and rng.random() < f.garbage:
            out += bytes(rng.randrange(256) for _ in range(rng.randint(1, f.garbage_len)))
            self.stats["garbage"] += 1
        for b in data:
            if f.drop and rng.random() < f.drop:
                self.stats["dropped"] += 1
                continue
            if f.flip and rng.random() < f.flip:
                b ^= 1 << rng.randrange(8)
                self.stats["flipped"] += 1
            out.append(b)
        return bytes(out)

    def _pump(self, src_end: str, conn: socket.socket) -> None:
        dst_end = "b" if src_end == "a" else "a"
        direction = src_end + dst_end
        byte_s = 10.0 / self.baud if self.baud else 0.0
        try:
            conn.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        except OSError:
            pass   # closed already: the recv below ends the pump
        next_free = 0.0
        while not self._stop.is_set():
            try:
                data, anc, _flags, _addr = conn.recvmsg(4096, _ANC)
            except OSError:
                data, anc = b"", []
            got = time.monotonic()
            if not data:
                with self._lock:
                    if self._conns[src_end] is conn:
                        self._conns[src_end] = None
                        self.connected[src_end].clear()
                return
            start = max(_written_at(anc, got), next_free)
            with self._lock:
                f = self.faults[direction]
            if f.active:
                data = self._mangle(data, f)
            next_free = start + byte_s * len(data)
            handed = self._relay(data, start, byte_s, dst_end, direction)
            stamp = self.on_relay
            if stamp is not None and data:
                stamp(src_end, start, next_free, handed, len(data))

    def _relay(self, data: bytes, start: float, byte_s: float, dst_end: str,
               direction: str) -> float:
        """Hand ``data`` on as a UART would: byte ``i`` not before ``start + (i + 1) *
        byte_s``; the last byte at its time to the spin, the ones before it in pieces of what
        is due, every 0.2 ms (at most ``chunk`` bytes each). Returns time.monotonic() as the
        last piece is handed to the socket (read before that send: after it, this thread may
        wait for the interpreter lock while a receiver in this process, the kiosk, runs)."""
        n = len(data)
        step = self.chunk or n or 1
        sent = 0
        handed = time.monotonic()
        while sent < n:
            if byte_s:
                due_last = start + n * byte_s
                left = due_last - time.monotonic()
                if left > _SPIN_S + _PIECE_S:
                    time.sleep(_PIECE_S)
                elif left > byte_s:
                    _wait_until(due_last - byte_s)   # all but the last byte, then the last
                else:
                    _wait_until(due_last)
                due = min(n, int((time.monotonic() - start) / byte_s))
                if due <= sent:
                    continue
            else:
                due = n
            while sent < due:
                piece = data[sent:min(due, sent + step)]
                sent += len(piece)
                handed = time.monotonic()
                self._send(dst_end, direction, piece)
        return handed

    def _send(self, dst_end: str, direction: str, piece: bytes) -> None:
        with self._lock:
            dst = self._conns[dst_end]
        if dst is None:
            self.stats["lost"] += len(piece)
            return
        try:
            dst.sendall(piece)
            self.stats[direction] += len(piece)
        except OSError:
            self.stats["lost"] += len(piece)


def main(argv: list[str] | None = None) -> int:
    """Run a cable until Ctrl-C; prints the two URLs."""
    p = argparse.ArgumentParser(prog="python -m sim.cable", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port-a", type=int, default=0, help="device end (0 = any free port)")
    p.add_argument("--port-b", type=int, default=0, help="daemon end (0 = any free port)")
    p.add_argument("--baud", type=int, default=None)
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument("--flip", type=float, default=0.0)
    p.add_argument("--drop", type=float, default=0.0)
    p.add_argument("--garbage", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    try:
        cable = Cable(a.host, a.port_a, a.port_b, baud=a.baud, chunk=a.chunk, seed=a.seed).start()
    except OSError as e:
        print(f"sim.cable: error: {e}", file=sys.stderr)
        return 2
    for d in ("ab", "ba"):
        cable.set_faults(d, flip=a.flip, drop=a.drop, garbage=a.garbage)
    print(f"device end {cable.url_a}\ndaemon end {cable.url_b}", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    cable.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
