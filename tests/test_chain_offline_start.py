# Runs on CPython (pytest): a chain store's daemon started while PostgreSQL is stopped (a store PC rebooting in a WAN outage).
"""Issue 17 (chain): a daemon must be able to start while the chain's PostgreSQL cannot be
reached. With an offline snapshot (the daemon ran here before), it authenticates its readers
and takes its policy from the snapshot, decides taps within the offline allowance, and
reconciles when PostgreSQL is back. Without one (it never reached the database), it starts
and refuses every tap with a reason in its log, and serves normally once PostgreSQL answers:
no crash loop. A real PostgreSQL, stopped and started; real daemons and mosquitto."""

from __future__ import annotations

from pathlib import Path

import pytest

import pg_support
from conftest import Broker, wait_until
from daemon_support import CARD, KEY_A, DaemonProcess, InProcessDaemon
from host.admin import Admin
from host.cli import app as cli
from host.privacy import keyfile
from host.store.db import open_db
from host.store.devices import register_device
from protocol import codes
from sim.device import MqttTransport, NoReply, SimDevice

START_FEN = 15_00


@pytest.fixture
def chain(tmp_path: Path, monkeypatch):
    """A PostgreSQL server of this test's own (it is stopped), one kiosk, one member with
    15.00, and a stored policy with an offline allowance of 5.00."""
    with pg_support.running_server() as server:
        key = str(tmp_path / "chain.key")
        keyfile.create(key)
        monkeypatch.setenv(keyfile.ENV, key)
        url = server.new_database()
        db = open_db(url)
        register_device(db, "kiosk-1", "kiosk", key=KEY_A)
        admin = Admin(db)
        mid = admin.add_member("Ada", consent_terms="t1")["member_id"]
        admin.enroll_card(mid, CARD)
        admin.topup(mid, START_FEN)
        db.close()
        policy = tmp_path / "policy.toml"
        policy.write_text('[offline]\nallowance = "5.00"\n')
        assert cli.main(["--db", url, "policy", "set", str(policy)]) == 0
        broker = Broker(tmp_path)
        try:
            yield server, url, broker
        finally:
            broker.stop()


def _daemon(url: str, broker: Broker, tmp_path: Path, name: str,
            *extra: str) -> DaemonProcess:
    return DaemonProcess(["--db", url, "--mqtt", broker.address, "--no-http", *extra],
                         tmp_path / f"{name}.log", tmp_path / "journal.db")


def _hello(dev: SimDevice) -> bool:
    try:
        dev.hello()
        return True
    except NoReply:
        return False


def test_start_during_an_outage_serves_from_the_snapshot_and_reconciles(chain, tmp_path):
    server, url, broker = chain
    dev = SimDevice("kiosk-1", KEY_A, "kiosk", MqttTransport(broker.host, broker.port))
    daemon = _daemon(url, broker, tmp_path, "online")
    try:
        wait_until(lambda: _hello(dev), 20, what="WELCOME online")
        assert dev.tap(CARD, amount_fen=1_00)["verdict"] == codes.GRANT
        assert daemon.terminate() == 0
        daemon.close()
        server.stop("fast")                          # the store PC reboots in an outage
        # ... with another heartbeat: the reader's config changes, but cannot be stored
        daemon = _daemon(url, broker, tmp_path, "offline", "--heartbeat-s", "20")
        wait_until(lambda: _hello(dev), 20, what="WELCOME while PostgreSQL is down")
        cfg_before = dev.cfg_version
        first = dev.tap(CARD, amount_fen=3_00)       # within the 5.00 allowance
        second = dev.tap(CARD, amount_fen=3_00)      # 6.00 would exceed it
        assert first["verdict"] == codes.GRANT and second["verdict"] == codes.DENY
        assert "offline" in first["text"] and "Offline limit" in second["text"]
        log = daemon.log()
        assert "loaded from the offline snapshot" in log and "HELLO answered offline" in log
        server.start()
        wait_until(lambda: "outage 1 over" in daemon.log(), 30, what="the journal replayed")
        # The HELLO answered offline is stored now and its config pushed, without a HELLO.
        wait_until(lambda: dev.cfg_version > cfg_before, 20, what="the config pushed")
        assert dev.configs[-1]["heartbeat_s"] == 20
        assert dev.tap(CARD, amount_fen=1_00)["verdict"] == codes.GRANT   # online again
        assert daemon.terminate() == 0
    finally:
        dev.close()
        daemon.close()
    db = open_db(url)
    try:
        rows = db.execute("SELECT amount_fen, verdict, reason, charged_fen FROM taps WHERE "
                          "device_id = 'kiosk-1' ORDER BY seq").fetchall()
        assert [r[:3] for r in rows] == [(1_00, "grant", "ok"), (3_00, "grant", "ok"),
                                         (3_00, "deny", "insufficient_balance"),
                                         (1_00, "grant", "ok")]
        charged = sum(r[3] for r in rows)
        left = db.execute("SELECT principal_fen + bonus_fen FROM members").fetchone()[0]
        assert left == START_FEN - charged and 0 < charged <= 5_00
        # The down-seq boot taken offline was written back: a later start goes above it.
        assert db.execute("SELECT down_seq >> 16 FROM devices").fetchone()[0] >= 2
    finally:
        db.close()
    assert cli.main(["--db", url, "verify"]) == 0


def test_start_without_a_snapshot_refuses_with_a_reason_then_serves(chain, tmp_path):
    server, url, broker = chain
    server.stop("fast")                               # never reached by this daemon
    dev = SimDevice("kiosk-1", KEY_A, "kiosk", MqttTransport(broker.host, broker.port))
    daemon = _daemon(url, broker, tmp_path, "nosnap")
    try:
        assert "no offline snapshot yet" in daemon.log()
        assert not _hello(dev)                        # cannot be authenticated: no key
        wait_until(lambda: "is not in this daemon's offline snapshot" in daemon.log(), 10,
                   what="the refusal's reason in the log")
        assert daemon.proc.poll() is None             # running, not crash-looping
        server.start()
        wait_until(lambda: _hello(dev), 30, what="WELCOME once PostgreSQL answers")
        assert dev.tap(CARD, amount_fen=1_00)["verdict"] == codes.GRANT
        # The chain's stored policy replaced the defaults the daemon started with.
        assert "policy.toml loaded" in daemon.log()
        assert daemon.terminate() == 0
    finally:
        dev.close()
        daemon.close()
    db = open_db(url)
    try:
        assert db.execute("SELECT verdict FROM taps").fetchall() == [("grant",)]
    finally:
        db.close()


def test_the_http_api_takes_the_chain_policy_once_the_database_answers(chain, tmp_path,
                                                                        monkeypatch):
    server, url, broker = chain
    server.stop("fast")
    monkeypatch.setenv("TAPKIOSK_OFFLINE_JOURNAL", str(tmp_path / "api-journal.db"))
    daemon = InProcessDaemon(["--db", url, "--mqtt", broker.address])
    try:
        web = daemon.daemon.web
        assert web is not None and web.ctx.policy.offline.allowance_fen == 0   # defaults
        server.start()
        wait_until(lambda: web.ctx.policy.offline.allowance_fen == 5_00, 30,
                   what="the API on the chain's stored policy")
        assert web.ctx.policy is daemon.daemon.writer.engine.policy
    finally:
        daemon.stop()


def test_a_wrong_database_name_is_still_an_error_at_start(chain, tmp_path, monkeypatch,
                                                          capsys):
    import logging

    from host.daemon import main
    server, url, broker = chain
    monkeypatch.setenv("TAPKIOSK_OFFLINE_JOURNAL", str(tmp_path / "journal.db"))
    root = logging.getLogger("tapkiosk")
    saved = (root.handlers[:], root.propagate, root.level)
    try:
        rc = main(["--db", url.rsplit("/", 1)[0] + "/nosuchdb", "--mqtt", broker.address,
                   "--no-http"])
    finally:    # main() set up logging to this test's captured stderr
        root.handlers[:], root.propagate, root.level = saved
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "nosuchdb" in err[-1] and "does not exist" in err[-1]
