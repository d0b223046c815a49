# Runs on the ESP32 (MicroPython) and on CPython for tests: read an NTAG 424 DNA SUN message for the TAP secure field.
#
# read_sun(chip, uid, sak, ats) is the Reader's secure_hook for ISO-DEP cards. Through the
# PN532's InDataExchange (chip.exchange: the chip does ISO-DEP) it selects the NDEF
# application (D2760000850101) and the NDEF file (E104), reads NLEN and the NDEF message with
# ISOReadBinary in chunks of _CHUNK bytes, finds the mirror "?p=<32 hex>&c=<16 hex>" (or
# "&p=") and returns the binary secure field of host/SECURE.md:
#     0x01 | PICCData (16 bytes) | SDMMAC (8 bytes)
# None when the card is not a tapkiosk secure card (no NDEF application: 6A82, no mirror, bad
# hex), so its TAP carries the UID alone and the host decides. PN532 errors (card taken away
# mid-read) propagate: the Reader reports the UID alone then.
#
# The returned bytearray is reused by the next call: the caller encodes it into the TAP
# frame before polling again (Reader awaits on_tap before the next poll).
from protocol.compat import const

_CHUNK = const(128)     # Le per ISOReadBinary: well inside one PN532 frame (262 data bytes)
_FILE_MAX = const(256)  # NTAG 424 DNA NDEF file size
_FIELD_LEN = const(25)
_TAG_SUN = const(0x01)
_PICC_HEX = const(32)
_MAC_HEX = const(16)

_SELECT_APP = b"\x00\xA4\x04\x0C\x07\xD2\x76\x00\x00\x85\x01\x01\x00"
_SELECT_NDEF = b"\x00\xA4\x00\x0C\x02\xE1\x04"

_read = bytearray(b"\x00\xB0\x00\x00\x00")  # ISOReadBinary: P1 P2 = offset, Le
_file = bytearray(_FILE_MAX)
_field = bytearray(_FIELD_LEN)


def _ok(rsp):
    n = len(rsp)
    return n >= 2 and rsp[n - 2] == 0x90 and rsp[n - 1] == 0x00


def _nibble(c):
    if 0x30 <= c <= 0x39:
        return c - 0x30
    c |= 0x20
    if 0x61 <= c <= 0x66:
        return c - 0x57
    return -1


def _unhex(src, start, n_hex, dst, at):
    # n_hex hex digits of src from start into dst[at:]; False on a non-hex digit.
    j = at
    for i in range(start, start + n_hex, 2):
        hi = _nibble(src[i])
        lo = _nibble(src[i + 1])
        if hi < 0 or lo < 0:
            return False
        dst[j] = (hi << 4) | lo
        j += 1
    return True


def _param(buf, end, name):
    # Index of the value of query parameter name (b"p=" / b"c=") after '?' or '&'; -1 if none.
    i = buf.find(name, 0, end)
    while i > 0:
        c = buf[i - 1]
        if c == 0x3F or c == 0x26:  # '?' '&'
            return i + 2
        i = buf.find(name, i + 1, end)
    return -1


async def _read_into(chip, offset, n):
    _read[2] = offset >> 8
    _read[3] = offset & 0xFF
    _read[4] = n
    rsp = await chip.exchange(_read)
    got = len(rsp) - 2
    if not _ok(rsp) or got <= 0 or got > n:
        return 0
    _file[offset:offset + got] = rsp[0:got]
    return got


async def read_sun(chip, uid, sak, ats):
    if not _ok(await chip.exchange(_SELECT_APP)):
        return None
    if not _ok(await chip.exchange(_SELECT_NDEF)):
        return None
    if await _read_into(chip, 0, 2) != 2:
        return None
    end = 2 + ((_file[0] << 8) | _file[1])
    if end > _FILE_MAX:
        end = _FILE_MAX
    pos = 2
    while pos < end:
        n = end - pos
        if n > _CHUNK:
            n = _CHUNK
        got = await _read_into(chip, pos, n)
        if not got:
            return None
        pos += got
    p = _param(_file, end, b"p=")
    c = _param(_file, end, b"c=")
    if p < 0 or c < 0 or p + _PICC_HEX > end or c + _MAC_HEX > end:
        return None
    _field[0] = _TAG_SUN
    if not _unhex(_file, p, _PICC_HEX, _field, 1):
        return None
    if not _unhex(_file, c, _MAC_HEX, _field, 1 + _PICC_HEX // 2):
        return None
    return _field
