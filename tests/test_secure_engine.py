# Runs on CPython (pytest): secure cards in the engine — SUN verified in the tap transaction, every deny reason, site keys.
"""Engine-level tests of host/secure/check.py: a virtual NTAG 424 DNA (sim/ntag424.py) is
personalised with the site key from the store (host/secure/enroll.py, card transceive
directly, no reader), then read as a reader would to get the TAP secure field."""

import os
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from host.secure import check as secure_policy
from host.admin import Admin
from host.rules.engine import Engine, Tap
from host.errors import Conflict, InputError, NotFound
from host.secure.personalise import ndef_url, read_ndef
from host.rules.policy import build_policy, load_policy
from host.secure.sun import parse_sun
from host.secure.enroll import EnrollError, enroll_secure, read_sun_field
from host.store.db import open_db
from host.store.devices import register_device
from sim.magic import MagicCard
from sim.ntag424 import Ntag424

TZ = ZoneInfo("Asia/Shanghai")
UID = "04A1B2C3D4E5F6"
OTHER = "04A1B2C3D4E5F7"
PLAIN = "DEADBEEF"


def clock():
    return datetime(2026, 3, 10, 12, 0, tzinfo=TZ)


def direct(card):
    """connect() for enroll_secure that hands over the virtual card itself (no reader)."""
    import contextlib

    @contextlib.contextmanager
    def connect(uid):
        assert uid == card.uid.hex().upper()
        yield card.transceive
    return connect


def read_field(card):
    """What the firmware sends: the binary SUN field of one read of the NDEF file."""
    return parse_sun(ndef_url(read_ndef(card.transceive))).to_field()


def make_site(mode="uid"):
    db = open_db(None)
    raw = load_policy().raw
    pol = build_policy({**raw, "security": {"mode": mode}})
    admin, engine = Admin(db, pol, clock), Engine(db, pol, clock)
    secure_policy.ensure_site_key(db, 0)
    register_device(db, "K1", "kiosk")
    mid = admin.add_member("Li", consent_terms="t1")["member_id"]
    admin.topup(mid, 10000)
    return db, admin, engine, mid


@pytest.fixture
def site():
    db, admin, engine, mid = make_site()
    card = Ntag424(bytes.fromhex(UID))
    enroll_secure(admin, mid, UID, direct(card))
    return db, admin, engine, mid, card


def tap(seq, uid=UID, secure=b"", amount=100, offline=False):
    return Tap("K1", seq, uid, sak=0x20, amount_fen=amount, secure=secure, offline=offline)


def counter(db, uid=UID):
    return db.execute("SELECT sun_counter FROM cards WHERE uid = ?", (uid,)).fetchone()[0]


def note(db, seq):
    return db.execute("SELECT security FROM taps WHERE device_id = 'K1' AND seq = ?",
                      (seq,)).fetchone()[0]


def test_enrolment_records_secure_card_with_the_personalisation_counter(site):
    db, admin, engine, mid, card = site
    row = db.execute("SELECT member_id, secure, key_version, sun_counter FROM cards "
                     "WHERE uid = ?", (UID,)).fetchone()
    assert row == (mid, 1, 1, card.counter) and card.counter == 1
    assert card.keys[0] != bytes(16)  # the card is no longer blank


def test_fresh_sun_message_is_granted_and_its_counter_stored(site):
    db, admin, engine, mid, card = site
    d = engine.decide(tap(1, secure=read_field(card)))
    assert (d.verdict, d.reason) == ("grant", "ok")
    assert counter(db) == card.counter == 2
    assert note(db, 1) == "sun"


def test_replayed_sun_message_is_card_replay_and_charges_nothing(site):
    db, admin, engine, mid, card = site
    field = read_field(card)
    assert engine.decide(tap(1, secure=field)).verdict == "grant"
    bal = db.execute("SELECT principal_fen FROM members WHERE id = ?", (mid,)).fetchone()[0]
    d = engine.decide(tap(2, secure=field))
    assert (d.verdict, d.reason, d.member_id) == ("deny", "card_replay", mid)
    assert db.execute("SELECT principal_fen FROM members WHERE id = ?", (mid,)).fetchone()[0] == bal
    assert note(db, 2) == "card_replay"


def test_counter_going_backwards_is_card_replay(site):
    db, admin, engine, mid, card = site
    older, newer = read_field(card), read_field(card)
    assert engine.decide(tap(1, secure=newer)).reason == "ok"
    d = engine.decide(tap(2, secure=older))  # never presented, but older than the last one
    assert (d.verdict, d.reason) == ("deny", "card_replay")
    assert counter(db) == 3


def test_retransmitted_tap_returns_the_stored_decision_without_verifying_again(site):
    db, admin, engine, mid, card = site
    field = read_field(card)
    first = engine.decide(tap(5, secure=field), lambda d: b"R" + d.reason.encode())
    again = engine.decide(tap(5, secure=field), lambda d: b"other")
    assert (again.reason, again.replayed, again.reply) == ("ok", True, b"Rok")
    assert first.reason == "ok"
    assert db.execute("SELECT count(*) FROM taps").fetchone()[0] == 1


def test_uid_clone_without_keys_is_cloned(site):
    db, admin, engine, mid, card = site
    forged = bytes((1,)) + os.urandom(24)
    d = engine.decide(tap(1, secure=forged))
    assert (d.verdict, d.reason) == ("deny", "cloned")
    # A magic card with the UID and a made-up SUN URL in its NDEF file: same answer.
    url = ("https://t.tapkiosk.example/t?p=" + os.urandom(16).hex() + "&c="
           + os.urandom(8).hex()).encode()
    rec = b"\xD1\x01" + bytes((len(url) - 8 + 1,)) + b"U\x04" + url[8:]
    magic = MagicCard(bytes.fromhex(UID), len(rec).to_bytes(2, "big") + rec)
    d = engine.decide(tap(2, secure=read_field(magic)))
    assert d.reason == "cloned"
    assert counter(db) == 1


def test_message_of_another_genuine_card_is_cloned(site):
    db, admin, engine, mid, card = site
    other = Ntag424(bytes.fromhex(OTHER))
    enroll_secure(admin, mid, OTHER, direct(other))
    d = engine.decide(tap(1, uid=UID, secure=read_field(other)))
    assert d.reason == "cloned"


def test_secure_card_without_sun_data_is_secure_required(site):
    db, admin, engine, mid, card = site
    d = engine.decide(tap(1))
    assert (d.verdict, d.reason) == ("deny", "secure_required")


def test_counter_is_used_up_even_when_the_tap_is_refused_for_money(site):
    db, admin, engine, mid, card = site
    field = read_field(card)
    d = engine.decide(tap(1, secure=field, amount=20000))
    assert d.reason == "insufficient_balance"
    assert counter(db) == 2
    assert engine.decide(tap(2, secure=field)).reason == "card_replay"


def test_offline_tap_is_never_refused_but_the_failure_is_noted(site):
    db, admin, engine, mid, card = site
    d = engine.decide(tap(1, secure=b"", offline=True))
    assert (d.verdict, d.reason) == ("grant", "offline")
    assert note(db, 1) == "secure_required"
    d = engine.decide(tap(2, secure=read_field(card), offline=True))
    assert note(db, 2) == "sun" and counter(db) == 2


def test_plain_card_on_uid_site_is_accepted_and_noted_insecure(site, caplog):
    db, admin, engine, mid, card = site
    admin.enroll_card(mid, PLAIN)
    with caplog.at_level("INFO", logger="tapkiosk.secure"):
        d = engine.decide(tap(1, uid=PLAIN))
    assert (d.verdict, d.reason) == ("grant", "ok")
    assert note(db, 1) == "insecure"
    # The line names the card by a hash: the UID is the credential a clone needs.
    assert "insecure" in caplog.text and secure_policy.card_ref(PLAIN) in caplog.text
    assert PLAIN not in caplog.text


def test_plain_card_on_sun_site_is_secure_required():
    db, admin, engine, mid = make_site("sun")
    admin.enroll_card(mid, PLAIN)
    d = engine.decide(tap(1, uid=PLAIN))
    assert (d.verdict, d.reason, d.member_id) == ("deny", "secure_required", mid)
    card = Ntag424(bytes.fromhex(UID))
    enroll_secure(admin, mid, UID, direct(card))
    assert engine.decide(tap(2, secure=read_field(card))).reason == "ok"


def test_unknown_card_is_still_unknown_card():
    db, admin, engine, mid = make_site("sun")
    assert engine.decide(tap(1, uid=OTHER, secure=b"\x01" + bytes(24))).reason == "unknown_card"


def test_security_mode_is_validated():
    with pytest.raises(InputError, match="security.mode"):
        build_policy({**load_policy().raw, "security": {"mode": "strict"}})


# ------------------------------------------------------------------ enrolment rules
def test_enrolling_again_is_a_no_op_without_touching_the_card(site):
    db, admin, engine, mid, card = site
    before = len(card.apdu_log)
    r = enroll_secure(admin, mid, UID, direct(card))
    assert r["unchanged"] is True and r["sun_counter"] == 1
    assert len(card.apdu_log) == before


def test_card_that_is_not_blank_is_refused_and_nothing_written():
    db, admin, engine, mid = make_site()
    card = Ntag424(bytes.fromhex(UID), keys=[os.urandom(16) for _ in range(5)])
    with pytest.raises(EnrollError, match="not blank"):
        enroll_secure(admin, mid, UID, direct(card))
    assert db.execute("SELECT count(*) FROM cards WHERE uid = ?", (UID,)).fetchone()[0] == 0
    assert EnrollError.exit_code == 2


def test_card_keyed_by_this_site_but_not_recorded_is_adopted():
    db, admin, engine, mid = make_site()
    card = Ntag424(bytes.fromhex(UID))
    enroll_secure(admin, mid, UID, direct(card))
    db2, admin2 = db, admin
    db2.execute("PRAGMA foreign_keys = OFF")  # simulate the lost store write
    db2.conn.execute("DELETE FROM cards WHERE uid = ?", (UID,))
    db2.execute("PRAGMA foreign_keys = ON")
    r = enroll_secure(admin2, mid, UID, direct(card))
    assert r["secure"] and r["sun_counter"] == card.counter == 2


def test_enrol_refusals():
    db, admin, engine, mid = make_site()
    card = Ntag424(bytes.fromhex(UID))
    with pytest.raises(NotFound, match="unknown member 99"):
        enroll_secure(admin, 99, UID, direct(card))
    with pytest.raises(InputError, match="7-byte"):
        enroll_secure(admin, mid, PLAIN, direct(card))
    other = admin.add_member("Wang", consent_terms="t1")["member_id"]
    admin.enroll_card(other, UID)
    with pytest.raises(Conflict, match="already enrolled"):
        enroll_secure(admin, mid, UID, direct(card))
    assert card.apdu_log == []


def test_plain_card_of_the_same_member_is_upgraded():
    db, admin, engine, mid = make_site()
    admin.enroll_card(mid, UID)
    card = Ntag424(bytes.fromhex(UID))
    enroll_secure(admin, mid, UID, direct(card))
    assert db.execute("SELECT secure FROM cards WHERE uid = ?", (UID,)).fetchone()[0] == 1


# ------------------------------------------------------------------ site keys
def test_site_key_is_created_once_rotated_and_append_only():
    db = open_db(None)
    with pytest.raises(NotFound):
        secure_policy.site_key_info(db)
    a = secure_policy.ensure_site_key(db, 0)
    b = secure_policy.ensure_site_key(db, 0)
    assert (a["created"], b["created"], a["version"], b["fingerprint"]) == (
        True, False, 1, a["fingerprint"])
    r = secure_policy.rotate_site_key(db, 0)
    assert r["version"] == 2 and r["versions"] == [1, 2] and r["fingerprint"] != a["fingerprint"]
    assert "key" not in r
    with pytest.raises(Exception, match="append-only"):
        db.conn.execute("UPDATE site_keys SET key = zeroblob(16)")
    with pytest.raises(Exception, match="append-only"):
        db.conn.execute("DELETE FROM site_keys")


def test_cards_keep_their_key_version_after_rotation(site):
    db, admin, engine, mid, card = site
    secure_policy.rotate_site_key(db, 0)
    assert engine.decide(tap(1, secure=read_field(card))).reason == "ok"
    new = Ntag424(bytes.fromhex(OTHER))
    assert enroll_secure(admin, mid, OTHER, direct(new))["key_version"] == 2
    assert engine.decide(tap(2, uid=OTHER, secure=read_field(new))).reason == "ok"


def test_read_sun_field_for_host_attached_readers(site):
    db, admin, engine, mid, card = site
    assert engine.decide(tap(1, secure=read_sun_field(card.transceive))).reason == "ok"
    assert read_sun_field(MagicCard(bytes.fromhex(UID)).transceive) == b""
    assert read_sun_field(lambda apdu: b"\x6A\x82") == b""
