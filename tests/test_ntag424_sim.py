# Runs on CPython (pytest): the virtual NTAG 424 DNA (sim/ntag424.py) and the host EV2 builders against AN12196.
"""Byte-exact exchanges from NXP AN12196 Rev. 1.8 ("NTAG 424 DNA and NTAG 424 DNA TagTamper
features and hints"), replayed against the simulator and the host's command builders.

Quoted examples (all keys factory zero):
* Table 11: ISOSelectFile of the NDEF application by DF name.
* Table 14: AuthenticateEV2First with key 0x00 (RndA 13C5DB8A5930439FC3DEF9A4C675360F,
  RndB B9E2FC789B64BF237CCCAA20EC7E6E48, TI 9D00C4DF, SesAuthENCKey 1309C877..., SesAuthMACKey
  4C6626F5...).
* Table 19: ChangeFileSettings of file 02 enabling SDM, command counter 1.
* Tables 26 and 27: ChangeKey of key 2 (XOR/CRC form) and of key 0 (the authenticated key).
"""

import pytest

from host.secure.personalise import (
    CardRefused,
    Ev2Session,
    authenticate_ev2_first,
    change_key_apdu,
    session_keys,
)
from host.secure.sun import SecureCardError
from sim.ntag424 import Ntag424

h = bytes.fromhex

SELECT_APP = h("00A4040C07D276000085010100")  # AN12196 Table 11
T14_RND_A = h("13C5DB8A5930439FC3DEF9A4C675360F")
T14_RND_B = h("B9E2FC789B64BF237CCCAA20EC7E6E48")
T14_TI = h("9D00C4DF")
T14_PART1_CMD = h("9071000002000000")
T14_PART1_RESP = h("A04C124213C186F22399D33AC2A3021591AF")
T14_PART2_CMD = h("90AF00002035C3E05A752E0144BAC0DE51C1F22C56B34408A23D8AEA266CAB947EA8E0118D00")
T14_PART2_RESP = h("3FA64DB5446D1F34CD6EA311167F5E4985B89690C04A05F17FA7AB2F081206639100")
T14_ENC = h("1309C877509E5A215007FF0ED19CA564")
T14_MAC = h("4C6626F5E72EA694202139295C7A7FC7")
T19_CMD = h("905F0000190261B6D97903566E84C3AE5274467E89EAD799B7C1A0EF7A0400")
T19_SETTINGS = h("4000E0C1F121200000430000430000")
T19_RESP = h("57BFF87B1241E93D9100")


def scripted(*values):
    """A deterministic rng for the card: hands out the given byte strings in order."""
    queue = list(values)

    def rng(n):
        v = queue.pop(0)
        assert len(v) == n
        return v
    return rng


def authenticated_card():
    """A factory card after the AN12196 Table 14 authentication (counter 0)."""
    card = Ntag424(h("04DE5F1EACC040"), rng=scripted(T14_RND_B, T14_TI, bytes(5), bytes(5)))
    assert card.transceive(SELECT_APP) == h("9000")
    assert card.transceive(T14_PART1_CMD) == T14_PART1_RESP
    assert card.transceive(T14_PART2_CMD) == T14_PART2_RESP
    return card


def test_card_identity_matches_datasheet_values():
    card = Ntag424(h("04DE5F1EACC040"))
    assert (card.sak, card.atqa, card.uid) == (0x20, b"\x03\x44", h("04DE5F1EACC040"))
    assert card.ats[0] == len(card.ats)  # TL counts the whole ATS


def test_sim_answers_table14_authentication_exactly():
    authenticated_card()


def test_host_authentication_replays_table14():
    card = Ntag424(h("04DE5F1EACC040"), rng=scripted(T14_RND_B, T14_TI))
    card.transceive(SELECT_APP)
    s = authenticate_ev2_first(card.transceive, 0, bytes(16), rnd_a=T14_RND_A)
    assert (s.enc_key, s.mac_key, s.ti, s.cmd_ctr) == (T14_ENC, T14_MAC, T14_TI, 0)
    assert card.apdu_log[1][0] == T14_PART1_CMD and card.apdu_log[2][0] == T14_PART2_CMD
    assert session_keys(bytes(16), T14_RND_A, T14_RND_B) == (T14_ENC, T14_MAC)


def test_wrong_key_fails_authentication_with_91ae():
    card = Ntag424(h("04DE5F1EACC040"), keys=[h("11" * 16)] + [bytes(16)] * 4)
    card.transceive(SELECT_APP)
    with pytest.raises(CardRefused) as e:
        authenticate_ev2_first(card.transceive, 0, bytes(16))
    assert e.value.sw == 0x91AE


def test_table19_change_file_settings_on_the_sim():
    card = authenticated_card()
    s = Ev2Session(T14_ENC, T14_MAC, T14_TI, 0)
    # One MACed GetFileSettings brings the command counter to 1, as in the example.
    s.check_response(card.transceive(s.mac_command(0xF5, b"\x02")), "GetFileSettings")
    assert s.cmd_ctr == 1
    assert s.full_command(0x5F, b"\x02", T19_SETTINGS) == T19_CMD
    assert card.transceive(T19_CMD) == T19_RESP
    s.check_response(T19_RESP, "ChangeFileSettings")
    assert s.cmd_ctr == 2
    # The settings took: plain GetFileSettings after a reselect shows SDM on file 02.
    card.transceive(SELECT_APP)
    settings = card.transceive(h("90F500000102" "00"))
    assert settings[-2:] == h("9100")
    assert settings[:2] == h("0040") and settings[2:4] == h("00E0")
    assert settings[7:-2] == h("C1F121200000430000430000")


def test_table19_with_one_bit_flipped_is_an_integrity_error():
    card = authenticated_card()
    s = Ev2Session(T14_ENC, T14_MAC, T14_TI, 0)
    s.check_response(card.transceive(s.mac_command(0xF5, b"\x02")), "GetFileSettings")
    bad = bytearray(T19_CMD)
    bad[10] ^= 0x01
    assert card.transceive(bytes(bad)) == h("911E")
    # The session is gone after an integrity error: the genuine command is refused too.
    assert card.transceive(T19_CMD) == h("919D")


def test_response_mac_is_checked_by_the_host():
    s = Ev2Session(T14_ENC, T14_MAC, T14_TI, 1)
    bad = bytearray(T19_RESP)
    bad[0] ^= 0x80
    with pytest.raises(SecureCardError):
        s.check_response(bytes(bad), "ChangeFileSettings")
    with pytest.raises(CardRefused):
        s.check_response(h("919D"), "ChangeFileSettings")


# AN12196 Tables 26 and 27: session TI 7614281A, SesAuthENCKey 4CF3CB41A22583A61E89B158D252FC53,
# SesAuthMACKey 5529860B2FC5FB6154B7F28361D30BF9 (authenticated with key 0).
T26_SESSION = dict(enc_key=h("4CF3CB41A22583A61E89B158D252FC53"),
                   mac_key=h("5529860B2FC5FB6154B7F28361D30BF9"), ti=h("7614281A"))


def test_table26_change_other_key_apdu():
    s = Ev2Session(cmd_ctr=2, key_no=0, **T26_SESSION)
    apdu = change_key_apdu(s, 2, h("F3847D627727ED3BC9C4CC050489B966"), 1, old_key=bytes(16))
    assert apdu == h("90C4000029022CF362B7BF4311FF3BE1DAA295E8C68DE09050560D19B9E16C2393AE9CD1FAC7"
                     "5D0CE20BCD1D06E600")


def test_table27_change_authenticated_key_apdu():
    s = Ev2Session(cmd_ctr=3, key_no=0, **T26_SESSION)
    apdu = change_key_apdu(s, 0, h("5004BF991F408672B1EF00F08F9E8647"), 1)
    assert apdu == h("90C400002900C0EB4DEEFEDDF0B513A03A95A75491818580503190D4D05053FF75668A01D6FD"
                     "A6610234BDED643200")


def test_change_other_key_needs_old_key():
    s = Ev2Session(cmd_ctr=2, key_no=0, **T26_SESSION)
    with pytest.raises(SecureCardError):
        change_key_apdu(s, 2, bytes(16), 1)


def test_change_key_round_trip_on_the_sim():
    card = Ntag424(h("04DE5F1EACC040"))
    card.transceive(SELECT_APP)
    s = authenticate_ev2_first(card.transceive, 0, bytes(16))
    new2 = h("F3847D627727ED3BC9C4CC050489B966")
    s.check_response(card.transceive(change_key_apdu(s, 2, new2, 7, old_key=bytes(16))), "CK")
    assert card.keys[2] == new2 and card.key_versions[2] == 7
    # Wrong old key: the card's CRC over the recovered key fails -> integrity error.
    wrong = change_key_apdu(s, 3, h("22" * 16), 1, old_key=h("33" * 16))
    assert card.transceive(wrong) == h("911E")
    assert card.keys[3] == bytes(16)
    # The session ended: authenticate again, then change key 0 itself (bare 9100 answer).
    card.transceive(SELECT_APP)
    s = authenticate_ev2_first(card.transceive, 0, bytes(16))
    assert card.transceive(change_key_apdu(s, 0, h("44" * 16), 1)) == h("9100")
    card.transceive(SELECT_APP)
    with pytest.raises(CardRefused):
        authenticate_ev2_first(card.transceive, 0, bytes(16))
    card.transceive(SELECT_APP)
    assert authenticate_ev2_first(card.transceive, 0, h("44" * 16)).cmd_ctr == 0


def test_change_key_needs_key0_session():
    card = Ntag424(h("04DE5F1EACC040"))
    card.transceive(SELECT_APP)
    s = authenticate_ev2_first(card.transceive, 2, bytes(16))
    assert card.transceive(change_key_apdu(s, 3, h("22" * 16), 1, old_key=bytes(16))) == h("919D")


def test_get_card_uid_full_mode():
    card = Ntag424(h("04DE5F1EACC040"))
    card.transceive(SELECT_APP)
    s = authenticate_ev2_first(card.transceive, 0, bytes(16))
    resp = card.transceive(s.full_command(0x51, b"", b""))
    assert s.check_response(resp, "GetCardUID", encrypted=True) == h("04DE5F1EACC040")


def test_iso_errors():
    card = Ntag424(h("04DE5F1EACC040"))
    assert card.transceive(h("00A4040C07D276000085010200")) == h("6A82")  # unknown DF name
    assert card.transceive(h("00B0000002")) == h("6A82")                 # no file selected
    assert card.transceive(h("80A4040C00")) == h("6E00")                  # unknown class
    card.transceive(SELECT_APP)
    assert card.transceive(h("00A4000C02E107")) == h("6A82")             # unknown file
    assert card.transceive(h("00A4000C02E103")) == h("9000")
    cc = card.transceive(h("00B000000F"))
    assert cc[-2:] == h("9000") and cc[:2] == h("0017") and cc[9:11] == h("E104")
    assert card.transceive(h("00B0010002")) == h("6B00")                  # beyond the file
    assert card.transceive(h("90FF000000")) == h("911C")                  # unknown command


def test_plain_read_and_write_data_on_the_ndef_file():
    card = Ntag424(h("04DE5F1EACC040"))
    card.transceive(SELECT_APP)
    assert card.transceive(h("908D00000B02000000040000DEADBEEF00")) == h("9100")
    assert card.transceive(h("90AD0000070200000004000000")) == h("DEADBEEF9100")
    assert card.transceive(h("90AD0000070200FF0002000000")) == h("91BE")  # past the end


def _configure(card, settings):
    """Authenticate with the factory key 0 and send ChangeFileSettings for file 02."""
    card.transceive(SELECT_APP)
    s = authenticate_ev2_first(card.transceive, 0, bytes(16))
    return card.transceive(s.full_command(0x5F, b"\x02", settings))


def _read_file(card, n):
    card.transceive(SELECT_APP)
    card.transceive(h("00A4000C02E104"))
    resp = card.transceive(h("00B00000") + bytes((n,)))
    assert resp[-2:] == h("9000")
    return resp[:-2]


def test_sdm_mac_over_a_non_empty_input():
    from host.secure.sun import decrypt_picc_data, sdm_mac
    card = Ntag424(h("04DE5F1EACC040"), keys=[bytes(16), h("11" * 16), h("22" * 16),
                                               bytes(16), bytes(16)])
    template = b"\x00\x00" + b"p=" + b"0" * 32 + b"&c=" + b"0" * 16
    card.files[2].data[:len(template)] = template
    # PICCData at 4, MAC input from 4 (the p= value and "&c=") up to the MAC at 39.
    resp = _configure(card, h("4000E0C1FF21") + h("040000") + h("040000") + h("270000"))
    assert resp[-2:] == h("9100")
    image = _read_file(card, 55)
    picc, mac = bytes.fromhex(image[4:36].decode()), bytes.fromhex(image[39:55].decode())
    uid, ctr = decrypt_picc_data(h("22" * 16), picc)
    assert (uid, ctr) == (h("04DE5F1EACC040"), 1)
    assert mac == sdm_mac(h("11" * 16), uid, ctr, image[4:39])
    assert mac != sdm_mac(h("11" * 16), uid, ctr, b"")


def test_sdm_plain_mirror_of_uid_and_counter():
    card = Ntag424(h("04DE5F1EACC040"), counter=0x3C)
    # SDMMetaRead E: plain UID at 2, counter at 16; no MAC (SDMFileRead F).
    assert _configure(card, h("4000E0C1FFEF") + h("020000") + h("100000"))[-2:] == h("9100")
    image = _read_file(card, 22)
    assert image[2:16] == b"04DE5F1EACC040" and image[16:22] == b"00003D"


@pytest.mark.parametrize("settings", [
    h("4000E0C1FF21") + h("F00000") + h("F00000") + h("F00000"),  # mirrors past the file end
    h("4000E0C1FF21") + h("040000") + h("300000") + h("100000"),  # MAC input after the MAC
    h("4000E0C1FF21") + h("040000") + h("100000") + h("100000"),  # PICCData overlaps the MAC
    h("4000E0C0FF21") + h("040000") + h("270000") + h("270000"),  # binary encoding
])
def test_inconsistent_sdm_settings_are_a_parameter_error(settings):
    assert _configure(Ntag424(h("04DE5F1EACC040")), settings) == h("919E")
