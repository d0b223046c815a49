# Runs on CPython (pytest): the service's allow-list check for connected gates, without a link.
"""``Service.check_configs()``: reads the allow-list on a read-only connection (any path),
pushes a higher ``cfg_version`` to connected gates only when the list changed."""

from __future__ import annotations

from pathlib import Path

from host.admin import Admin
from host.site.metrics import Metrics
from host.rules.policy import load_policy
from host.site.service import Service
from host.store.db import open_db
from host.site.writer import Writer
from protocol import packet as pk
from daemon_support import CARD, CARD2, KEY_A, make_site


def test_check_configs_pushes_only_on_change(tmp_path: Path) -> None:
    folder = tmp_path / "odd %23 name #1 ?x"     # URI-special characters in the path
    folder.mkdir()
    path = folder / "site.db"
    ids = make_site(path, {"gate-1": ("gate", KEY_A)})
    w = Writer(str(path)).start()
    svc = Service(w, Metrics(), load_policy())
    sent: list[bytes] = []
    try:
        st = svc.device("gate-1")
        assert st is not None
        st.send = sent.append
        svc.set_online(st, True)
        # No HELLO in this test, so the gate has no config yet: the first look pushes one.
        assert svc.check_configs() == 1 and len(sent) == 1
        assert pk.decode(sent[0], st.mac, pk.DOWN).fields["allow"] == [bytes.fromhex(CARD2)]
        assert svc.check_configs() == 0 and len(sent) == 1  # unchanged: nothing more
        sent.clear()
        v0 = st.cfg_version
        db = open_db(path)
        Admin(db).set_card_status(CARD2, "blocked")
        db.conn.close()
        assert svc.check_configs() == 1
        frames = [pk.decode(raw, st.mac, pk.DOWN) for raw in sent]
        assert [f.type for f in frames] == [pk.CONFIG]
        assert frames[0].fields["cfg_version"] > v0 and frames[0].fields["allow"] == []
        assert svc.check_configs() == 0 and len(sent) == 1  # unchanged: nothing more
        db = open_db(path)
        Admin(db).sell_pass(ids["m1"], "gym_month")
        db.conn.close()
        assert svc.check_configs() == 1
        last = pk.decode(sent[-1], st.mac, pk.DOWN)
        assert last.fields["allow"] == [bytes.fromhex(CARD)]
        assert last.fields["cfg_version"] > frames[0].fields["cfg_version"]
    finally:
        svc.close()
        w.stop()


def test_a_blocked_link_does_not_hold_up_the_writer(tmp_path: Path) -> None:
    """The DECISION is sent from the writer's thread right after COMMIT, through the link's
    send, which never blocks: a link whose writes can block (a serial peer that stopped
    reading) sends through a SendQueue of its own, so the single writer stays free for every
    other device."""
    import threading

    from conftest import wait_until
    from host.site.replies import SendQueue
    from protocol.mac import Mac

    path = tmp_path / "site.db"
    make_site(path)
    w = Writer(str(path)).start()
    svc = Service(w, Metrics(), load_policy())
    release = threading.Event()
    sent: list[bytes] = []

    def stuck(raw: bytes) -> None:
        release.wait(30)
        sent.append(raw)

    out = SendQueue("test", stuck)
    try:
        tap = pk.encode(pk.TAP, (1 << 16) | 1, "kiosk-1",
                        {"uid": bytes.fromhex(CARD), "sak": 0x20, "flags": 0, "direction": 0,
                         "service": 0, "amount": 100, "device_time": 0, "secure": b""},
                        Mac(KEY_A), pk.UP)
        assert svc.handle(tap, out.put, link="test") == "kiosk-1"
        # The tap's DECISION is waiting on the stuck link; the writer still answers.
        assert w.call(lambda db: db.execute("SELECT count(*) FROM taps").fetchone()[0]
                      ).result(5) == 1
        assert sent == []
        release.set()
        assert svc.drain(10.0)
        wait_until(lambda: sent, what="the DECISION written once the line moves again")
        d = pk.decode(sent[0], Mac(KEY_A), pk.DOWN)
        assert d.type == pk.DECISION and d.fields["verdict"] == 1
    finally:
        release.set()
        out.close()
        svc.close()
        w.stop()
