# Runs on CPython (pytest): sim/isodep.py — the card side of ISO 14443-4 blocks, alone and under nfcpy through the PN532 emulator.
"""Block-level checks follow ISO/IEC 14443-4 (RATS/ATS, I-block chaining acknowledged by
R(ACK), R(NAK) -> last block again, S(DESELECT)); the nfcpy test is the acceptance one:
nfcpy's own Type 4A activation and ISO-DEP initiator work through the emulator."""

import pytest

from sim.cards import IsoDepCard
from sim.isodep import IsoDepPicc
from sim.ntag424 import Ntag424

h = bytes.fromhex


def echo_card(rsp_len=0):
    """An ISO-DEP card that answers every APDU with rsp_len bytes (or the APDU) + 9000."""
    def handler(apdu):
        body = bytes(i & 0xFF for i in range(rsp_len)) if rsp_len else apdu
        return body + b"\x90\x00"
    return IsoDepCard(h("04010203040506"), apdu_handler=handler)


def test_rats_gives_the_ats_and_only_then_blocks_are_answered():
    card = echo_card()
    picc = IsoDepPicc(card)
    assert picc.transceive_raw(h("0200A4")) is None           # not active yet: silence
    assert picc.transceive_raw(h("E080")) == card.ats
    assert picc.transceive_raw(h("0200A40400")) == h("0200A404009000")
    assert picc.transceive_raw(h("0300B0")) == h("0300B09000")


def test_command_chaining_is_acknowledged_then_answered_once():
    card = echo_card()
    picc = IsoDepPicc(card, active=True)
    assert picc.transceive_raw(h("12") + b"\x00\xD6\x00\x00") == h("A2")
    assert picc.transceive_raw(h("13") + b"\x05ABCDE") == h("A3")
    assert picc.transceive_raw(h("02") + b"FG") == h("02") + b"\x00\xD6\x00\x00\x05ABCDEFG\x90\x00"
    assert card.apdus == [b"\x00\xD6\x00\x00\x05ABCDEFG"]


def test_response_chaining_follows_the_readers_frame_size():
    card = echo_card(rsp_len=60)
    picc = IsoDepPicc(card)
    picc.transceive_raw(h("E020"))                             # FSDI 2: FSD 32
    first = picc.transceive_raw(h("0200B00000"))
    assert first[0] == 0x12 and len(first) == 32 - 2           # PCB + 29 bytes (+ CRC)
    assert picc.transceive_raw(h("B2")) == first               # R(NAK): the same block again
    second = picc.transceive_raw(h("A3"))                      # R(ACK), next block number
    third = picc.transceive_raw(h("A2"))
    assert second[0] == 0x13 and third[0] == 0x02
    assert first[1:] + second[1:] + third[1:] == bytes(range(60)) + b"\x90\x00"


def test_deselect_halts_the_card():
    picc = IsoDepPicc(echo_card(), active=True)
    assert picc.transceive_raw(h("C2")) == h("C2")
    assert picc.transceive_raw(h("0200A4")) is None


def test_nfcpy_activates_and_chains_through_the_emulator():
    pytest.importorskip("nfc")
    import nfc.clf
    import nfc.clf.pn532
    import nfc.clf.transport
    import nfc.tag.tt4

    from sim.pn532 import PN532Emulator
    emu = PN532Emulator()
    path = emu.serve_pty()
    device = nfc.clf.pn532.init(nfc.clf.transport.TTY(path))
    device._path = path
    clf = nfc.ContactlessFrontend()
    clf.device = device
    try:
        card = Ntag424(h("04A1B2C3D4E5F6"))
        emu.place(card)
        tag = nfc.tag.activate(clf, clf.sense(nfc.clf.RemoteTarget("106A")))
        assert isinstance(tag, nfc.tag.tt4.Type4ATag)
        assert tag.transceive(h("00A4040C07D276000085010100")) == h("9000")
        assert tag.transceive(h("00A4000C02E104")) == h("9000")
        data = bytes(range(200))                               # > FSC 128: chained I-blocks
        assert tag.transceive(h("00D60000C8") + data) == h("9000")
        assert tag.transceive(h("00B00000C8")) == data + h("9000")
        assert card.apdu_log[2][0] == h("00D60000C8") + data  # the card got it whole
    finally:
        clf.close()
        emu.close()
