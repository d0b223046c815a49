# Runs on CPython (pytest): nfcpy's own PN532 driver talks to the emulator over a pty.
"""Acceptance: the emulator is a faithful enough chip for nfcpy's pn532/pn53x driver.

nfcpy's ``tty:`` path only matches names in /dev (no ``pts/N``), so the test builds what
``nfc.clf.device.connect`` builds: a ``transport.TTY`` on the pty and ``pn532.init``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("nfc")
import nfc.clf  # noqa: E402
import nfc.clf.pn532  # noqa: E402
import nfc.clf.transport  # noqa: E402

from sim.cards import FelicaCard, IsoDepCard, UidCard  # noqa: E402
from sim.pn532 import PN532Emulator  # noqa: E402


# nfcpy waits for a real chip's answers (ACK within 100 ms at init, most commands 100-250 ms).
# The emulator is a thread of this process: on a loaded machine it may not be scheduled that
# soon, and init gives up with ENODEV. The test checks what the emulator answers, not how
# fast, so its transport gives it this many times nfcpy's deadlines.
_SLACK = 20


class PatientTTY(nfc.clf.transport.TTY):
    """nfcpy's TTY transport with every read deadline ``_SLACK`` times longer."""

    def read(self, timeout):
        return super().read(timeout * _SLACK if timeout else timeout)


@pytest.fixture
def emu_clf():
    emu = PN532Emulator()
    path = emu.serve_pty()
    device = nfc.clf.pn532.init(PatientTTY(path))
    device._path = path  # what nfc.clf.device.connect sets
    clf = nfc.ContactlessFrontend()
    clf.device = device
    yield emu, clf
    clf.close()
    emu.close()


def test_nfcpy_identifies_the_chip(emu_clf):
    emu, clf = emu_clf
    assert "PN532v1.6" in str(clf.device)
    assert 0x00 in emu.commands  # nfcpy ran its Diagnose line test (extended frames)


def test_nfcpy_senses_a_classic_card(emu_clf):
    emu, clf = emu_clf
    emu.place(UidCard(bytes.fromhex("DEADBEEF"), sak=0x08))
    target = clf.sense(nfc.clf.RemoteTarget("106A"))
    assert target is not None
    assert bytes(target.sdd_res) == bytes.fromhex("DEADBEEF")
    assert bytes(target.sel_res) == b"\x08"
    assert bytes(target.sens_res) == b"\x04\x00"  # NFC Forum byte order


def test_nfcpy_senses_a_seven_byte_iso_dep_card(emu_clf):
    emu, clf = emu_clf
    emu.place(IsoDepCard(bytes.fromhex("04A1B2C3D4E5F6")))
    target = clf.sense(nfc.clf.RemoteTarget("106A"))
    assert bytes(target.sdd_res) == bytes.fromhex("04A1B2C3D4E5F6")
    assert target.sel_res[0] == 0x20


def test_nfcpy_senses_nothing_without_a_card(emu_clf):
    emu, clf = emu_clf
    assert clf.sense(nfc.clf.RemoteTarget("106A")) is None
    emu.place(UidCard(bytes.fromhex("01020304")))
    assert clf.sense(nfc.clf.RemoteTarget("106A")) is not None
    emu.remove()
    assert clf.sense(nfc.clf.RemoteTarget("106A")) is None


def test_nfcpy_senses_felica(emu_clf):
    emu, clf = emu_clf
    idm = bytes.fromhex("0101010601B00ADE")
    emu.place(FelicaCard(idm, bytes.fromhex("0B03014B024F4993"), 0x12FC))
    target = clf.sense(nfc.clf.RemoteTarget("212F"))
    assert bytes(target.sensf_res[1:9]) == idm
