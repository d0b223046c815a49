# Runs on CPython (pytest): the serial link's read of its port — one wait and one read a wake-up.
"""``host.site.links.serial._direct_read`` on a real pty and a real socket:// line: what
arrived comes back in one read, a cancelled read (the link's stop) returns nothing without
eating bytes, a peer that goes away raises, and other port types keep pyserial's read; and
the simulated device's socket:// transport, which reads the same way."""

from __future__ import annotations

import os
import socket
import tty

import pytest
import serial
from conftest import wait_until

from host.site.links.serial import _direct_read


@pytest.fixture
def pty_port():
    master, slave = os.openpty()
    tty.setraw(master)
    port = serial.serial_for_url(os.ttyname(slave), timeout=0.05)
    yield master, port
    port.close()
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


def test_pty_read_returns_what_arrived_in_one_read(pty_port) -> None:
    master, port = pty_port
    read = _direct_read(port)
    assert read is not None
    assert read() == b""   # nothing arrived: the wait times out
    os.write(master, b"\x00abc\x00" * 10)
    got = read()
    while len(got) < 50:   # a pty may hand a write on in two parts
        got += read()
    assert got == b"\x00abc\x00" * 10


def test_pty_cancelled_read_returns_nothing_and_keeps_the_bytes(pty_port) -> None:
    master, port = pty_port
    read = _direct_read(port)
    port.cancel_read()
    os.write(master, b"xyz")
    first = read()
    rest = b"" if first == b"xyz" else read()
    assert first + rest == b"xyz"   # the cancel cost no byte
    port.cancel_read()
    assert read() == b""


def test_pty_whose_device_went_away_raises(pty_port) -> None:
    master, port = pty_port
    read = _direct_read(port)
    os.close(master)
    with pytest.raises((serial.SerialException, OSError)):
        for _ in range(20):
            read()


def test_socket_line_reads_at_once_and_raises_when_the_peer_closes() -> None:
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    port = serial.serial_for_url(f"socket://127.0.0.1:{lst.getsockname()[1]}", timeout=0.05)
    peer, _ = lst.accept()
    try:
        read = _direct_read(port)
        assert read is not None
        peer.sendall(b"0123456789" * 6)
        got = b""
        while len(got) < 60:
            got += read()
        assert got == b"0123456789" * 6
        peer.close()
        with pytest.raises(serial.SerialException):
            for _ in range(20):
                read()
    finally:
        port.close()
        lst.close()


def test_other_ports_keep_pyserials_read(pty_port) -> None:
    port = serial.serial_for_url("loop://", timeout=0.05)
    try:
        assert _direct_read(port) is None
    finally:
        port.close()
    _, tty_port = pty_port
    spy = serial.serial_for_url("spy://" + tty_port.port + "?file=/dev/null", timeout=0.05)
    try:   # a wrapper that logs what pyserial reads: its read is kept
        assert _direct_read(spy) is None
    finally:
        spy.close()


def test_sim_device_socket_transport_frames_both_ways_and_ends_when_closed() -> None:
    """sim/device.py reads its socket:// port the same way (one poll, one recv): frames both
    ways, split anywhere; its reader thread ends when the other end closes."""
    from protocol import framing
    from sim.device import SerialTransport

    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    tr = SerialTransport(f"socket://127.0.0.1:{lst.getsockname()[1]}")
    got: list[bytes] = []
    tr.attach("kiosk-1", got.append)
    peer, _ = lst.accept()
    try:
        frame = framing.encode(b"decision" * 8)
        peer.sendall(frame[:7])
        peer.sendall(frame[7:] + framing.encode(b"second"))
        tr.send(b"tap" * 20)
        parser, up = framing.FrameParser(), []
        peer.settimeout(10)
        while not up:
            up += parser.feed(peer.recv(4096))
        assert up == [b"tap" * 20]
        wait_until(lambda: len(got) == 2, what="both frames read")
        assert got == [b"decision" * 8, b"second"] and tr._thread.is_alive()
        peer.close()
        tr._thread.join(10)
        assert not tr._thread.is_alive()
    finally:
        tr.close()
        lst.close()
