# Runs on CPython (tests, demo): virtual contactless cards placed on the simulated PN532's field.
"""Virtual cards for :mod:`sim.pn532`.

A card is any object with these attributes (duck typing, so a model written elsewhere, such as
an NTAG 424 DNA in ``sim/ntag424.py``, can be placed on the field as is):

- ``uid``  -- NFCID1, 4, 7 or 10 bytes.
- ``sak``  -- SEL_RES, an int (0x08 MIFARE Classic 1K, 0x18 Classic 4K, 0x00 Ultralight/NTAG,
  0x20 ISO-DEP / ISO 14443-4).
- ``atqa`` -- SENS_RES as the PN532 reports it (most significant byte first), either two bytes
  (``b"\\x00\\x04"``) or an int (``0x0004``).
- ``ats``  -- optional; the Answer To Select for ISO-DEP cards. With or without its length
  byte TL: the emulator adds TL when ``ats[0] != len(ats)``.
- ``transceive(apdu: bytes) -> bytes`` -- optional; ISO-DEP cards answer APDUs (the PN532 runs
  the ISO 14443-4 block protocol, the card model only sees APDUs). Returning ``None`` or
  raising means "the card did not answer" (the chip reports status 0x01, timeout).

FeliCa cards (212/424 kbps) have ``idm``, ``pmm`` and ``system_code`` instead.
"""

from __future__ import annotations

from typing import Callable


def _check_uid(uid: bytes) -> bytes:
    uid = bytes(uid)
    if len(uid) not in (4, 7, 10):
        raise ValueError(f"a Type A UID is 4, 7 or 10 bytes, got {len(uid)}")
    return uid


def _check_atqa(atqa) -> bytes:
    if isinstance(atqa, int):
        if not 0 <= atqa <= 0xFFFF:
            raise ValueError(f"ATQA out of range: {atqa:#x}")
        return atqa.to_bytes(2, "big")
    atqa = bytes(atqa)
    if len(atqa) != 2:
        raise ValueError(f"ATQA is 2 bytes, got {len(atqa)}")
    return atqa


class UidCard:
    """A card that only answers anticollision: MIFARE Classic style by default.

    >>> UidCard(bytes.fromhex("DEADBEEF")).sak
    8
    """

    def __init__(self, uid: bytes, sak: int = 0x08, atqa: bytes | int = b"\x00\x04") -> None:
        self.uid = _check_uid(uid)
        if not 0 <= sak <= 0xFF:
            raise ValueError(f"SAK out of range: {sak:#x}")
        self.sak = sak
        self.atqa = _check_atqa(atqa)
        self.ats = b""

    def __repr__(self) -> str:
        return f"UidCard(uid={self.uid.hex().upper()}, sak={self.sak:#04x})"


def _default_apdu_handler(apdu: bytes) -> bytes:
    # ISO 7816-4: "instruction code not supported" for anything we were not told about.
    return b"\x6d\x00"


class IsoDepCard(UidCard):
    """An ISO 14443-4 (ISO-DEP) card; APDUs go to ``apdu_handler``."""

    def __init__(
        self,
        uid: bytes,
        sak: int = 0x20,
        atqa: bytes | int = b"\x03\x44",
        ats: bytes = bytes.fromhex("06 75 77 81 02 80"),
        apdu_handler: Callable[[bytes], bytes] | None = None,
    ) -> None:
        super().__init__(uid, sak, atqa)
        if not sak & 0x20:
            raise ValueError(f"an ISO-DEP card sets SAK bit 6 (0x20), got {sak:#04x}")
        self.ats = bytes(ats)
        self.apdu_handler = apdu_handler or _default_apdu_handler
        self.apdus: list[bytes] = []  # every APDU received, for tests

    def transceive(self, apdu: bytes) -> bytes:
        self.apdus.append(bytes(apdu))
        return self.apdu_handler(bytes(apdu))

    def __repr__(self) -> str:
        return f"IsoDepCard(uid={self.uid.hex().upper()}, sak={self.sak:#04x})"


class FelicaCard:
    """A FeliCa (NFC-F) card answering the polling command at 212/424 kbps."""

    def __init__(self, idm: bytes, pmm: bytes = bytes(8), system_code: int = 0x12FC) -> None:
        if len(idm) != 8 or len(pmm) != 8:
            raise ValueError("FeliCa IDm and PMm are 8 bytes each")
        self.idm = bytes(idm)
        self.pmm = bytes(pmm)
        self.system_code = system_code

    def polling_response(self, request: bytes) -> bytes | None:
        # request = SENSF_REQ without length: 00 SC(2) RC TSN
        if len(request) < 5 or request[0] != 0x00:
            return None
        mine = self.system_code.to_bytes(2, "big")
        if not all(req in (0xFF, have) for req, have in zip(request[1:3], mine)):
            return None
        rsp = b"\x01" + self.idm + self.pmm
        if request[3] == 0x01:
            rsp += mine
        return rsp

    def __repr__(self) -> str:
        return f"FelicaCard(idm={self.idm.hex().upper()})"
