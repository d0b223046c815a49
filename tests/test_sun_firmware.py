# Runs on CPython (pytest): firmware/sun.py read_sun against virtual cards (chip.exchange = the card's APDU transceive), and under MicroPython.
"""read_sun is the Reader's secure_hook; ``chip.exchange`` is the PN532's InDataExchange,
replaced here by the virtual card's own APDU handler (the hardware boundary). The end-to-end
path through the real PN532 driver and the emulator is tests/test_secure_e2e.py."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "firmware"))

import sun  # noqa: E402  firmware/sun.py

from conftest import ROOT, micropython_path, run_micropython  # noqa: E402
from host.secure.personalise import ndef_template  # noqa: E402
from host.secure.sun import SunVerifier, site_card_keys  # noqa: E402
from sim.cards import IsoDepCard  # noqa: E402
from sim.magic import MagicCard  # noqa: E402
from sim.ntag424 import Ntag424  # noqa: E402

UID = "04A1B2C3D4E5F6"
MASTER = bytes(range(16))


class Chip:
    """chip.exchange carried straight to a virtual card; records the APDUs."""

    def __init__(self, card):
        self.card = card
        self.apdus = []

    async def exchange(self, data, timeout_ms=500):
        self.apdus.append(bytes(data))
        return self.card.transceive(bytes(data))


def read(card):
    chip = Chip(card)
    r = asyncio.run(sun.read_sun(chip, bytes.fromhex(UID), 0x20, b""))
    return (None if r is None else bytes(r)), chip


def personalised():
    from host.secure.personalise import personalise
    card = Ntag424(bytes.fromhex(UID))
    personalise(card.transceive, card.uid, MASTER)
    return card


def test_sun_field_of_a_personalised_card_verifies_on_the_host():
    card = personalised()
    field, chip = read(card)
    assert len(field) == 25 and field[0] == 0x01
    r = SunVerifier().verify(UID, field, site_card_keys(MASTER, card.uid), 1)
    assert (r.ok, r.counter) == (True, 2)
    assert chip.apdus[0] == bytes.fromhex("00A4040C07D276000085010100")
    assert chip.apdus[1] == bytes.fromhex("00A4000C02E104")


def test_cards_without_the_application_or_the_mirror_give_none():
    assert read(IsoDepCard(bytes.fromhex(UID)))[0] is None           # 6D00 to everything
    not_ndef = IsoDepCard(bytes.fromhex(UID), apdu_handler=lambda a: b"\x6A\x82")
    field, chip = read(not_ndef)
    assert field is None and len(chip.apdus) == 1                    # stops at 6A82
    assert read(MagicCard(bytes.fromhex(UID)))[0] is None            # empty NDEF file
    image, p, c = ndef_template()
    bad = bytearray(image)
    bad[p:p + 2] = b"zz"
    assert read(MagicCard(bytes.fromhex(UID), bytes(bad)))[0] is None  # not hex


def test_long_ndef_file_is_read_in_chunks_that_fit_a_pn532_frame():
    pad = "x" * 150
    url = "https://t.tapkiosk.example/" + pad + "?p=" + "A1" * 16 + "&c=" + "b2" * 8
    image, _, _ = ndef_template(url.replace("A1" * 16, "0" * 32).replace("b2" * 8, "0" * 16))
    image = image.replace(b"0" * 32, b"A1" * 16).replace(b"0" * 16, b"b2" * 8)
    field, chip = read(MagicCard(bytes.fromhex(UID), image))
    assert field == b"\x01" + b"\xA1" * 16 + b"\xB2" * 8
    reads = [a for a in chip.apdus if a[1] == 0xB0]
    assert len(reads) >= 3 and all(a[4] <= 128 for a in reads)
    assert sum(a[4] for a in reads) == len(image)


def test_a_tap_parameter_does_not_pass_for_p():
    url = "https://t.tapkiosk.example/t?tap=" + "0" * 32 + "&p=" + "0" * 32 + "&c=" + "0" * 16
    image = bytearray(ndef_template(url)[0])
    p = image.find(b"&p=") + 3
    image[p:p + 32] = b"11" * 16
    field, _ = read(MagicCard(bytes.fromhex(UID), bytes(image)))
    assert field[1:17] == b"\x11" * 16


@pytest.mark.micropython
@pytest.mark.skipif(micropython_path() is None, reason="needs the MicroPython unix port")
def test_read_sun_under_micropython(tmp_path):
    card = personalised()
    # The card's answers to that read, replayed to the MicroPython process as the chip's.
    field, chip = read(card)
    answers = [rsp for _apdu, rsp in card.apdu_log[-len(chip.apdus):]]
    out = run_micropython([str(ROOT / "tests" / "mpy" / "sun_replay.py"),
                           ",".join(bytes(a).hex() for a in answers)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr.decode()
    assert bytes.fromhex(out.stdout.decode().strip()) == field
    assert SunVerifier().verify(UID, field, site_card_keys(MASTER, card.uid), 1).ok
