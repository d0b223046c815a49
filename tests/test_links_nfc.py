"""Host-attached reader: a card emulated with nfcpy's udp: driver is read by the daemon's
``--nfc udp:...`` link and decided as a registered device; seqs stay unique across restarts."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import nfc
import nfc.clf

from conftest import free_port
from host.store import open_db
from test_daemon_support import CARD2, KEY_A, InProcessDaemon, ledger_ok, make_site, wait_for


class CardEmulator:
    """A Type 2 tag (UID, SAK 0x00) on nfcpy's UDP simulator, presented up to ``times`` times."""

    def __init__(self, port: int, uid_hex: str, times: int) -> None:
        self.port = port
        self.uid = bytearray.fromhex(uid_hex)
        self.presented = 0
        self._times = times
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "CardEmulator":
        self._thread.start()
        return self

    def _target(self, _target: object) -> nfc.clf.LocalTarget:
        t = nfc.clf.LocalTarget("106A")
        t.sens_res = bytearray.fromhex("4400")
        t.sdd_res = self.uid
        t.sel_res = bytearray.fromhex("00")
        return t

    def _run(self) -> None:
        clf = nfc.ContactlessFrontend(f"udp:127.0.0.1:{self.port}")
        try:
            deadline = time.monotonic() + 20
            while self.presented < self._times and time.monotonic() < deadline \
                    and not self._stop.is_set():
                if clf.connect(card={"on-startup": self._target, "on-connect": lambda tag: False},
                               terminate=lambda: self._stop.is_set()
                               or time.monotonic() > deadline) is not None:
                    self.presented += 1
                time.sleep(0.05)
        finally:
            clf.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _taps(path: Path) -> list[tuple[int, str, str, str]]:
    db = open_db(path)
    try:
        return [tuple(r) for r in db.execute(
            "SELECT seq, uid, verdict, reason FROM taps WHERE device_id = 'pc-gate' ORDER BY id")]
    finally:
        db.conn.close()


def test_udp_card_read_and_decided(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    make_site(path, {"pc-gate": ("gate", KEY_A)})
    seqs: list[int] = []
    for run in range(2):
        port = free_port()
        card = CardEmulator(port, CARD2, times=1).start()
        d = InProcessDaemon(["--db", str(path), "--nfc", f"udp:127.0.0.1:{port}",
                             "--nfc-device", "pc-gate"])
        try:
            link = d.daemon.links[0]
            wait_for(lambda: link.decided >= 1, 20, "card decided")
            assert d.metrics.value("tapkiosk_taps_total", verdict=link.last.verdict,
                                   reason=link.last.reason) == 1
        finally:
            d.stop()
            card.stop()
        rows = _taps(path)
        assert len(rows) == run + 1
        seq, uid, verdict, reason = rows[-1]
        assert uid == CARD2
        seqs.append(seq)
        # First tap: the member's gym pass opens the gate; second (seconds later): refused as
        # a duplicate / already inside, which shows the engine saw the first one.
        if run == 0:
            assert (verdict, reason) == ("grant", "ok")
        else:
            assert verdict == "deny" and reason in ("duplicate", "passback")
    assert seqs[1] > seqs[0] and seqs[1] >> 16 > seqs[0] >> 16
    assert ledger_ok(path)
