# Runs on CPython (pytest): the service's allow-list check for connected gates, without a link.
"""``Service.check_configs()``: reads the allow-list on a read-only connection (any path),
pushes a higher ``cfg_version`` to connected gates only when the list changed."""

from __future__ import annotations

from pathlib import Path

from host.admin import Admin
from host.metrics import Metrics
from host.policy import load_policy
from host.service import Service
from host.store import open_db
from host.writer import Writer
from protocol import packet as pk
from test_daemon_support import CARD, CARD2, KEY_A, make_site


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
