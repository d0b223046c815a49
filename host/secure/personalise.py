# Runs on CPython (host): personalise a blank NTAG 424 DNA for tapkiosk over any APDU transceive function.
"""NTAG 424 DNA personalisation: EV2 secure messaging (AES) and the tapkiosk card set-up.

``personalise(transceive, uid, master_key)`` drives a factory-fresh card (all five keys zero)
through plain ISO/IEC 7816-4 and native NTAG 424 DNA APDUs (datasheet NT4H2421Gx; worked
examples in NXP AN12196): it writes the SUN URL template into the NDEF file, enables Secure
Dynamic Messaging, replaces every key by its diversified value and finally reads the card
back and verifies the first SUN message. ``transceive`` is any callable that sends one
command APDU and returns the response APDU with its status word (a PN532 InDataExchange, a
PC/SC reader, ``sim.ntag424.Ntag424.transceive``).
"""

from __future__ import annotations

import binascii
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from host.secure.sun import (
    KEY_APP_MASTER,
    KEY_SDM_FILE_READ,
    KEY_SDM_META_READ,
    CardKeys,
    SecureCardError,
    SunVerifier,
    aes_cmac,
    mac_truncate,
    site_card_keys,
)

__all__ = [
    "CardRefused",
    "Ev2Session",
    "PersonaliseResult",
    "authenticate_ev2_first",
    "ndef_template",
    "sdm_file_settings",
    "personalise",
    "read_ndef",
    "ndef_url",
    "change_key_apdu",
    "session_keys",
    "URL_TEMPLATE",
    "NDEF_AID",
]

Transceive = Callable[[bytes], bytes]

NDEF_AID = bytes.fromhex("D2760000850101")  # NDEF application DF name
FID_CC = b"\xE1\x03"
FID_NDEF = b"\xE1\x04"
FILE_NDEF = 0x02

# The SUN URL every tapkiosk card carries; p = encrypted PICCData, c = SDMMAC (MACt).
URL_HOST_PATH = "t.tapkiosk.example/t"
URL_TEMPLATE = "https://" + URL_HOST_PATH + "?p=" + "0" * 32 + "&c=" + "0" * 16

_SW_OK = (b"\x90\x00", b"\x91\x00")
_SW_MORE = b"\x91\xAF"

# Native status words (NT4H2421Gx, status and error codes), for messages.
_STATUS = {
    0x911E: "integrity error (MAC or padding)",
    0x917E: "length error",
    0x919D: "permission denied",
    0x919E: "parameter error",
    0x9140: "no such key",
    0x91AE: "authentication error",
    0x91BE: "boundary error",
    0x91CA: "command aborted",
    0x91F0: "file not found",
    0x6982: "security status not satisfied",
    0x6A82: "file or application not found",
    0x6A86: "wrong P1/P2",
    0x6700: "wrong length",
}


class CardRefused(SecureCardError):
    """The card answered a command with an error status word (``sw`` holds it)."""

    def __init__(self, what: str, sw: int) -> None:
        """``what``: the command that failed; ``sw``: the 16-bit status word."""
        self.sw = sw
        super().__init__("%s refused: SW %04X (%s)" % (what, sw, _STATUS.get(sw, "unknown")))


def _sw(resp: bytes) -> int:
    """Status word of a response APDU (SecureCardError when the response is too short)."""
    if len(resp) < 2:
        raise SecureCardError("card response shorter than a status word")
    return resp[-2] << 8 | resp[-1]


def _expect_ok(resp: bytes, what: str) -> bytes:
    """Return the response data if the status word is 9000/9100, else raise CardRefused."""
    if resp[-2:] not in _SW_OK:
        raise CardRefused(what, _sw(resp))
    return resp[:-2]


def _aes_cbc(key: bytes, iv: bytes, data: bytes, encrypt: bool) -> bytes:
    """AES-128-CBC without padding (``data`` must be whole blocks)."""
    c = Cipher(algorithms.AES(key), modes.CBC(iv))
    op = c.encryptor() if encrypt else c.decryptor()
    return op.update(data) + op.finalize()


def _pad(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 2: 0x80 then zeros up to a whole block (always added)."""
    data = data + b"\x80"
    return data + bytes(-len(data) % 16)


def _unpad(data: bytes) -> bytes:
    """Remove ISO/IEC 9797-1 method 2 padding; SecureCardError when it is not there."""
    i = data.rstrip(b"\x00")
    if not i or i[-1] != 0x80:
        raise SecureCardError("bad padding in a decrypted card response")
    return i[:-1]


def _native(cmd: int, data: bytes = b"") -> bytes:
    """Wrap a native command in an ISO 7816-4 APDU: 90 cmd 00 00 [Lc data] 00."""
    if data:
        return bytes((0x90, cmd, 0, 0, len(data))) + data + b"\x00"
    return bytes((0x90, cmd, 0, 0, 0))


def _rotl(b: bytes) -> bytes:
    """Rotate left by one byte (RndA' / RndB' in EV2 authentication)."""
    return b[1:] + b[:1]


@dataclass
class Ev2Session:
    """An EV2 (AES) secure-messaging session: session keys, transaction identifier, counter.

    ``enc_key``/``mac_key`` are SesAuthENCKey/SesAuthMACKey, ``ti`` the 4-byte transaction
    identifier, ``cmd_ctr`` the command counter (incremented after each command-response
    pair), ``key_no`` the key the session was opened with.
    """

    enc_key: bytes
    mac_key: bytes
    ti: bytes
    cmd_ctr: int = 0
    key_no: int = 0

    def __repr__(self) -> str:
        """Never print session keys."""
        return "Ev2Session(ti=%s, cmd_ctr=%d, key_no=%d)" % (self.ti.hex(), self.cmd_ctr,
                                                              self.key_no)

    def _ctr(self, n: int) -> bytes:
        """Command counter ``n`` as 2 bytes little-endian."""
        return (n & 0xFFFF).to_bytes(2, "little")

    def _iv(self, label: bytes, n: int) -> bytes:
        """IV = E(SesAuthENCKey, label || TI || CmdCtr || 0^8) (label A55A cmd, 5AA5 resp)."""
        return _aes_cbc(self.enc_key, bytes(16), label + self.ti + self._ctr(n) + bytes(8), True)

    def full_command(self, cmd: int, header: bytes, data: bytes) -> bytes:
        """APDU for ``cmd`` in CommMode.Full: header plain, data encrypted, MACt appended."""
        enc = b""
        if data:
            enc = _aes_cbc(self.enc_key, self._iv(b"\xA5\x5A", self.cmd_ctr), _pad(data), True)
        return _native(cmd, header + enc + self.command_mac(cmd, header + enc))

    def mac_command(self, cmd: int, header: bytes, data: bytes = b"") -> bytes:
        """APDU for ``cmd`` in CommMode.MAC: header and data plain, MACt appended."""
        return _native(cmd, header + data + self.command_mac(cmd, header + data))

    def command_mac(self, cmd: int, body: bytes) -> bytes:
        """MACt(CMAC(SesAuthMACKey, Cmd || CmdCtr || TI || body))."""
        return mac_truncate(aes_cmac(self.mac_key, bytes((cmd,)) + self._ctr(self.cmd_ctr)
                                     + self.ti + body))

    def check_response(self, resp: bytes, what: str, encrypted: bool = False) -> bytes:
        """Check a MACed (and, if ``encrypted``, decrypt a Full) response; advance the counter.

        Returns the plain response data. Raises CardRefused on an error status and
        SecureCardError when the response MAC or padding is wrong.
        """
        if resp[-2:] != b"\x91\x00":
            raise CardRefused(what, _sw(resp))
        body = resp[:-2]
        if len(body) < 8:
            raise SecureCardError("%s: response lacks its MAC" % what)
        data, mac = body[:-8], body[-8:]
        n = self.cmd_ctr + 1
        want = mac_truncate(aes_cmac(self.mac_key, b"\x00" + self._ctr(n) + self.ti + data))
        if not _consteq(want, mac):
            raise SecureCardError("%s: response MAC does not verify" % what)
        self.cmd_ctr = n
        if encrypted and data:
            if len(data) % 16:
                raise SecureCardError("%s: encrypted response is not whole blocks" % what)
            return _unpad(_aes_cbc(self.enc_key, self._iv(b"\x5A\xA5", n), data, False))
        return data


def _consteq(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two byte strings."""
    return hmac.compare_digest(a, b)


def session_keys(key: bytes, rnd_a: bytes, rnd_b: bytes) -> tuple[bytes, bytes]:
    """SesAuthENCKey, SesAuthMACKey from the authentication key and both random numbers.

    SV1/SV2 = A55A/5AA5 || 00 01 00 80 || RndA[0:2] || (RndA[2:8] XOR RndB[0:6]) ||
    RndB[6:16] || RndA[8:16]; each session key is CMAC(key, SV).
    """
    mix = rnd_a[0:2] + bytes(x ^ y for x, y in zip(rnd_a[2:8], rnd_b[0:6])) + rnd_b[6:] + rnd_a[8:]
    sv1 = b"\xA5\x5A\x00\x01\x00\x80" + mix
    sv2 = b"\x5A\xA5\x00\x01\x00\x80" + mix
    return aes_cmac(key, sv1), aes_cmac(key, sv2)


def authenticate_ev2_first(transceive: Transceive, key_no: int, key: bytes,
                           rnd_a: bytes | None = None) -> Ev2Session:
    """AuthenticateEV2First (AES) with card key ``key_no``; return the new session.

    Part 1: ``90 71 00 00 02 keyNo 00 00`` -> E(K, RndB) 91AF. Part 2: ``90 AF 00 00 20
    E(K, RndA || RndB')`` -> E(K, TI || RndA' || PDcap2 || PCDcap2) 9100. The card's RndA'
    is checked, so a card that does not hold ``key`` is refused (CardRefused with SW 91AE
    from the card, or SecureCardError if its answer does not match). ``rnd_a`` is for tests
    replaying a published example; leave it None.
    """
    if len(key) != 16:
        raise SecureCardError("authentication key must be 16 bytes")
    r1 = transceive(_native(0x71, bytes((key_no, 0x00))))
    if r1[-2:] != _SW_MORE or len(r1) != 18:
        raise CardRefused("AuthenticateEV2First part 1", _sw(r1))
    rnd_b = _aes_cbc(key, bytes(16), r1[:16], False)
    rnd_a = os.urandom(16) if rnd_a is None else bytes(rnd_a)
    r2 = transceive(_native(0xAF, _aes_cbc(key, bytes(16), rnd_a + _rotl(rnd_b), True)))
    if r2[-2:] != b"\x91\x00" or len(r2) != 34:
        raise CardRefused("AuthenticateEV2First part 2", _sw(r2))
    plain = _aes_cbc(key, bytes(16), r2[:32], False)
    if not _consteq(plain[4:20], _rotl(rnd_a)):
        raise SecureCardError("card failed mutual authentication (RndA' mismatch)")
    enc, mac = session_keys(key, rnd_a, rnd_b)
    return Ev2Session(enc, mac, plain[:4], 0, key_no)


def change_key_apdu(session: Ev2Session, key_no: int, new_key: bytes, version: int,
                    old_key: bytes | None = None) -> bytes:
    """The ChangeKey (C4) APDU in CommMode.Full.

    For the key the session was opened with: data = NewKey || KeyVer. For any other key:
    data = (NewKey XOR OldKey) || KeyVer || CRC32NK(NewKey), the CRC32 being the
    inverted-output CRC-32 (JAMCRC) of the new key, little-endian.
    """
    if len(new_key) != 16:
        raise SecureCardError("new key must be 16 bytes")
    if key_no == session.key_no:
        data = bytes(new_key) + bytes((version,))
    else:
        if old_key is None or len(old_key) != 16:
            raise SecureCardError("changing key %d needs its current value" % key_no)
        crc = (binascii.crc32(new_key) ^ 0xFFFFFFFF).to_bytes(4, "little")
        data = bytes(a ^ b for a, b in zip(new_key, old_key)) + bytes((version,)) + crc
    return session.full_command(0xC4, bytes((key_no,)), data)


def change_key(transceive: Transceive, session: Ev2Session, key_no: int, new_key: bytes,
               version: int, old_key: bytes | None = None) -> None:
    """Send ChangeKey and check the answer (no MAC when the session's own key changed)."""
    resp = transceive(change_key_apdu(session, key_no, new_key, version, old_key))
    if key_no == session.key_no:
        # The session key is gone: the card answers a bare 9100 and the session ends.
        if resp != b"\x91\x00":
            raise CardRefused("ChangeKey %d" % key_no, _sw(resp))
        session.cmd_ctr += 1
        return
    session.check_response(resp, "ChangeKey %d" % key_no)


def ndef_template(url: str = URL_TEMPLATE) -> tuple[bytes, int, int]:
    """The NDEF file image for ``url`` and the file offsets of the p= and c= placeholders.

    File = NLEN (2, big-endian) || one short NDEF URI record (TNF well-known, type "U",
    prefix 0x04 "https://"). Returns ``(file_bytes, picc_offset, mac_offset)``.
    """
    if not url.startswith("https://"):
        raise SecureCardError("SUN URL must be https")
    rest = url[len("https://"):].encode("ascii")
    payload = b"\x04" + rest
    if len(payload) > 255:
        raise SecureCardError("SUN URL too long for a short NDEF record")
    record = b"\xD1\x01" + bytes((len(payload),)) + b"U" + payload
    image = len(record).to_bytes(2, "big") + record
    p = image.find(b"p=" + b"0" * 32)
    c = image.find(b"c=" + b"0" * 16)
    if p < 0 or c < 0:
        raise SecureCardError("SUN URL lacks the p= (32 zeros) or c= (16 zeros) placeholder")
    return image, p + 2, c + 2


def sdm_file_settings(picc_offset: int, mac_offset: int) -> bytes:
    """ChangeFileSettings data for the NDEF file with SDM on (tapkiosk configuration).

    FileOption 0x40 (SDM enabled, CommMode.Plain); AccessRights E0 read free / write, RW,
    change with key 0 (bytes ``00 E0``); SDMOptions 0xC1 (UID mirror, counter mirror, ASCII);
    SDMAccessRights: SDMCtrRet none (F), SDMMetaRead key 2, SDMFileRead key 1 (bytes
    ``FF 21``); PICCDataOffset; SDMMACInputOffset = SDMMACOffset (MAC over an empty input);
    SDMMACOffset. Offsets are 3 bytes little-endian.
    """
    def o(v: int) -> bytes:
        return v.to_bytes(3, "little")
    return (b"\x40" + b"\x00\xE0" + b"\xC1"
            + bytes((0xF0 | 0xF, KEY_SDM_META_READ << 4 | KEY_SDM_FILE_READ))
            + o(picc_offset) + o(mac_offset) + o(mac_offset))


def _select_app(transceive: Transceive) -> None:
    """ISOSelectFile of the NDEF application by DF name (P2 0C: no FCI)."""
    _expect_ok(transceive(b"\x00\xA4\x04\x0C\x07" + NDEF_AID + b"\x00"), "select application")


def _select_file(transceive: Transceive, fid: bytes) -> None:
    """ISOSelectFile of an elementary file by file identifier."""
    _expect_ok(transceive(b"\x00\xA4\x00\x0C\x02" + fid), "select file %s" % fid.hex())


def read_ndef(transceive: Transceive) -> bytes:
    """Select the application and the NDEF file, read NLEN and the NDEF message (ISOReadBinary).

    Returns the whole file image read (NLEN included). This is what a reader does on a tap;
    each call is one SDM read, so the card's read counter moves by one.
    """
    _select_app(transceive)
    _select_file(transceive, FID_NDEF)
    head = _expect_ok(transceive(b"\x00\xB0\x00\x00\x02"), "read NLEN")
    if len(head) != 2:
        raise SecureCardError("NDEF file too short")
    nlen = int.from_bytes(head, "big")
    body = b""
    while len(body) < nlen:
        n = min(nlen - len(body), 0xF0)
        off = 2 + len(body)
        chunk = _expect_ok(transceive(b"\x00\xB0" + off.to_bytes(2, "big") + bytes((n,))),
                           "read NDEF")
        if not chunk:
            raise SecureCardError("NDEF read returned no data")
        body += chunk
    return head + body


def ndef_url(image: bytes) -> str:
    """The URL of the first NDEF URI record in an NDEF file image (NLEN included).

    Only short well-known "U" records are understood (what tapkiosk writes); anything else
    raises SecureCardError.
    """
    if len(image) < 7:
        raise SecureCardError("NDEF file too short for a URI record")
    nlen = int.from_bytes(image[:2], "big")
    rec = image[2:2 + nlen]
    if len(rec) < 5 or rec[0] & 0x17 != 0x11 or rec[1] != 1 or rec[3:4] != b"U":
        raise SecureCardError("NDEF file does not start with a short URI record")
    payload = rec[4:4 + rec[2]]
    if len(payload) != rec[2] or not payload:
        raise SecureCardError("truncated NDEF URI record")
    prefixes = {0: "", 1: "http://www.", 2: "https://www.", 3: "http://", 4: "https://"}
    if payload[0] not in prefixes:
        raise SecureCardError("unsupported URI prefix code %d" % payload[0])
    return prefixes[payload[0]] + payload[1:].decode("ascii", "replace")


@dataclass(frozen=True)
class PersonaliseResult:
    """What the store keeps after personalising a card.

    ``uid`` (uppercase hex), ``key_version``, ``url`` (template written), the SDM
    ``picc_offset``/``mac_offset`` in the NDEF file, and ``counter``: the SDM read counter of
    the verification read done at the end, to store as the card's last counter.
    """

    uid: str
    key_version: int
    url: str
    picc_offset: int
    mac_offset: int
    counter: int


def personalise(transceive: Transceive, uid: bytes, master_key: bytes,
                key_version: int = 1, url: str = URL_TEMPLATE) -> PersonaliseResult:
    """Personalise a blank NTAG 424 DNA with UID ``uid`` for the site ``master_key``.

    Steps (each checked; any error raises SecureCardError, CardRefused being a subclass):
      1. select the NDEF application; AuthenticateEV2First with key 0 and the factory key
         (fails on a card that is not blank, before anything is written);
      2. reselect (ends that session), select the NDEF file, ISOUpdateBinary the URL template;
      3. reselect, authenticate with key 0 again; ChangeFileSettings (Full) to enable SDM and
         make the file read-only except with key 0;
      4. ChangeKey keys 1..4 (XOR form, old key = factory key) then key 0 (plain form; ends
         the session) to the diversified keys of ``site_card_keys(master_key, uid, version)``;
      5. read the NDEF file as a reader would and verify the SUN message with the new keys.

    If step 4 is interrupted the card is left with some keys changed: personalising it again
    fails at step 1 (key 0 still factory but files locked) or needs a manual recovery; the
    error says which step failed.
    """
    uid = bytes(uid)
    keys: CardKeys = site_card_keys(master_key, uid, key_version)
    factory = bytes(16)
    image, picc_off, mac_off = ndef_template(url)

    _select_app(transceive)
    try:
        authenticate_ev2_first(transceive, KEY_APP_MASTER, factory)
    except SecureCardError as e:
        raise SecureCardError("card is not blank (key 0 is not the factory key; already "
                              "personalised?): %s" % e) from e

    _select_app(transceive)
    _select_file(transceive, FID_NDEF)
    _expect_ok(transceive(b"\x00\xD6\x00\x00" + bytes((len(image),)) + image),
               "write NDEF template")

    _select_app(transceive)
    s = authenticate_ev2_first(transceive, KEY_APP_MASTER, factory)
    resp = transceive(s.full_command(0x5F, bytes((FILE_NDEF,)),
                                     sdm_file_settings(picc_off, mac_off)))
    s.check_response(resp, "ChangeFileSettings")
    new = keys.by_number()
    for n in (1, 2, 3, 4):
        change_key(transceive, s, n, new[n], key_version, old_key=factory)
    change_key(transceive, s, KEY_APP_MASTER, new[0], key_version)

    result = SunVerifier().verify(uid.hex().upper(), ndef_url(read_ndef(transceive)), keys, -1)
    if not result.ok:
        raise SecureCardError("personalised card does not produce a valid SUN message: %s"
                              % result.detail)
    return PersonaliseResult(uid.hex().upper(), key_version, url, picc_off, mac_off,
                             result.counter)
