"""Host-attached reader: a card emulated with nfcpy's udp: driver is read by the daemon's
``--nfc udp:...`` link and decided as a registered device; seqs stay unique across restarts.
A secure NTAG 424 DNA (sim/ntag424.py, ISO-DEP by sim/isodep.py) gives its SUN message to the
link and is verified; a magic clone of its UID is refused as ``cloned``."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import nfc
import nfc.clf

from contextlib import contextmanager

from conftest import free_port
from host.admin import Admin
from host.secure.personalise import URL_TEMPLATE, ndef_template, read_ndef
from host.rules.policy import load_policy
from host.secure.enroll import enroll_secure
from host.secure.check import ensure_site_key
from host.store.db import open_db
from sim.isodep import IsoDepPicc
from sim.magic import MagicCard
from sim.ntag424 import Ntag424
from conftest import poll_until, wait_until
from daemon_support import CARD2, KEY_A, InProcessDaemon, ledger_ok, make_site


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
        started = time.monotonic()

        def presented_all() -> bool:
            if self._stop.is_set() or self.presented >= self._times:
                return True
            if clf.connect(card={"on-startup": self._target, "on-connect": lambda tag: False},
                           terminate=lambda: self._stop.is_set()
                           or time.monotonic() - started > 20) is not None:
                self.presented += 1
            return self.presented >= self._times

        try:
            poll_until(presented_all, 20, 0.05)
        finally:
            clf.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class IsoDepCardEmulator:
    """Virtual ISO-DEP cards on nfcpy's UDP simulator, each presented once, in turn.

    The card side of activation (ATQA, UID, SAK) is nfcpy's own ``listen``; RATS and the
    I-/R-/S-blocks that follow are answered by ``sim.isodep.IsoDepPicc`` in front of the
    virtual card (``Ntag424``, ``MagicCard``). A presentation ends when the reader polls
    again (SENS_REQ/ALL_REQ) or goes quiet; the next card is presented ``gap_s`` later.
    """

    def __init__(self, port: int, cards: list, gap_s: float = 2.0) -> None:
        self.port = port
        self.cards = list(cards)
        self.gap_s = gap_s
        self.presented = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "IsoDepCardEmulator":
        self._thread.start()
        return self

    def _present(self, card: object, timeout: float) -> bool:
        target = nfc.clf.LocalTarget("106A")
        target.sens_res = bytearray(card.atqa[::-1])  # ATQA 0344h goes LSB first
        target.sdd_res = bytearray(card.uid)
        target.sel_res = bytearray([card.sak])
        clf = nfc.ContactlessFrontend(f"udp:127.0.0.1:{self.port}")
        try:
            if timeout <= 0:
                return False
            activated = poll_until(lambda: self._stop.is_set() or clf.listen(target, 0.5), timeout, 0)
            if activated is None or activated is True:  # the time is up, or stop() was called
                return False
            if activated.tt4_cmd is None:
                return False
            picc = IsoDepPicc(card)
            cmd = bytes(activated.tt4_cmd)
            while cmd and cmd[:1] not in (b"\x26", b"\x52") and not self._stop.is_set():
                rsp = picc.transceive_raw(cmd)
                try:
                    cmd = clf.exchange(rsp, 1.0)
                except nfc.clf.CommunicationError:
                    break
            return True
        finally:
            clf.close()

    def _run(self) -> None:
        started = time.monotonic()
        for card in self.cards:
            if not self._present(card, 40 - (time.monotonic() - started)):  # 40 s for them all
                return
            self.presented += 1
            self._stop.wait(self.gap_s)  # away longer than the link's debounce

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
            wait_until(lambda: link.decided >= 1, 20, what="card decided")
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


def _security(path: Path) -> list[tuple[str, str, str, str | None]]:
    db = open_db(path)
    try:
        return [tuple(r) for r in db.execute(
            "SELECT uid, verdict, reason, security FROM taps WHERE device_id = 'pc-gate' "
            "ORDER BY id")]
    finally:
        db.conn.close()


def test_secure_card_verified_and_clone_refused_on_the_nfc_link(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    ids = make_site(path, {"pc-gate": ("gate", KEY_A)})
    card = Ntag424(bytes.fromhex(CARD2))
    db = open_db(path)
    ensure_site_key(db, 0)

    @contextmanager
    def on_the_desk(uid: str):
        yield card.transceive
    # Bob (gym pass) upgrades his plain card to this personalised NTAG 424 DNA.
    assert enroll_secure(Admin(db, load_policy()), ids["m2"], CARD2, on_the_desk)["secure"]
    db.conn.close()
    skimmed = read_ndef(card.transceive)  # a phone's read: a valid but used SUN message
    forged, p, c = ndef_template(URL_TEMPLATE)  # a clone without the keys makes p and c up
    forged = bytearray(forged)
    forged[p:p + 32] = os.urandom(16).hex().encode()
    forged[c:c + 16] = os.urandom(8).hex().encode()
    clone = MagicCard(bytes.fromhex(CARD2), bytes(forged))
    replayer = MagicCard(bytes.fromhex(CARD2), skimmed)

    port = free_port()
    cards = IsoDepCardEmulator(port, [card, clone, replayer]).start()
    d = InProcessDaemon(["--db", str(path), "--nfc", f"udp:127.0.0.1:{port}",
                         "--nfc-device", "pc-gate"])
    try:
        link = d.daemon.links[0]
        wait_until(lambda: link.decided >= 3, 40, what="genuine card and clones decided")
    finally:
        d.stop()
        cards.stop()
    assert _security(path) == [(CARD2, "grant", "ok", "sun"),
                               (CARD2, "deny", "cloned", "cloned"),
                               (CARD2, "deny", "card_replay", "card_replay")]
    assert card.counter == 3  # personalised (1), skimmed (2), read by the link (3)
    db = open_db(path)
    try:
        assert db.execute("SELECT sun_counter FROM cards WHERE uid = ?",
                          (CARD2,)).fetchone()[0] == 3
    finally:
        db.conn.close()
    assert ledger_ok(path)
