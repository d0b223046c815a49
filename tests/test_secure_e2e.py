# Runs on CPython (pytest): secure cards end to end — firmware/sun.py under MicroPython, the PN532 emulator, the real daemon.
"""An NTAG 424 DNA personalised with the site key lies on the emulated PN532; the firmware
(MicroPython unix port) reads its SUN message and sends it in the TAP; the real daemon
verifies it. Clones, skimmed and replayed messages and a plain card on a "sun" site are
refused with their reasons. The rig (emulator, cable, board, daemon) is
tests/firmware_rig.py's (the `rigs` fixture)."""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager

import pytest

from conftest import poll_until
from firmware_rig import CARD, KEY, OTHER

from host.admin import Admin
from host.secure.personalise import URL_TEMPLATE, ndef_template, ndef_url, read_ndef
from host.rules.policy import load_policy
from host.secure.sun import parse_sun
from host.secure.enroll import enroll_secure
from host.secure.check import ensure_site_key
from host.store.db import open_db
from sim.cards import UidCard
from sim.device import SerialTransport, SimDevice
from sim.magic import MagicCard
from sim.ntag424 import Ntag424

pytestmark = pytest.mark.micropython

SECURE = "04C0FFEE123456"


def rows(db, device_id):
    with sqlite3.connect(db) as c:
        return c.execute("SELECT seq, uid, verdict, reason, security FROM taps "
                         "WHERE device_id = ? ORDER BY id", (device_id,)).fetchall()


def wait_rows(rig, n, timeout=20.0):
    def enough():
        r = rows(rig.db, rig.device_id)
        return [r] if len(r) >= n else None  # wrapped: no rows is an answer for n = 0

    got = poll_until(enough, timeout, 0.1)
    return got[0] if got else rows(rig.db, rig.device_id)


def present(rig, card, hold=0.6):
    rig.emu.place(card)
    time.sleep(hold)  # the card lies on the reader this long, then goes
    rig.emu.remove()
    time.sleep(0.5)  # away longer than the debounce: the next card is a new tap


def enrol(db_path, card):
    db = open_db(db_path)
    ensure_site_key(db, 0)
    admin = Admin(db, load_policy())

    @contextmanager
    def direct(uid):
        yield card.transceive
    r = enroll_secure(admin, 1, SECURE, direct)  # member 1 = Ann, who holds the gym pass
    db.conn.close()
    return r


def forged_image():
    """What a clone without the keys can carry: the tapkiosk URL with made-up p and c."""
    image, p, c = ndef_template(URL_TEMPLATE)
    image = bytearray(image)
    image[p:p + 32] = os.urandom(16).hex().encode()
    image[c:c + 16] = os.urandom(8).hex().encode()
    return bytes(image)


def last_read_field(card):
    """The SUN field of the card's last NDEF read, from its APDU log (what the firmware sent)."""
    data = b""
    for apdu, rsp in card.apdu_log:
        if apdu[:2] == b"\x00\xA4":
            data = b""
        elif apdu[:2] == b"\x00\xB0" and rsp[-2:] == b"\x90\x00":
            data += rsp[:-2]
    return parse_sun(ndef_url(data)).to_field()


def test_secure_card_clone_skim_and_replay(rigs, tmp_path):
    rig = rigs(kind="gate")
    card = Ntag424(bytes.fromhex(SECURE))
    assert enrol(rig.db, card)["sun_counter"] == 1
    skimmed = read_ndef(card.transceive)   # a phone reads the card; never shown to the host
    rig.boot()

    present(rig, card)                     # the genuine card: counter 3
    r = wait_rows(rig, 1)
    assert r[-1][1:] == (SECURE, "grant", "ok", "sun"), rig.console()
    genuine = last_read_field(card)

    present(rig, MagicCard(bytes.fromhex(SECURE), forged_image()))
    r = wait_rows(rig, 2)
    assert r[-1][1:] == (SECURE, "deny", "cloned", "cloned"), rig.console()

    present(rig, MagicCard(bytes.fromhex(SECURE), skimmed))   # counter 2 < 3
    r = wait_rows(rig, 3)
    assert r[-1][1:] == (SECURE, "deny", "card_replay", "card_replay"), rig.console()

    # A plain card on a "uid" site goes on to the rules (Bob has no pass) and is noted.
    present(rig, UidCard(bytes.fromhex(OTHER)))
    r = wait_rows(rig, 4)
    assert r[-1][1:] == (OTHER, "deny", "no_pass", "insecure"), rig.console()
    with sqlite3.connect(rig.db) as c:
        assert c.execute("SELECT sun_counter FROM cards WHERE uid = ?",
                         (SECURE,)).fetchone() == (3,)

    # The link: the genuine tap's SUN field sent again in a new, correctly MACed TAP.
    rig.board.kill()
    dev = SimDevice(rig.device_id, KEY, "gate", SerialTransport(rig.cable.url_a), boot=0x7000)
    try:
        dev.hello()
        d = dev.tap(SECURE, sak=0x20, direction="out", secure=genuine)
    finally:
        dev.transport.close()
    r = wait_rows(rig, 5)
    assert r[-1][1:] == (SECURE, "deny", "card_replay", "card_replay")
    assert d["verdict"] == 0


def test_plain_card_on_a_sun_site_is_refused(rigs, tmp_path):
    rig = rigs(kind="gate")
    policy = tmp_path / "policy.toml"
    policy.write_text('[security]\nmode = "sun"\n')
    rig.daemon.stop()
    rig.daemon.args += ["--policy", str(policy)]
    rig.daemon.start()
    card = Ntag424(bytes.fromhex(SECURE))
    enrol(rig.db, card)
    rig.boot()
    present(rig, UidCard(bytes.fromhex(CARD)))
    r = wait_rows(rig, 1)
    assert r[-1][1:] == (CARD, "deny", "secure_required", "secure_required"), rig.console()
    present(rig, card)
    r = wait_rows(rig, 2)
    assert r[-1][1:] == (SECURE, "grant", "ok", "sun"), rig.console()
