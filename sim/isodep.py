# Runs on CPython (sim): the card side of ISO/IEC 14443-4 (ISO-DEP) block transmission, for cards placed on the PN532 emulator.
"""ISO-DEP on the card side, for hosts that drive the protocol themselves.

A PN532 does ISO-DEP for the host in InDataExchange (the chip sends RATS at selection and
wraps APDUs in blocks). nfcpy does it itself instead: it turns automatic RATS off and sends
RATS, I-, R- and S-blocks through InCommunicateThru, the chip only adding and checking CRC_A.
``IsoDepPicc(card)`` is what a real ISO-DEP card does with those frames (ISO/IEC 14443-4
sections 5 and 7), for any virtual card with ``.ats`` and ``.transceive(apdu) -> bytes``:

* RATS ``E0 xy`` -> the ATS (with its TL byte); FSDI = x gives the reader's frame size;
* I-block ``0A/02 | bn`` (CID and NAD bits honoured): chained I-blocks are acknowledged with
  R(ACK) and collected, the whole APDU goes to ``card.transceive`` and the response goes
  back in I-blocks no longer than the reader's FSD, chained when needed;
* R(ACK) with the other block number -> the next chained response block; R(ACK) or R(NAK)
  with the current one -> the last block again (rule 11/12);
* S(DESELECT) ``C2`` -> ``C2``, and the card is HALTed (it ignores everything afterwards);
* anything else -> silence (None), as a card does with a frame it does not understand.

Frames are given and returned without CRC_A, as InCommunicateThru carries them.
"""

from __future__ import annotations

__all__ = ["IsoDepPicc"]

# FSDI -> FSD (ISO/IEC 14443-4 table 1); FSDI 9..15 are RFU and read as 256.
_FSD = (16, 24, 32, 40, 48, 64, 96, 128, 256)


class IsoDepPicc:
    """ISO-DEP block protocol in front of an APDU-level virtual card."""

    def __init__(self, card, active: bool = False) -> None:
        """``card``: object with ``ats`` and ``transceive``; ``active``: True when the chip
        already sent RATS at selection (automatic RATS), so I-blocks are accepted at once."""
        self.card = card
        self.active = active
        self.halted = False
        self.fsd = 256
        self._chain = b""          # command blocks received so far (chaining)
        self._out = b""            # response bytes not sent yet
        self._last = None          # last block sent, for retransmission
        self._bn = 1               # PICC block number (rule C: starts at 1)

    def transceive_raw(self, frame: bytes) -> bytes | None:
        """Answer one frame the reader sent (no CRC); None = no answer on air."""
        frame = bytes(frame)
        if self.halted or not frame:
            return None
        if not self.active:
            if len(frame) == 2 and frame[0] == 0xE0:
                self.active = True
                self.fsd = _FSD[min(frame[1] >> 4, 8)]
                ats = bytes(getattr(self.card, "ats", b"") or b"\x01")
                return ats if ats[0] == len(ats) else bytes((len(ats) + 1,)) + ats
            return None
        pcb = frame[0]
        head = 1 + (1 if pcb & 0x08 else 0)
        prefix = frame[1:head]
        if pcb & 0xE2 == 0x02:                      # I-block
            if pcb & 0x04:                          # NAD follows (CID first)
                head += 1
            self._bn = pcb & 1                      # rule D: toggle to the block received
            if pcb & 0x10:                          # chaining: collect, acknowledge
                self._chain += frame[head:]
                return self._send(bytes((0xA2 | (0x08 & pcb) | self._bn,)) + prefix)
            apdu = self._chain + frame[head:]
            self._chain = b""
            rsp = self.card.transceive(apdu)
            if rsp is None:
                return None
            self._out = bytes(rsp)
            return self._next_block(pcb & 0x08, prefix)
        if pcb & 0xE6 == 0xA2:                      # R-block
            nak = bool(pcb & 0x10)
            if (pcb & 1) == self._bn or nak:        # rules 11 and 12: send the last block again
                return self._last
            self._bn = pcb & 1
            if self._out:
                return self._next_block(pcb & 0x08, prefix)
            return self._send(bytes((0xA2 | (0x08 & pcb) | self._bn,)) + prefix)
        if pcb & 0xF7 == 0xC2:                      # S(DESELECT)
            self.halted = True
            return bytes((pcb,)) + prefix
        return None

    def _next_block(self, cid_bit: int, prefix: bytes) -> bytes:
        room = self.fsd - 3 - len(prefix)           # PCB and CRC_A
        part, self._out = self._out[:room], self._out[room:]
        chain = 0x10 if self._out else 0
        return self._send(bytes((0x02 | chain | cid_bit | self._bn,)) + prefix + part)

    def _send(self, block: bytes) -> bytes:
        self._last = block
        return block
