# Runs on CPython (sim): a virtual NXP NTAG 424 DNA card (ISO 14443-4 APDU level) for tests and the demo.
"""Virtual NTAG 424 DNA.

Implements, from the datasheet NT4H2421Gx and the worked examples of NXP AN12196, the part
of the command set tapkiosk uses: ISOSelectFile, ISOReadBinary, ISOUpdateBinary, ReadData,
WriteData (CommMode.Plain), AuthenticateEV2First (AES), ChangeKey and ChangeFileSettings
(CommMode.Full), GetFileSettings (Plain, or MAC when authenticated) and GetCardUID (Full),
with Secure Dynamic Messaging on the NDEF file: encrypted PICCData (UID + SDMReadCtr) and
the SDMMAC mirrored in ASCII hex.

The card crypto here is written independently of ``host/`` on purpose: the host's
personalisation and SUN verification are tested against this card, and both against the
published AN12196 vectors.

A virtual card is placed on the PN532 emulator as any object with ``.uid``, ``.sak``,
``.atqa``, ``.ats`` and ``.transceive(apdu) -> bytes``.

Modelling notes (where the datasheet leaves room, the behaviour chosen is stated):
* SDMReadCtr is incremented, and the mirror computed, on the first read of the NDEF file
  after a selection (ISOSelectFile of the application or of a file); further reads before
  the next selection return the same image, so a reader may read the file in chunks. One
  tap = one selection = one increment.
* The counter is incremented before it is mirrored, so the first read shows 1.
* Any ISOSelectFile ends an authenticated session; an integrity or authentication error
  ends it too.
* SDMENCFileData (encrypted file data mirror) is not modelled: ChangeFileSettings asking
  for it answers 919E.
"""

from __future__ import annotations

import binascii
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

__all__ = ["Ntag424", "NDEF_AID", "CC_FILE_DEFAULT", "SW"]

NDEF_AID = bytes.fromhex("D2760000850101")

# Capability container (file E103) as delivered: CCLEN 0017, mapping version 2.0, MLe 0100,
# MLc 00FF, NDEF file control TLV (E104, 256 bytes, read/write free), proprietary file TLV
# (E105, 128 bytes, read/write restricted).
CC_FILE_DEFAULT = bytes.fromhex("001720010000FF0406E104010000000506E1050080828300000000000000000000")


class SW:
    """Status words (ISO 7816-4 and native NTAG 424 DNA)."""

    ISO_OK = b"\x90\x00"
    OK = b"\x91\x00"
    MORE = b"\x91\xAF"
    ILLEGAL_COMMAND = b"\x91\x1C"
    INTEGRITY = b"\x91\x1E"
    NO_SUCH_KEY = b"\x91\x40"
    LENGTH = b"\x91\x7E"
    PERMISSION = b"\x91\x9D"
    PARAMETER = b"\x91\x9E"
    AUTH = b"\x91\xAE"
    BOUNDARY = b"\x91\xBE"
    FILE_NOT_FOUND = b"\x91\xF0"
    WRONG_LENGTH = b"\x67\x00"
    SECURITY = b"\x69\x82"
    NOT_FOUND = b"\x6A\x82"
    WRONG_P1P2 = b"\x6A\x86"
    WRONG_OFFSET = b"\x6B\x00"
    INS_UNKNOWN = b"\x6D\x00"
    CLA_UNKNOWN = b"\x6E\x00"


_FREE = 0xE
_NEVER = 0xF


def _cmac(key: bytes, msg: bytes) -> bytes:
    """AES-CMAC (RFC 4493), full 16 bytes."""
    c = CMAC(algorithms.AES(key))
    c.update(msg)
    return c.finalize()


def _mact(key: bytes, msg: bytes) -> bytes:
    """CMAC truncated to its odd-indexed bytes (MACt)."""
    return _cmac(key, msg)[1::2]


def _cbc(key: bytes, iv: bytes, data: bytes, encrypt: bool) -> bytes:
    """AES-128-CBC, no padding."""
    c = Cipher(algorithms.AES(key), modes.CBC(iv))
    op = c.encryptor() if encrypt else c.decryptor()
    return op.update(data) + op.finalize()


def _rotl(b: bytes) -> bytes:
    """Rotate left by one byte."""
    return b[1:] + b[:1]


class _Reject(Exception):
    """Internal: abort the command with status word ``sw`` (never leaves ``transceive``)."""

    def __init__(self, sw: bytes, end_session: bool = False) -> None:
        self.sw = sw
        self.end_session = end_session
        super().__init__(sw.hex())


@dataclass
class _Sdm:
    """SDM settings of a file (offsets are file offsets)."""

    options: int
    ctr_ret: int
    meta_read: int
    file_read: int
    uid_offset: int | None = None
    ctr_offset: int | None = None
    picc_offset: int | None = None
    mac_input_offset: int | None = None
    mac_offset: int | None = None
    ctr_limit: int | None = None

    def encode(self) -> bytes:
        """The SDM part of the file settings, as ChangeFileSettings/GetFileSettings carry it."""
        def o(v: int) -> bytes:
            return v.to_bytes(3, "little")
        out = bytes((self.options, 0xF0 | self.ctr_ret, self.meta_read << 4 | self.file_read))
        for v in (self.uid_offset, self.ctr_offset, self.picc_offset, self.mac_input_offset,
                  self.mac_offset, self.ctr_limit):
            if v is not None:
                out += o(v)
        return out


@dataclass
class _File:
    """A standard data file of the NDEF application."""

    number: int
    fid: bytes
    data: bytearray
    comm_mode: int
    read: int
    write: int
    rw: int
    change: int
    sdm: _Sdm | None = None
    sdm_ctr: int = 0

    def access_bytes(self) -> bytes:
        """AccessRights as two bytes: (RW << 4 | Change), (Read << 4 | Write)."""
        return bytes((self.rw << 4 | self.change, self.read << 4 | self.write))


@dataclass
class _Session:
    """EV2 session state on the card side."""

    key_no: int
    enc: bytes
    mac: bytes
    ti: bytes
    ctr: int = 0
    extra: dict = field(default_factory=dict)

    def ctr_bytes(self, n: int | None = None) -> bytes:
        return ((self.ctr if n is None else n) & 0xFFFF).to_bytes(2, "little")

    def iv(self, label: bytes, n: int) -> bytes:
        return _cbc(self.enc, bytes(16), label + self.ti + self.ctr_bytes(n) + bytes(8), True)


class Ntag424:
    """A virtual NTAG 424 DNA with a 7-byte UID, five AES keys and the three standard files.

    ``keys`` defaults to five all-zero keys (factory state); ``counter`` is the initial
    SDMReadCtr of the NDEF file; ``rng`` supplies RndB, TI and the PICCData padding (tests
    pass a deterministic source to replay published examples).
    """

    sak = 0x20
    atqa = b"\x03\x44"                      # ATQA 0344h
    ats = bytes.fromhex("067777710280")     # TL T0 TA TB TC, historical byte 80h

    def __init__(self, uid: bytes, keys: list[bytes] | None = None, counter: int = 0,
                 rng: Callable[[int], bytes] = os.urandom) -> None:
        """Create a card in its delivery state (apart from ``keys`` and ``counter``)."""
        uid = bytes(uid)
        if len(uid) != 7:
            raise ValueError("NTAG 424 DNA UIDs are 7 bytes")
        keys = [bytes(16)] * 5 if keys is None else [bytes(k) for k in keys]
        if len(keys) != 5 or any(len(k) != 16 for k in keys):
            raise ValueError("NTAG 424 DNA has five 16-byte AES keys")
        self.uid = uid
        self.keys = keys
        self.key_versions = [0] * 5
        self._rng = rng
        self.files = {
            1: _File(1, b"\xE1\x03", bytearray(CC_FILE_DEFAULT), 0, _FREE, 0, 0, 0),
            2: _File(2, b"\xE1\x04", bytearray(256), 0, _FREE, _FREE, _FREE, 0),
            3: _File(3, b"\xE1\x05", bytearray(128), 3, 2, 3, 3, 0),
        }
        self.files[2].sdm_ctr = counter
        self._app = False
        self._ef: _File | None = None
        self._session: _Session | None = None
        self._pending: tuple[int, bytes] | None = None
        self._snapshot: bytes | None = None
        self.apdu_log: list[tuple[bytes, bytes]] = []

    # ------------------------------------------------------------------ dispatch
    @property
    def counter(self) -> int:
        """The SDMReadCtr of the NDEF file."""
        return self.files[2].sdm_ctr

    def transceive(self, apdu: bytes) -> bytes:
        """Execute one command APDU and return the response APDU (data || SW1 SW2)."""
        apdu = bytes(apdu)
        ins = -1
        try:
            if len(apdu) < 4:
                raise _Reject(SW.WRONG_LENGTH)
            cla, ins = apdu[0], apdu[1]
            if cla == 0x00:
                resp = self._iso(ins, apdu)
            elif cla == 0x90:
                resp = self._native(ins, apdu)
            else:
                raise _Reject(SW.CLA_UNKNOWN)
        except _Reject as r:
            if r.end_session:
                self._session = None
            if ins != 0xAF:
                self._pending = None
            resp = r.sw
        self.apdu_log.append((apdu, resp))
        return resp

    # ------------------------------------------------------------------ ISO 7816-4
    def _iso(self, ins: int, apdu: bytes) -> bytes:
        p1, p2 = apdu[2], apdu[3]
        body = apdu[4:]
        if ins == 0xA4:
            return self._select(p1, p2, body)
        if ins == 0xB0:
            return self._read_binary(p1, p2, body)
        if ins == 0xD6:
            return self._update_binary(p1, p2, body)
        raise _Reject(SW.INS_UNKNOWN)

    def _select(self, p1: int, p2: int, body: bytes) -> bytes:
        if not body or len(body) < 1 + body[0]:
            raise _Reject(SW.WRONG_LENGTH)
        name = body[1:1 + body[0]]
        if p2 not in (0x00, 0x0C):
            raise _Reject(SW.WRONG_P1P2)
        self._session = None
        self._pending = None
        self._snapshot = None
        if p1 == 0x04:
            if name != NDEF_AID:
                raise _Reject(SW.NOT_FOUND)
            self._app, self._ef = True, None
            return SW.ISO_OK
        if p1 == 0x00:
            if name == b"\x3F\x00":
                self._app, self._ef = False, None
                return SW.ISO_OK
            if name == b"\xE1\x10":
                self._app, self._ef = True, None
                return SW.ISO_OK
            for f in self.files.values():
                if self._app and f.fid == name:
                    self._ef = f
                    return SW.ISO_OK
            raise _Reject(SW.NOT_FOUND)
        raise _Reject(SW.WRONG_P1P2)

    def _read_binary(self, p1: int, p2: int, body: bytes) -> bytes:
        if p1 & 0x80:
            raise _Reject(SW.WRONG_P1P2)  # short file identifier form: not modelled
        f = self._ef
        if f is None:
            raise _Reject(SW.NOT_FOUND)
        if len(body) != 1:
            raise _Reject(SW.WRONG_LENGTH)
        le = body[0] or 256
        off = p1 << 8 | p2
        if not self._may_read_plain(f):
            raise _Reject(SW.SECURITY)
        image = self._image(f)
        if off > len(image):
            raise _Reject(SW.WRONG_OFFSET)
        return image[off:off + le] + SW.ISO_OK

    def _update_binary(self, p1: int, p2: int, body: bytes) -> bytes:
        if p1 & 0x80:
            raise _Reject(SW.WRONG_P1P2)
        f = self._ef
        if f is None:
            raise _Reject(SW.NOT_FOUND)
        if not body or len(body) != 1 + body[0]:
            raise _Reject(SW.WRONG_LENGTH)
        data = body[1:]
        off = p1 << 8 | p2
        if not self._may_write_plain(f):
            raise _Reject(SW.SECURITY)
        if off + len(data) > len(f.data):
            raise _Reject(SW.WRONG_OFFSET)
        f.data[off:off + len(data)] = data
        self._snapshot = None
        return SW.ISO_OK

    def _may_read_plain(self, f: _File) -> bool:
        """Plain read allowed: free access, or an authenticated key matching an access right."""
        rights = (f.read, f.rw)
        if _FREE in rights:
            return True
        s = self._session
        return s is not None and s.key_no in rights and f.comm_mode == 0

    def _may_write_plain(self, f: _File) -> bool:
        rights = (f.write, f.rw)
        if _FREE in rights:
            return True
        s = self._session
        return s is not None and s.key_no in rights and f.comm_mode == 0

    # ------------------------------------------------------------------ SDM
    def _image(self, f: _File) -> bytes:
        """File contents as read now: with the SDM mirror for an SDM-enabled file."""
        if f.sdm is None:
            return bytes(f.data)
        if self._snapshot is None:
            self._snapshot = self._mirror(f)
        return self._snapshot

    def _mirror(self, f: _File) -> bytes:
        """Increment SDMReadCtr and build the mirrored image."""
        sdm = f.sdm
        if sdm.ctr_limit is not None and f.sdm_ctr >= sdm.ctr_limit:
            raise _Reject(SW.BOUNDARY)
        if f.sdm_ctr >= 0xFFFFFF:
            raise _Reject(SW.BOUNDARY)
        f.sdm_ctr += 1
        ctr = f.sdm_ctr.to_bytes(3, "little")
        img = bytearray(f.data)
        uid_on = bool(sdm.options & 0x80)
        ctr_on = bool(sdm.options & 0x40)
        if sdm.meta_read == _FREE:
            if uid_on and sdm.uid_offset is not None:
                img[sdm.uid_offset:sdm.uid_offset + 14] = self.uid.hex().upper().encode()
            if ctr_on and sdm.ctr_offset is not None:
                img[sdm.ctr_offset:sdm.ctr_offset + 6] = ctr[::-1].hex().upper().encode()
        elif sdm.meta_read <= 4:
            tag = (0x80 if uid_on else 0) | (0x40 if ctr_on else 0) | (7 if uid_on else 0)
            plain = bytes((tag,)) + (self.uid if uid_on else b"") + (ctr if ctr_on else b"")
            plain += self._rng(16 - len(plain))
            enc = _cbc(self.keys[sdm.meta_read], bytes(16), plain, True)
            img[sdm.picc_offset:sdm.picc_offset + 32] = enc.hex().upper().encode()
        if sdm.file_read != _NEVER:
            sv2 = b"\x3C\xC3\x00\x01\x00\x80" + (self.uid if uid_on else b"") + (ctr if ctr_on else b"")
            sv2 += bytes(-len(sv2) % 16)
            ses = _cmac(self.keys[sdm.file_read], sv2)
            mac = _mact(ses, bytes(img[sdm.mac_input_offset:sdm.mac_offset]))
            img[sdm.mac_offset:sdm.mac_offset + 16] = mac.hex().upper().encode()
        return bytes(img)

    def _parse_settings(self, f: _File, data: bytes) -> tuple[int, int, int, int, int, _Sdm | None]:
        """Parse ChangeFileSettings data; raise 919E/917E on anything inconsistent."""
        if len(data) < 3:
            raise _Reject(SW.LENGTH)
        opt = data[0]
        if opt & ~0x43:
            raise _Reject(SW.PARAMETER)
        comm = opt & 0x03
        if comm == 2:
            raise _Reject(SW.PARAMETER)
        rw, change = data[1] >> 4, data[1] & 0xF
        read, write = data[2] >> 4, data[2] & 0xF
        for r in (rw, change, read, write):
            if 4 < r < 0xE:
                raise _Reject(SW.PARAMETER)
        rest = data[3:]
        sdm = None
        if opt & 0x40:
            if f.number != 2 or len(rest) < 3:
                raise _Reject(SW.PARAMETER)
            options, ar0, ar1 = rest[0], rest[1], rest[2]
            rest = rest[3:]
            if not options & 0x01 or options & 0x10 or options & 0x0E:
                # ASCII encoding is required; SDMENCFileData is not modelled.
                raise _Reject(SW.PARAMETER)
            sdm = _Sdm(options, ar0 & 0xF, ar1 >> 4, ar1 & 0xF)
            for v in (sdm.ctr_ret, sdm.meta_read, sdm.file_read):
                if 4 < v < 0xE:
                    raise _Reject(SW.PARAMETER)

            def take() -> int:
                nonlocal rest
                if len(rest) < 3:
                    raise _Reject(SW.LENGTH)
                v = int.from_bytes(rest[:3], "little")
                rest = rest[3:]
                return v
            if sdm.meta_read == _FREE:
                if options & 0x80:
                    sdm.uid_offset = take()
                if options & 0x40:
                    sdm.ctr_offset = take()
            elif sdm.meta_read <= 4:
                sdm.picc_offset = take()
            if sdm.file_read != _NEVER:
                sdm.mac_input_offset = take()
                sdm.mac_offset = take()
            if options & 0x20:
                sdm.ctr_limit = take()
            size = len(f.data)
            spans = []
            if sdm.uid_offset is not None:
                spans.append((sdm.uid_offset, 14))
            if sdm.ctr_offset is not None:
                spans.append((sdm.ctr_offset, 6))
            if sdm.picc_offset is not None:
                spans.append((sdm.picc_offset, 32))
            if sdm.mac_offset is not None:
                spans.append((sdm.mac_offset, 16))
                if sdm.mac_input_offset > sdm.mac_offset:
                    raise _Reject(SW.PARAMETER)
            spans.sort()
            for (a, n), (b, _) in zip(spans, spans[1:]):
                if a + n > b:
                    raise _Reject(SW.PARAMETER)
            if any(a + n > size for a, n in spans):
                raise _Reject(SW.PARAMETER)
        if rest:
            raise _Reject(SW.LENGTH)
        return comm, read, write, rw, change, sdm

    # ------------------------------------------------------------------ native commands
    def _native(self, ins: int, apdu: bytes) -> bytes:
        if apdu[2] or apdu[3]:
            raise _Reject(SW.PARAMETER)
        if len(apdu) == 5:
            data = b""
            if apdu[4]:
                raise _Reject(SW.LENGTH)
        else:
            lc = apdu[4]
            if len(apdu) != 6 + lc or apdu[-1] != 0:
                raise _Reject(SW.LENGTH)
            data = apdu[5:5 + lc]
        handler = {
            0x71: self._auth_first,
            0xAF: self._auth_part2,
            0x5F: self._change_file_settings,
            0xC4: self._change_key,
            0xAD: self._read_data,
            0x8D: self._write_data,
            0xF5: self._get_file_settings,
            0x51: self._get_card_uid,
        }.get(ins)
        if handler is None:
            raise _Reject(SW.ILLEGAL_COMMAND, end_session=True)
        if not self._app:
            raise _Reject(SW.PERMISSION)
        return handler(data)

    def _auth_first(self, data: bytes) -> bytes:
        self._session = None
        if len(data) < 2 or len(data) != 2 + data[1]:
            raise _Reject(SW.LENGTH)
        key_no = data[0]
        if key_no > 4:
            raise _Reject(SW.NO_SUCH_KEY)
        rnd_b = self._rng(16)
        self._pending = (key_no, rnd_b)
        return _cbc(self.keys[key_no], bytes(16), rnd_b, True) + SW.MORE

    def _auth_part2(self, data: bytes) -> bytes:
        pending, self._pending = self._pending, None
        if pending is None:
            raise _Reject(SW.ILLEGAL_COMMAND)
        if len(data) != 32:
            raise _Reject(SW.LENGTH)
        key_no, rnd_b = pending
        key = self.keys[key_no]
        plain = _cbc(key, bytes(16), data, False)
        rnd_a, rnd_b_rot = plain[:16], plain[16:]
        if not hmac.compare_digest(rnd_b_rot, _rotl(rnd_b)):
            raise _Reject(SW.AUTH)
        ti = self._rng(4)
        mix = rnd_a[0:2] + bytes(x ^ y for x, y in zip(rnd_a[2:8], rnd_b[0:6])) + rnd_b[6:] + rnd_a[8:]
        enc = _cmac(key, b"\xA5\x5A\x00\x01\x00\x80" + mix)
        mac = _cmac(key, b"\x5A\xA5\x00\x01\x00\x80" + mix)
        self._session = _Session(key_no, enc, mac, ti, 0)
        resp = ti + _rotl(rnd_a) + bytes(6) + bytes(6)
        return _cbc(key, bytes(16), resp, True) + SW.OK

    def _full_in(self, cmd: int, data: bytes, header_len: int) -> tuple[bytes, bytes]:
        """Check the MAC of a CommMode.Full command and decrypt it: (header, plain data)."""
        s = self._session
        if s is None:
            raise _Reject(SW.PERMISSION)
        if len(data) < header_len + 8:
            raise _Reject(SW.LENGTH)
        header, enc, mac = data[:header_len], data[header_len:-8], data[-8:]
        want = _mact(s.mac, bytes((cmd,)) + s.ctr_bytes() + s.ti + header + enc)
        if not hmac.compare_digest(want, mac):
            raise _Reject(SW.INTEGRITY, end_session=True)
        if not enc or len(enc) % 16:
            raise _Reject(SW.LENGTH)
        plain = _cbc(s.enc, s.iv(b"\xA5\x5A", s.ctr), enc, False)
        stripped = plain.rstrip(b"\x00")
        if not stripped or stripped[-1] != 0x80 or len(plain) - len(stripped) >= 16:
            raise _Reject(SW.INTEGRITY, end_session=True)
        return header, stripped[:-1]

    def _mac_in(self, cmd: int, data: bytes) -> bytes:
        """Check the MAC of a CommMode.MAC command; return its plain part."""
        s = self._session
        if len(data) < 8:
            raise _Reject(SW.LENGTH)
        body, mac = data[:-8], data[-8:]
        want = _mact(s.mac, bytes((cmd,)) + s.ctr_bytes() + s.ti + body)
        if not hmac.compare_digest(want, mac):
            raise _Reject(SW.INTEGRITY, end_session=True)
        return body

    def _mac_out(self, data: bytes = b"", encrypt: bool = False) -> bytes:
        """Advance the command counter and build a MACed (optionally encrypted) response."""
        s = self._session
        s.ctr += 1
        if encrypt and data:
            padded = data + b"\x80" + bytes(-(len(data) + 1) % 16)
            data = _cbc(s.enc, s.iv(b"\x5A\xA5", s.ctr), padded, True)
        return data + _mact(s.mac, b"\x00" + s.ctr_bytes() + s.ti + data) + SW.OK

    def _file(self, number: int) -> _File:
        f = self.files.get(number)
        if f is None:
            raise _Reject(SW.FILE_NOT_FOUND)
        return f

    def _change_file_settings(self, data: bytes) -> bytes:
        if self._session is None:
            raise _Reject(SW.PERMISSION)
        if not data:
            raise _Reject(SW.LENGTH)
        f = self._file(data[0])
        if f.change == _NEVER or (f.change != _FREE and f.change != self._session.key_no):
            raise _Reject(SW.PERMISSION)
        _, plain = self._full_in(0x5F, data, 1)
        comm, read, write, rw, change, sdm = self._parse_settings(f, plain)
        f.comm_mode, f.read, f.write, f.rw, f.change, f.sdm = comm, read, write, rw, change, sdm
        self._snapshot = None
        return self._mac_out()

    def _change_key(self, data: bytes) -> bytes:
        s = self._session
        if s is None or s.key_no != 0:
            raise _Reject(SW.PERMISSION)
        if not data:
            raise _Reject(SW.LENGTH)
        key_no = data[0] & 0x3F
        if key_no > 4:
            raise _Reject(SW.NO_SUCH_KEY)
        _, plain = self._full_in(0xC4, data, 1)
        if key_no == s.key_no:
            if len(plain) != 17:
                raise _Reject(SW.LENGTH)
            self.keys[key_no] = plain[:16]
            self.key_versions[key_no] = plain[16]
            self._session = None  # the session key is gone; answer without MAC
            return SW.OK
        if len(plain) != 21:
            raise _Reject(SW.LENGTH)
        new = bytes(a ^ b for a, b in zip(plain[:16], self.keys[key_no]))
        crc = (binascii.crc32(new) ^ 0xFFFFFFFF).to_bytes(4, "little")
        if not hmac.compare_digest(crc, plain[17:21]):
            raise _Reject(SW.INTEGRITY, end_session=True)
        self.keys[key_no] = new
        self.key_versions[key_no] = plain[16]
        return self._mac_out()

    def _range(self, f: _File, data: bytes) -> tuple[int, int]:
        off = int.from_bytes(data[1:4], "little")
        n = int.from_bytes(data[4:7], "little")
        size = len(f.data)
        if n == 0:
            n = size - off
        if off > size or off + n > size:
            raise _Reject(SW.BOUNDARY)
        return off, n

    def _read_data(self, data: bytes) -> bytes:
        if len(data) != 7:
            raise _Reject(SW.LENGTH)
        f = self._file(data[0])
        if f.comm_mode != 0:
            raise _Reject(SW.PERMISSION)  # MAC/Full file reads are not modelled
        if not self._may_read_plain(f):
            raise _Reject(SW.PERMISSION)
        off, n = self._range(f, data)
        out = self._image(f)[off:off + n]
        if self._session is not None:
            self._session.ctr += 1
        return out + SW.OK

    def _write_data(self, data: bytes) -> bytes:
        if len(data) < 7:
            raise _Reject(SW.LENGTH)
        f = self._file(data[0])
        if f.comm_mode != 0:
            raise _Reject(SW.PERMISSION)
        if not self._may_write_plain(f):
            raise _Reject(SW.PERMISSION)
        off, n = self._range(f, data[:7])
        payload = data[7:]
        if len(payload) != n:
            raise _Reject(SW.LENGTH)
        f.data[off:off + n] = payload
        self._snapshot = None
        if self._session is not None:
            self._session.ctr += 1
        return SW.OK

    def _settings_bytes(self, f: _File) -> bytes:
        opt = f.comm_mode | (0x40 if f.sdm else 0)
        out = bytes((0x00, opt)) + f.access_bytes() + len(f.data).to_bytes(3, "little")
        return out + (f.sdm.encode() if f.sdm else b"")

    def _get_file_settings(self, data: bytes) -> bytes:
        if self._session is None:
            if len(data) != 1:
                raise _Reject(SW.LENGTH)
            return self._settings_bytes(self._file(data[0])) + SW.OK
        body = self._mac_in(0xF5, data)
        if len(body) != 1:
            raise _Reject(SW.LENGTH)
        return self._mac_out(self._settings_bytes(self._file(body[0])))

    def _get_card_uid(self, data: bytes) -> bytes:
        if self._session is None:
            raise _Reject(SW.PERMISSION)
        self._mac_in(0x51, data)
        return self._mac_out(self.uid, encrypt=True)
