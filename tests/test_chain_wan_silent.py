# Runs on CPython (pytest): a WAN that drops packets without a word — the store's daemon finds out within seconds.
"""Issue 17 (chain), WAN outage without a connection reset: the chain's PostgreSQL vanishes
while packets to it are silently dropped. A statement sent then must not wait for the TCP
timeout (minutes): the daemon's connection carries libpq keepalives and a TCP user timeout
(checked on the real socket), and a batch of taps that outlasts its limit has its connection
broken by the writer's watchdog, so the store decides offline. A real PostgreSQL behind a TCP
proxy of the test's own that stops forwarding (and keeps every connection open)."""

from __future__ import annotations

import os
import socket
import threading
from functools import partial

import pytest

from conftest import wait_until
from host.admin import Admin
from host.ledger.book import verify
from host.rules.engine import Engine, Tap
from host.site.journal import Journal
from host.site.outage import Outage
from host.site.writer import Writer
from host.store.db import open_db
from host.store.devices import register_device
from host.store.outage import unapplied
from host.store.pg import PgConnection, reachable
from site_support import UID, Clock
from test_chain_outage import POLICY, balance, enc


class StallingProxy:
    """A TCP proxy to ``upstream``; :meth:`stall` makes it drop every byte both ways while
    every connection stays open (a WAN that loses packets: nothing is reset)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.stalled = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self.stalled.set()

    def resume(self) -> None:
        self.stalled.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
                if not data:
                    break
                if not self.stalled.is_set():
                    dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()
        for s in self.conns:
            s.close()


def _via(url: str, port: int) -> str:
    head, tail = url.rsplit("@", 1) if "@" in url else ("postgresql://", url.split("//", 1)[1])
    host_port, rest = tail.split("/", 1)
    sep = "@" if "@" in url else ""
    return f"{head}{sep}127.0.0.1:{port}/{rest}"


def _sockopt(conn: PgConnection, level: int, name: int) -> int:
    with socket.socket(fileno=os.dup(conn._pg.pgconn.socket)) as s:
        return s.getsockopt(level, name)


def test_the_connection_carries_keepalives_and_a_user_timeout(pg_server):
    url = pg_server.new_database()
    conn = PgConnection(url)
    try:
        tcp = socket.IPPROTO_TCP
        assert _sockopt(conn, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert (_sockopt(conn, tcp, socket.TCP_KEEPIDLE), _sockopt(conn, tcp, socket.TCP_KEEPINTVL),
                _sockopt(conn, tcp, socket.TCP_KEEPCNT)) == (5, 2, 3)
        assert _sockopt(conn, tcp, socket.TCP_USER_TIMEOUT) == 10_000
    finally:
        conn.close()
    sep = "&" if "?" in url else "?"
    conn = PgConnection(f"{url}{sep}keepalives_idle=7")     # the URL's own setting wins
    try:
        assert _sockopt(conn, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
    finally:
        conn.close()


@pytest.fixture
def proxied(pg_server, tmp_path):
    url = pg_server.new_database()
    db = open_db(url)
    clock = Clock(2026, 3, 10, 12, 0)
    admin = Admin(db, POLICY, clock)
    register_device(db, "K1", "kiosk")
    mid = admin.add_member()["member_id"]
    admin.enroll_card(mid, UID)
    admin.topup(mid, 100_00)
    proxy = StallingProxy(("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0])))
    try:
        yield db, proxy, _via(url, proxy.port), clock, mid
    finally:
        proxy.close()
        db.conn.close()


def test_a_silent_wan_drop_sends_the_store_offline_within_seconds(proxied, tmp_path):
    db, proxy, url, clock, mid = proxied
    outage = Outage(Journal(str(tmp_path / "store.journal")), retry_s=0.5,
                    probe=partial(reachable, url, 2), tap_limit_s=2.0)
    writer = Writer(url, policy=POLICY, engine_factory=lambda d: Engine(d, POLICY, clock),
                    outage=outage).start()
    try:
        def tap(seq: int, timeout: float = 10):
            clock.now = clock.now.replace(minute=seq)
            return writer.submit_tap(Tap("K1", seq, UID, amount_fen=1_00), enc).result(timeout)

        assert tap(1).verdict == "grant" and not outage.offline
        proxy.stall()                      # packets dropped, no reset, nothing closed
        d = tap(2, timeout=60)             # without a bound it would wait forever here
        assert d.verdict == "grant" and outage.offline and outage.watchdog.fired >= 1
        assert outage.journal.find("K1", 2) is not None        # decided from the journal
        assert tap(3).verdict == "grant" and outage.offline      # no wait: the probe asks
        proxy.resume()
        wait_until(lambda: not outage.offline, 60, what="the journal replayed")
        assert tap(4).verdict == "grant"
    finally:
        writer.stop()
    assert [r[0] for r in db.execute("SELECT seq FROM taps ORDER BY seq")] == [1, 2, 3, 4]
    assert balance(db, mid) == 100_00 - 4 * (1_00 * 95 // 100)
    assert unapplied(db) == [] and verify(db) == []
