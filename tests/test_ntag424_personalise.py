# Runs on CPython (pytest): personalise() end to end against the virtual NTAG 424 DNA; clones and replays refused.
"""A blank virtual card is personalised by the host code, then read like a reader does on a
tap; the SUN data must satisfy SunVerifier with the diversified keys, and only then."""

import pytest

from host.secure.personalise import (
    URL_TEMPLATE,
    CardRefused,
    authenticate_ev2_first,
    ndef_template,
    ndef_url,
    personalise,
    read_ndef,
)
from host.secure.sun import SecureCardError, SunVerifier, parse_sun, site_card_keys
from sim.magic import MagicCard
from sim.ntag424 import Ntag424

h = bytes.fromhex
UID = h("04A1B2C3D4E5F6")
UID_HEX = "04A1B2C3D4E5F6"
MASTER = h("0F1E2D3C4B5A69788796A5B4C3D2E1F0")
SELECT_APP = h("00A4040C07D276000085010100")


@pytest.fixture
def card():
    """A personalised virtual card and the result personalise() returned."""
    c = Ntag424(UID)
    return c, personalise(c.transceive, UID, MASTER)


def tap(c):
    """One tap: what the reader reads from the card, as the TAP frame's binary secure field."""
    return parse_sun(ndef_url(read_ndef(c.transceive))).to_field()


def test_personalise_writes_diversified_keys_and_sdm(card):
    c, result = card
    keys = site_card_keys(MASTER, UID, 1)
    assert c.keys == keys.by_number()
    assert c.key_versions == [1] * 5
    assert result.uid == UID_HEX and result.key_version == 1 and result.url == URL_TEMPLATE
    assert result.counter == c.counter == 1
    image, p, m = ndef_template(URL_TEMPLATE)
    assert (result.picc_offset, result.mac_offset) == (p, m)
    assert image[p - 2:p] == b"p=" and image[m - 2:m] == b"c="
    # NDEF file is now read-only without key 0: a plain ISOUpdateBinary is refused.
    c.transceive(SELECT_APP)
    c.transceive(h("00A4000C02E104"))
    assert c.transceive(h("00D6000002AAAA")) == h("6982")


def test_each_tap_verifies_and_the_counter_increments(card):
    c, result = card
    keys = site_card_keys(MASTER, UID, 1)
    verifier = SunVerifier()
    last = result.counter
    for expected in (2, 3, 4):
        r = verifier.verify(UID_HEX, tap(c), keys, last)
        assert (r.ok, r.reason, r.uid, r.counter) == (True, "ok", UID_HEX, expected)
        last = r.counter


def test_url_form_verifies_too(card):
    c, result = card
    url = ndef_url(read_ndef(c.transceive))
    assert url.startswith("https://t.tapkiosk.example/t?p=") and "&c=" in url
    r = SunVerifier().verify(UID_HEX, url, site_card_keys(MASTER, UID), result.counter)
    assert r.ok and r.counter == result.counter + 1


def test_chunked_reads_within_one_selection_see_one_counter(card):
    c, _ = card
    c.transceive(SELECT_APP)
    c.transceive(h("00A4000C02E104"))
    first = c.transceive(h("00B0000010"))
    again = c.transceive(h("00B0000010"))
    assert first == again and c.counter == 2


def test_replayed_tap_is_card_replay(card):
    c, result = card
    keys = site_card_keys(MASTER, UID)
    field = tap(c)
    v = SunVerifier()
    ok = v.verify(UID_HEX, field, keys, result.counter)
    assert ok.ok
    again = v.verify(UID_HEX, field, keys, ok.counter)
    assert (again.ok, again.reason, again.counter) == (False, "card_replay", ok.counter)
    older = tap(c)
    newer = tap(c)
    assert v.verify(UID_HEX, newer, keys, ok.counter).ok
    # A message older than the last accepted one (counter going backwards) is refused.
    assert v.verify(UID_HEX, older, keys, ok.counter + 2).reason == "card_replay"


def test_magic_card_with_the_same_uid_is_cloned(card):
    c, result = card
    keys = site_card_keys(MASTER, UID)
    # A clone carrying the unpersonalised template (zeros in p= and c=).
    blank = MagicCard(UID, ndef_template()[0])
    r = SunVerifier().verify(UID_HEX, tap(blank), keys, result.counter)
    assert (r.ok, r.reason) == (False, "cloned")
    # A clone carrying another genuine card's recorded SUN message.
    other_uid = h("04A1B2C3D4E5F7")
    other = Ntag424(other_uid)
    personalise(other.transceive, other_uid, MASTER)
    copied = MagicCard(UID, read_ndef(other.transceive))
    r = SunVerifier().verify(UID_HEX, tap(copied), keys, result.counter)
    assert (r.ok, r.reason) == (False, "cloned")
    # A clone replaying this card's own message, already seen by the host.
    recorded = read_ndef(c.transceive)
    seen = SunVerifier().verify(UID_HEX, parse_sun(ndef_url(recorded)).to_field(), keys,
                                result.counter)
    assert seen.ok
    replay = MagicCard(UID, recorded)
    assert SunVerifier().verify(UID_HEX, tap(replay), keys, seen.counter).reason == "card_replay"
    # And the clone cannot be personalised or authenticated.
    replay.transceive(SELECT_APP)
    with pytest.raises(CardRefused):
        authenticate_ev2_first(replay.transceive, 0, bytes(16))


def test_keys_of_another_site_are_refused(card):
    c, result = card
    other_site = site_card_keys(h("00" * 15 + "01"), UID)
    r = SunVerifier().verify(UID_HEX, tap(c), other_site, result.counter)
    assert (r.ok, r.reason) == (False, "cloned")


def test_personalising_a_personalised_card_fails_clearly(card):
    c, _ = card
    keys_before = list(c.keys)
    ndef_before = bytes(c.files[2].data)
    with pytest.raises(SecureCardError, match="not blank"):
        personalise(c.transceive, UID, MASTER)
    assert c.keys == keys_before and bytes(c.files[2].data) == ndef_before


def test_personalise_refuses_a_url_without_placeholders():
    with pytest.raises(SecureCardError):
        personalise(Ntag424(UID).transceive, UID, MASTER, url="https://t.tapkiosk.example/t")


def test_verifier_keys_for_derives_the_same_keys():
    v = SunVerifier(MASTER)
    assert v.keys_for(UID_HEX) == site_card_keys(MASTER, UID)
    with pytest.raises(SecureCardError):
        SunVerifier().keys_for(UID_HEX)


def test_personalise_and_verify_through_the_pn532_emulator():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pn532_frames import ACK, CMD  # noqa: E402  the PN532 frame builders

    from sim.pn532 import PN532Emulator

    emu = PN532Emulator()
    emu.feed(b"\x55")
    emu.place(Ntag424(UID))

    def command(hexdata):
        emu.feed(CMD(hexdata))
        out = b""
        while (f := emu.read_frame()) is not None:
            out += f
        assert out.startswith(ACK())
        frame = out[len(ACK()):]
        n = frame[3]  # normal information frame: 00 00 FF LEN LCS TFI PD0.. DCS 00
        return frame[5:5 + n][1:]  # drop TFI D5

    try:
        listed = command("4A0100")
        assert listed[:2] == h("4B01") and UID in listed
        assert listed.endswith(Ntag424.ats)

        def transceive(apdu):
            rsp = command("4001" + apdu.hex())
            assert rsp[:2] == h("4100"), rsp.hex()
            return rsp[2:]

        result = personalise(transceive, UID, MASTER)
        r = SunVerifier().verify(UID_HEX, ndef_url(read_ndef(transceive)),
                                 site_card_keys(MASTER, UID), result.counter)
        assert r.ok and r.counter == result.counter + 1
    finally:
        emu.close()
