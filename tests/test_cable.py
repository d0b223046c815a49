"""sim/cable.py's pacing: no byte comes out of the cable before its wire time (10 bits a byte)
counted from when it was written, and frames written back to back queue behind each other."""

from __future__ import annotations

import socket
import time

import pytest

from sim.cable import Cable
from conftest import wait_until


def _ends(cable: Cable) -> tuple[socket.socket, socket.socket]:
    a = socket.create_connection(("127.0.0.1", cable.port_a))
    b = socket.create_connection(("127.0.0.1", cable.port_b))
    assert cable.connected["a"].wait(5) and cable.connected["b"].wait(5)
    return a, b


def _arrivals(sock: socket.socket, n: int) -> list[tuple[float, int]]:
    """(time.monotonic() of each recv, bytes received so far) until ``n`` bytes came."""
    sock.settimeout(10)
    got, out = 0, []
    while got < n:
        data = sock.recv(4096)
        assert data, "the cable closed"
        got += len(data)
        out.append((time.monotonic(), got))
    return out


@pytest.mark.parametrize("baud", [115200, 921600])
@pytest.mark.parametrize("direction", ["ab", "ba"])
def test_no_byte_before_its_wire_time(baud: int, direction: str) -> None:
    cable = Cable(baud=baud).start()
    try:
        a, b = _ends(cable)
        src, dst = (a, b) if direction == "ab" else (b, a)
        byte_s = 10 / baud
        for n in (1, 61, 200):
            frame = bytes(range(1, n)) + b"\0" if n > 1 else b"\0"
            t0 = time.monotonic()   # before the write: the wire cannot start earlier
            src.sendall(frame)
            arrivals = _arrivals(dst, n)
            for t, count in arrivals:
                assert t - t0 >= count * byte_s, (n, count, t - t0)
            assert arrivals[-1][1] == n
        a.close()
        b.close()
    finally:
        cable.stop()


def test_frames_written_back_to_back_queue_on_the_wire() -> None:
    baud = 115200
    cable = Cable(baud=baud).start()
    try:
        a, b = _ends(cable)
        t0 = time.monotonic()
        a.sendall(b"\x01" * 40 + b"\0")
        a.sendall(b"\x02" * 40 + b"\0")
        arrivals = _arrivals(b, 82)
        for t, count in arrivals:
            assert t - t0 >= count * 10 / baud
        wait_until(lambda: cable.stats["ab"] == 82, what="82 bytes counted")
    finally:
        cable.stop()


def test_unpaced_cable_relays_everything_in_chunks() -> None:
    cable = Cable(chunk=7).start()
    try:
        a, b = _ends(cable)
        payload = bytes(range(256)) * 4
        b.sendall(payload)
        a.settimeout(10)
        got = b""
        while len(got) < len(payload):
            got += a.recv(4096)
        assert got == payload
        wait_until(lambda: cable.stats["ba"] == len(payload), what="every byte counted")
    finally:
        cable.stop()
