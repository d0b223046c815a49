# Runs on CPython (sim): a "magic" clone card — copies an NTAG 424 DNA's UID and NDEF bytes, holds none of its keys.
"""Virtual magic (UID-changeable) card posing as an NTAG 424 DNA.

It answers anticollision with the cloned UID, SAK and ATQA, selects the NDEF application
and files, and serves a static NDEF file image (for instance one recorded from a genuine
card with a phone): its SUN data never changes and it cannot authenticate (it answers part 1
of AuthenticateEV2First with random bytes and part 2 with 91AE). Same duck type as
``sim.ntag424.Ntag424``: ``.uid``, ``.sak``, ``.atqa``, ``.ats``, ``.transceive(apdu)``.
"""

from __future__ import annotations

import os

from sim.ntag424 import CC_FILE_DEFAULT, NDEF_AID, SW

__all__ = ["MagicCard"]


class MagicCard:
    """A writable clone with a fixed UID and a static NDEF file ``ndef`` (NLEN included)."""

    sak = 0x20
    atqa = b"\x03\x44"
    ats = bytes.fromhex("067777710280")

    def __init__(self, uid: bytes, ndef: bytes | None = None) -> None:
        """``ndef``: the recorded NDEF file image; default: an empty NDEF file."""
        self.uid = bytes(uid)
        self._files = {b"\xE1\x03": bytearray(CC_FILE_DEFAULT),
                       b"\xE1\x04": bytearray((ndef or b"\x00\x00").ljust(256, b"\x00"))}
        self._app = False
        self._ef: bytearray | None = None
        self._auth_started = False

    def transceive(self, apdu: bytes) -> bytes:
        """Answer like a plain Type 4 tag; fail every authentication."""
        apdu = bytes(apdu)
        if len(apdu) < 5:
            return SW.WRONG_LENGTH
        cla, ins, p1, p2 = apdu[:4]
        if cla == 0x00 and ins == 0xA4:
            name = apdu[5:5 + apdu[4]]
            if p1 == 0x04 and name == NDEF_AID:
                self._app, self._ef = True, None
                return SW.ISO_OK
            if p1 == 0x00 and self._app and name in self._files:
                self._ef = self._files[name]
                return SW.ISO_OK
            return SW.NOT_FOUND
        if cla == 0x00 and ins == 0xB0:
            if self._ef is None:
                return SW.NOT_FOUND
            off, le = p1 << 8 | p2, apdu[4] or 256
            if off > len(self._ef):
                return SW.WRONG_OFFSET
            return bytes(self._ef[off:off + le]) + SW.ISO_OK
        if cla == 0x00 and ins == 0xD6:
            if self._ef is None:
                return SW.NOT_FOUND
            off, data = p1 << 8 | p2, apdu[5:5 + apdu[4]]
            self._ef[off:off + len(data)] = data
            return SW.ISO_OK
        if cla == 0x90 and ins == 0x71:
            self._auth_started = True
            return os.urandom(16) + SW.MORE
        if cla == 0x90 and ins == 0xAF and self._auth_started:
            self._auth_started = False
            return SW.AUTH
        return SW.ILLEGAL_COMMAND
