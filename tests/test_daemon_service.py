# Runs on CPython (pytest): the daemon's frame handling without a transport — refusals,
# per-link send queues, unknown ids, latency, damaged frames, link state, metrics port, logs.
"""Daemon service behaviour pinned by issues #12 and #20 (each test failed before its fix)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port, wait_until
from daemon_support import CARD, KEY_A, KEY_B, InProcessDaemon, make_site

from host.rules.policy import load_policy
from host.site.links.serial import SerialLink
from host.site.metrics import Metrics
from host.site.service import Service
from host.secure.check import card_ref
from host.site.writer import Writer
from host.store import site_state
from host.store.db import open_db
from protocol import framing
from protocol import packet as pk
from protocol.mac import Mac


def _tap(dev: str, key: bytes, seq: int, uid: str = CARD) -> bytes:
    return pk.encode(pk.TAP, seq, dev,
                     {"uid": bytes.fromhex(uid), "sak": 0x20, "flags": 0, "direction": 0,
                      "service": 0, "amount": 100, "device_time": 0, "secure": b""},
                     Mac(key), pk.UP)


@pytest.fixture
def svc(db_url: str):
    """A Service on a seeded site, on SQLite and on PostgreSQL."""
    make_site(db_url)
    w = Writer(db_url).start()
    s = Service(w, Metrics(), load_policy())
    yield s
    s.close()
    w.stop()


def test_forged_mac_gets_no_answer_and_is_counted_for_the_device(svc: Service) -> None:
    """A frame claiming kiosk-1's pending seq, MAC'd with another key: an ERROR bad_mac
    naming that seq would make kiosk-1 drop the tap from its outbox. No answer at all."""
    sent: list[bytes] = []
    seq = (3 << 16) | 1
    assert svc.handle(_tap("kiosk-1", KEY_B, seq), sent.append, link="test") is None
    assert svc.handle(_tap("kiosk-1", KEY_B, seq + 1), sent.append, link="test") is None
    assert sent == []
    m = svc.metrics
    assert m.value("tapkiosk_frames_rejected_total", cause="bad_mac", device="kiosk-1") == 2
    assert m.value("tapkiosk_devices_online") == 0     # refused frames do not make it online
    svc.flush(wait=True)
    db = open_db(svc.writer.db_path)
    try:
        assert site_state.refusals(db, "kiosk-1") == {"bad_mac": 2}
        err = db.execute("SELECT last_error FROM devices WHERE device_id = 'kiosk-1'"
                         ).fetchone()[0]
        assert err.startswith("bad_mac: ")
    finally:
        db.conn.close()


def test_refused_unknown_device_is_labelled_unknown(svc: Service) -> None:
    assert svc.handle(_tap("ghost", KEY_A, 1 << 16 | 1), lambda b: None) is None
    assert svc.metrics.value("tapkiosk_frames_rejected_total", cause="unknown_device",
                             device="unknown") == 1


class _Port:
    """A serial port whose writes block until ``release`` is set (a peer not reading)."""

    def __init__(self, block: bool) -> None:
        self.release = threading.Event()
        self.block = block
        self.written: list[bytes] = []

    def write(self, data: bytes) -> int:
        if self.block:
            self.release.wait(30)
        self.written.append(bytes(data))
        return len(data)


def test_a_stuck_serial_peer_does_not_delay_another_devices_decision(svc: Service) -> None:
    stuck, fine = _Port(block=True), _Port(block=False)
    a, b = SerialLink("loop://a", svc), SerialLink("loop://b", svc)
    a._port, b._port = stuck, fine     # not started: the ports are given, not opened
    try:
        assert svc.handle(_tap("kiosk-1", KEY_A, 1 << 16 | 1), a.send, link=a.name) == "kiosk-1"
        assert svc.handle(_tap("kiosk-2", KEY_B, 1 << 16 | 1), b.send, link=b.name) == "kiosk-2"
        wait_until(lambda: fine.written, what="kiosk-2's DECISION while kiosk-1's line is stuck")
        [pkt] = framing.FrameParser().feed(fine.written[0])
        assert pk.decode(pkt, Mac(KEY_B), pk.DOWN).type == pk.DECISION
        assert stuck.written == []
    finally:
        stuck.release.set()
        a.out.close()
        b.out.close()
    assert len(stuck.written) == 1


def test_a_full_send_queue_drops_only_that_links_frames(svc: Service) -> None:
    stuck = _Port(block=True)
    a = SerialLink("loop://a", svc)
    a._port = stuck
    try:
        for _ in range(200):
            a.send(b"\x01\x02")
        assert svc.metrics.value("tapkiosk_link_dropped_total", link=a.name) > 0
    finally:
        stuck.release.set()
        a.out.close()


def test_unknown_id_flood_is_bounded_and_never_waits_on_the_writer(svc: Service) -> None:
    """The writer is busy (here: gone): unknown ids are still answered as unknown, from the
    read-only connection, and at most UNKNOWN_MAX of them are remembered."""
    from host.site.registry import UNKNOWN_MAX

    svc.writer.stop()
    for i in range(UNKNOWN_MAX + 500):
        svc.handle(_tap(f"ghost-{i}", KEY_A, 1 << 16 | 1), lambda b: None, link="mqtt:x")
    m = svc.metrics
    assert m.value("tapkiosk_frames_rejected_total", cause="unknown_device") == UNKNOWN_MAX + 500
    assert m.value("tapkiosk_frames_rejected_total", cause="internal") == 0
    assert svc.registry.unknown_count() <= UNKNOWN_MAX


def test_latency_metric_counts_time_queued_in_the_link(svc: Service) -> None:
    received = time.perf_counter() - 5.0     # the frame waited 5 s in the link's queue
    svc.handle(_tap("kiosk-1", KEY_A, 1 << 16 | 1), lambda b: None, link="t", received=received)
    assert svc.drain(10.0)
    assert svc.metrics.value("tapkiosk_tap_latency_seconds_sum") >= 5.0


def test_tap_log_names_the_card_by_a_hash_not_its_uid(svc: Service,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tapkiosk"):
        svc.handle(_tap("kiosk-1", KEY_A, 1 << 16 | 1), lambda b: None, link="t")
        assert svc.drain(10.0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("tap ")]
    assert len(lines) == 1 and f"card={card_ref(CARD)}" in lines[0]
    assert CARD not in caplog.text and CARD.lower() not in caplog.text


def test_garbage_on_a_line_is_counted_per_frame_and_logged_once(
        svc: Service, caplog: pytest.LogCaptureFixture) -> None:
    link = SerialLink("loop://g", svc)
    try:
        with caplog.at_level(logging.WARNING, logger="tapkiosk"):
            for _ in range(100):
                link.feed(b"\x07garbage\xff\x00")
        warnings = [r for r in caplog.records if "damaged" in r.getMessage()]
        assert len(warnings) == 1
        assert svc.metrics.value("tapkiosk_frames_rejected_total", cause="bad_frame") == 100
    finally:
        link.out.close()


def test_missing_serial_port_is_a_warning_and_link_down(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "site.db"
    make_site(path)
    missing = str(tmp_path / "no-such-tty")
    with caplog.at_level(logging.WARNING, logger="tapkiosk"):
        d = InProcessDaemon(["--db", str(path), "--serial", missing])
        try:
            wait_until(lambda: "cannot open" in caplog.text, what="the missing port logged")
            assert d.metrics.value("tapkiosk_link_up", link=f"serial:{missing}") == 0
        finally:
            d.stop()
    lines = [r for r in caplog.records if "link down" in r.getMessage()]
    assert lines and all(r.levelno == logging.WARNING for r in lines)
    assert len(lines) == 1      # once per state change, not once per retry


def test_serial_link_up_metric(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    make_site(path)
    d = InProcessDaemon(["--db", str(path), "--serial", "loop://"])
    try:
        wait_until(lambda: d.metrics.value("tapkiosk_link_up", link="serial:loop://") == 1,
                   what="link up")
    finally:
        d.stop()


def test_refused_broker_connection_is_a_warning(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "site.db"
    make_site(path)
    port = free_port()
    with caplog.at_level(logging.WARNING, logger="tapkiosk"):
        d = InProcessDaemon(["--db", str(path), "--mqtt", f"127.0.0.1:{port}"])
        try:
            wait_until(lambda: "cannot connect" in caplog.text, what="refused broker logged")
            assert d.metrics.value("tapkiosk_link_up", link=f"mqtt:127.0.0.1:{port}") == 0
        finally:
            d.stop()


def test_metrics_port_in_use_is_exit_2_naming_the_port(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from host.daemon import main

    path = tmp_path / "site.db"
    make_site(path)
    root = logging.getLogger("tapkiosk")
    saved = (root.handlers[:], root.propagate, root.level)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        try:
            rc = main(["--db", str(path), "--serial", "loop://", "--metrics-port", str(port),
                       "--no-http"])
        finally:    # main() set up logging to this test's captured stderr
            root.handlers[:], root.propagate, root.level = saved
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and str(port) in err[0]


def _next_packet(peer: socket.socket):
    """A condition for ``wait_until``: the next whole packet the peer received, else None."""
    parser = framing.FrameParser()
    got: list[bytes] = []
    peer.settimeout(0.05)

    def poll() -> bytes | None:
        if not got:
            try:
                data = peer.recv(4096)
            except TimeoutError:
                return None
            got.extend(bytes(p) for p in parser.feed(data))
        return got.pop(0) if got else None
    return poll


def test_a_socket_line_reads_what_arrived_at_once_not_byte_by_byte(svc: Service) -> None:
    """Issue 19: pyserial's socket:// port reports at most 1 byte waiting; the link reads the
    rest of a segment from the socket in the same loop, so a frame is not fed byte by byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    chunks: list[int] = []

    class Link(SerialLink):
        def feed(self, data: bytes) -> None:
            chunks.append(len(data))
            super().feed(data)

    link = Link(f"socket://127.0.0.1:{srv.getsockname()[1]}", svc).start()
    try:
        peer, _ = srv.accept()
        wait_until(link.opened.is_set, what="socket line open")
        frame = framing.encode(_tap("kiosk-1", KEY_A, 1 << 16 | 1))
        peer.sendall(frame)
        wait_until(lambda: sum(chunks) == len(frame), what="frame read")
        assert len(chunks) <= 2 < len(frame)
        # feed() has run, but the tap may not have entered the gate yet (a loaded machine):
        # wait for its DECISION on the line, then for the gate to be idle (counted by then).
        reply = wait_until(_next_packet(peer), timeout=30, what="DECISION on the line")
        assert pk.decode(reply, Mac(KEY_A), pk.DOWN).type == pk.DECISION
        assert svc.drain(10.0)
        assert svc.metrics.value("tapkiosk_tap_latency_seconds_count") == 1
        peer.close()
    finally:
        link.stop()
        srv.close()


def _socket_link(svc: Service, rcvbuf: int | None = None) -> tuple[SerialLink, socket.socket]:
    """A SerialLink on ``socket://`` to a real TCP peer (the peer's receive buffer as given)."""
    lst = socket.socket()
    if rcvbuf is not None:
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    lst.settimeout(10)
    link = SerialLink(f"socket://127.0.0.1:{lst.getsockname()[1]}", svc).start()
    peer, _ = lst.accept()
    lst.close()
    wait_until(link.opened.is_set, what="the link's port open")
    return link, peer


def _read_frames(peer: socket.socket, n: int) -> list[bytes]:
    parser, got = framing.FrameParser(), []
    peer.settimeout(10)
    while len(got) < n:
        data = peer.recv(65536)
        assert data, "the link closed"
        got += parser.feed(data)
    return got


def test_a_reply_the_line_takes_at_once_is_written_by_the_sending_thread(svc: Service) -> None:
    link, peer = _socket_link(svc)
    queued: list[bytes] = []
    put = link.out.put
    link.out.put = lambda frame: bool(queued.append(frame)) or put(frame)   # type: ignore[method-assign]
    try:
        link.send(b"\x01\x00\x02")
        assert _read_frames(peer, 1) == [b"\x01\x00\x02"]
        assert queued == []     # no hand-off to the send thread
    finally:
        peer.close()
        link.stop()


def test_a_frame_the_line_takes_in_part_goes_out_whole_and_in_order(svc: Service) -> None:
    """The peer does not read: the line fills, a frame goes out in part and its rest is queued;
    later frames queue behind it. Once the peer reads, every frame arrives whole, in order."""
    link, peer = _socket_link(svc, rcvbuf=4096)
    link._port._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    queued: list[bytes] = []
    put = link.out.put
    link.out.put = lambda frame: bool(queued.append(frame)) or put(frame)   # type: ignore[method-assign]
    sent = []
    try:
        for i in range(2000):
            sent.append(bytes([i % 251 + 1]) * 290)
            link.send(sent[-1])
            if queued:
                break
        assert queued, "the line never filled"
        direct = len(sent) - 1
        for i in range(10):
            sent.append(bytes([i + 1, 0]) * 100)
            link.send(sent[-1])
        assert direct > 0
        assert _read_frames(peer, len(sent)) == sent
        assert svc.metrics.value("tapkiosk_link_dropped_total", link=link.name) == 0
    finally:
        peer.close()
        link.stop()


class _Line:
    """A port's two writes onto one wire: the non-blocking one takes ``first`` bytes the first
    time (a line nearly full), then all it is given; the blocking one all it is given."""

    def __init__(self, first: int) -> None:
        self.wire = bytearray()
        self.first: int | None = first

    def take(self, data: bytes) -> int:
        n = len(data) if self.first is None else min(self.first, len(data))
        self.first = None
        self.wire += data[:n]
        return n

    def write(self, data: bytes) -> int:
        self.wire += data
        return len(data)


def test_the_rest_of_a_frame_taken_in_part_goes_out_before_any_later_frame(svc: Service) -> None:
    line = _Line(first=10)
    link = SerialLink("loop://p", svc)
    link._port, link._now = line, line.take     # not started: the port is given, not opened
    go = threading.Event()
    write = link.out._write
    link.out._write = lambda frame: (go.wait(10), write(frame))[1]   # type: ignore[method-assign]
    packets = [b"\x05" * 200, b"\x06" * 200, b"\x07\x00\x07"]
    try:
        for p in packets:   # the 1st: 10 bytes now, the rest queued (held); the line has room
            link.send(p)    # again, but the 2nd and 3rd must not overtake that rest
        go.set()
        wait_until(lambda: framing.FrameParser().feed(bytes(line.wire)) == packets,
                   what="the three frames whole, in order")
    finally:
        go.set()
        link.out.close()


def test_taps_answered_in_batches_give_one_decision_event_each_then_drain(db_url: str) -> None:
    """The reply thread publishes a batch's decision events and counts its taps once per
    batch (as the daemon wires it: the writer's replies held until its batch is answered);
    every tap still gets its own event, and drain returns only once they are out."""
    from host.web.events import EventBus

    make_site(db_url)
    w = Writer(db_url).start()
    bus = EventBus()
    events = bus.subscribe(["decision"], queue_size=100)
    s = Service(w, Metrics(), load_policy(), bus=bus)
    w.after_job.append(s.replies.flush)
    s.replies.defer_on(w.holds)
    answers: list[bytes] = []
    try:
        for i in range(1, 9):
            s.handle(_tap("kiosk-1", KEY_A, 1 << 16 | i), answers.append, link="t")
        assert s.drain(10.0)
        got = [events.get(timeout=0) for _ in range(9)]
        assert got[8] is None and len(answers) == 8
        seqs = [e.data["seq"] for e in got[:8]]
        assert seqs == sorted(seqs) and len(set(seqs)) == 8
        assert [e.id for e in got[:8]] == sorted(e.id for e in got[:8])
        assert s.metrics.value("tapkiosk_taps_total") == 8
    finally:
        s.close()
        w.stop()
