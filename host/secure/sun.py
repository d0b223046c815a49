# Runs on CPython (host): secure-card crypto — AES-CMAC, AN10922 key diversification, NTAG 424 DNA SUN verification.
"""Cards that prove themselves: NTAG 424 DNA Secure Unique NFC (SUN) messages.

A personalised tapkiosk card mirrors, on every read of its NDEF file, an encrypted PICCData
block (UID + read counter, AES with the SDM meta-read key) and a truncated AES-CMAC computed
with a session key derived from the SDM file-read key, the UID and the counter (NXP AN12196,
AES mode). This module checks such messages on the host; it is pure (no I/O, no store): the
caller keeps the last accepted counter per card. The key scheme, the URL template and the
binary layout of the TAP frame's secure field are documented in ``host/SECURE.md``.

References: RFC 4493 (AES-CMAC), NXP AN10922 (symmetric key diversification, AES-128),
NXP AN12196 (NTAG 424 DNA features and hints: SUN, SV2 session key, MACt truncation).
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from host.errors import HostError

__all__ = [
    "SecureCardError",
    "SunFormatError",
    "CardKeys",
    "SunMessage",
    "SunResult",
    "SunVerifier",
    "aes_cmac",
    "mac_truncate",
    "diversify_aes128",
    "site_card_keys",
    "parse_sun",
    "decrypt_picc_data",
    "sdm_session_mac_key",
    "sdm_mac",
    "sun_field",
    "TAPKIOSK_AID",
    "TAPKIOSK_SYSTEM_ID",
    "KEY_APP_MASTER",
    "KEY_SDM_FILE_READ",
    "KEY_SDM_META_READ",
    "SUN_FIELD_TAG",
]

KEY_LEN = 16
UID_LEN = 7

# Card key numbers used by tapkiosk (NTAG 424 DNA application keys 0..4).
KEY_APP_MASTER = 0     # AppMasterKey: ChangeKey, ChangeFileSettings
KEY_SDM_FILE_READ = 1  # SDMFileRead: session MAC key for the SUN CMAC
KEY_SDM_META_READ = 2  # SDMMetaRead: encrypts PICCData (UID + counter)
KEY_SPARE_3 = 3        # unused by tapkiosk, still diversified so no factory key remains
KEY_SPARE_4 = 4

# AN10922 diversification inputs for tapkiosk: the NTAG 424 DNA NDEF application's ISO
# DF-name tail stands in for a DESFire AID; the system identifier names the product.
TAPKIOSK_AID = bytes.fromhex("850101")
TAPKIOSK_SYSTEM_ID = b"tapkiosk"

# Binary secure field in the TAP frame: tag byte, encrypted PICCData, MACt, optional file data.
SUN_FIELD_TAG = 0x01
_PICC_LEN = 16
_MACT_LEN = 8

# PICCDataTag (AN12196 / NT4H2421Gx SDM): bit 7 UID mirrored, bit 6 counter mirrored,
# bits 3..0 UID length.
_PICC_TAG_UID = 0x80
_PICC_TAG_CTR = 0x40
_PICC_TAG_LEN_MASK = 0x0F

# SV2 prefix for the SDM session MAC key (AN12196, SUN MAC calculation).
_SV2_PREFIX = bytes.fromhex("3CC300010080")

_HEX = re.compile(rb"^[0-9A-Fa-f]*$")
_URL_PICC = re.compile(rb"[?&](?:p|picc_data|e)=([0-9A-Fa-f]{32})(?:&|$)")
_URL_CMAC = re.compile(rb"[?&](?:c|cmac)=([0-9A-Fa-f]{16})(?:&|$)")
_URL_ENC = re.compile(rb"[?&](?:f|enc)=([0-9A-Fa-f]+)(?:&|$)")


class SecureCardError(HostError):
    """A secure-card operation failed: bad key material, malformed SUN data, a card that
    refuses personalisation."""


class SunFormatError(SecureCardError):
    """SUN data that cannot be parsed (wrong length, not hex, missing field)."""


def _check_key(key: bytes, what: str = "key") -> bytes:
    """Return ``key`` as bytes if it is a 16-byte AES-128 key, else raise SecureCardError."""
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_LEN:
        raise SecureCardError("%s must be 16 bytes (AES-128)" % what)
    return bytes(key)


def aes_cmac(key: bytes, msg: bytes) -> bytes:
    """AES-CMAC (RFC 4493) of ``msg`` under a 16-byte ``key``; returns the full 16-byte tag."""
    c = CMAC(algorithms.AES(_check_key(key)))
    c.update(bytes(msg))
    return c.finalize()


def mac_truncate(full_mac: bytes) -> bytes:
    """NXP MACt truncation: the 8 odd-indexed bytes (1, 3, ..., 15) of a 16-byte CMAC."""
    if len(full_mac) != 16:
        raise SecureCardError("MACt truncation needs a 16-byte CMAC")
    return bytes(full_mac[1::2])


def _aes_ecb_decrypt_block(key: bytes, block: bytes) -> bytes:
    """Decrypt one 16-byte block with AES-128 (ECB == CBC with a zero IV for one block)."""
    d = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    return d.update(block) + d.finalize()


def diversify_aes128(master_key: bytes, uid: bytes, aid: bytes = TAPKIOSK_AID,
                     system_id: bytes = TAPKIOSK_SYSTEM_ID, key_no: int | None = None) -> bytes:
    """AES-128 key diversification per NXP AN10922 (CMAC based).

    The diversification input is ``M = uid || aid || system_id`` followed by one byte
    ``key_no`` when it is given (tapkiosk uses it to give every card key its own input).
    AN10922 computes ``CMAC(master_key, 0x01 || M || padding)`` where a ``0x01 || M`` shorter
    than 32 bytes is padded with ``80 00 ..`` to 32 bytes and the last block is XORed with
    subkey K2, and a 32-byte one is XORed with K1: that is exactly RFC 4493 AES-CMAC of
    ``0x01 || M``, which is how it is computed here. ``M`` must be 1..31 bytes.
    """
    master_key = _check_key(master_key, "master key")
    m = bytes(uid) + bytes(aid) + bytes(system_id)
    if key_no is not None:
        if not 0 <= key_no <= 0xFF:
            raise SecureCardError("key number out of range: %r" % (key_no,))
        m += bytes((key_no,))
    if not 1 <= len(m) <= 31:
        raise SecureCardError("AN10922 diversification input must be 1..31 bytes, got %d" % len(m))
    return aes_cmac(master_key, b"\x01" + m)


@dataclass(frozen=True)
class CardKeys:
    """The per-card AES keys of one tapkiosk NTAG 424 DNA card (all 16 bytes).

    ``app_master`` is card key 0, ``sdm_file_read`` key 1, ``sdm_meta_read`` key 2,
    ``spare3``/``spare4`` keys 3 and 4; ``version`` is the key version written with ChangeKey
    (the engine stores it per card so a site master-key rotation can be rolled out).
    """

    app_master: bytes
    sdm_file_read: bytes
    sdm_meta_read: bytes
    spare3: bytes
    spare4: bytes
    version: int = 1

    def by_number(self) -> list[bytes]:
        """The keys in card key-number order 0..4."""
        return [self.app_master, self.sdm_file_read, self.sdm_meta_read, self.spare3, self.spare4]

    def __repr__(self) -> str:
        """Never print key material."""
        return "CardKeys(version=%d, <5 keys redacted>)" % self.version


def site_card_keys(master_key: bytes, uid: bytes, version: int = 1) -> CardKeys:
    """Derive the per-card keys tapkiosk writes to a card with ``uid`` from the site master key.

    Each card key number ``n`` gets ``diversify_aes128(master_key, uid, TAPKIOSK_AID,
    TAPKIOSK_SYSTEM_ID + bytes((version,)), key_no=n)``: the key version is part of the system
    identifier so a rotated site key (new version) gives new card keys.
    """
    uid = bytes(uid)
    if len(uid) != UID_LEN:
        raise SecureCardError("NTAG 424 DNA UID must be 7 bytes, got %d" % len(uid))
    if not 0 <= version <= 0xFF:
        raise SecureCardError("key version out of range: %r" % (version,))
    sysid = TAPKIOSK_SYSTEM_ID + bytes((version,))
    k = [diversify_aes128(master_key, uid, TAPKIOSK_AID, sysid, key_no=n) for n in range(5)]
    return CardKeys(k[0], k[1], k[2], k[3], k[4], version)


@dataclass(frozen=True)
class SunMessage:
    """One SUN message: encrypted PICCData, the 8-byte MACt, optional encrypted file data and
    the bytes the card MACed (empty for tapkiosk cards: SDMMACInputOffset == SDMMACOffset)."""

    picc_data: bytes
    cmac: bytes
    enc_file_data: bytes = b""
    mac_input: bytes = b""

    def to_field(self) -> bytes:
        """The binary TAP secure field: 0x01 || picc_data(16) || cmac(8) || enc_file_data."""
        return bytes((SUN_FIELD_TAG,)) + self.picc_data + self.cmac + self.enc_file_data


def sun_field(picc_data: bytes, cmac: bytes, enc_file_data: bytes = b"") -> bytes:
    """Build the binary TAP secure field from its parts (validated like ``parse_sun``)."""
    return parse_sun(bytes((SUN_FIELD_TAG,)) + bytes(picc_data) + bytes(cmac)
                     + bytes(enc_file_data)).to_field()


def parse_sun(data: bytes | str) -> SunMessage:
    """Parse SUN data in either form and return a SunMessage.

    * Binary TAP secure field: ``0x01 | picc_data (16) | cmac (8) | enc_file_data (n*16)``.
    * NDEF URL mirror (text or ASCII bytes, with or without the scheme): the query parameters
      ``p``/``picc_data``/``e`` (32 hex digits) and ``c``/``cmac`` (16 hex digits), optionally
      ``f``/``enc`` (encrypted file data, a multiple of 32 hex digits).

    Raises SunFormatError when neither form fits.
    """
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    data = bytes(data)
    if not data:
        raise SunFormatError("no SUN data")
    if data[0] == SUN_FIELD_TAG:
        body = data[1:]
        if len(body) < _PICC_LEN + _MACT_LEN or (len(body) - _PICC_LEN - _MACT_LEN) % 16:
            raise SunFormatError("binary SUN field has a bad length (%d bytes)" % len(data))
        return SunMessage(body[:_PICC_LEN], body[_PICC_LEN:_PICC_LEN + _MACT_LEN],
                          body[_PICC_LEN + _MACT_LEN:])
    p = _URL_PICC.search(data)
    c = _URL_CMAC.search(data)
    if p is None or c is None:
        raise SunFormatError("SUN URL needs picc_data (32 hex) and cmac (16 hex) parameters")
    f = _URL_ENC.search(data)
    enc = b""
    if f is not None:
        if len(f.group(1)) % 32:
            raise SunFormatError("encrypted file data must be whole AES blocks")
        enc = bytes.fromhex(f.group(1).decode())
    return SunMessage(bytes.fromhex(p.group(1).decode()), bytes.fromhex(c.group(1).decode()), enc)


def decrypt_picc_data(meta_read_key: bytes, enc: bytes) -> tuple[bytes, int]:
    """Decrypt AES-mode PICCData with the SDM meta-read key; return ``(uid, counter)``.

    PICCData = PICCDataTag || UID (7) || SDMReadCtr (3, little-endian) || random padding,
    encrypted as one AES block with a zero IV. The tag must say "UID mirrored, counter
    mirrored, UID length 7", which is what tapkiosk configures; anything else (including the
    noise a wrong key gives) raises SunFormatError.
    """
    meta_read_key = _check_key(meta_read_key, "SDM meta-read key")
    if len(enc) != _PICC_LEN:
        raise SunFormatError("encrypted PICCData must be 16 bytes")
    plain = _aes_ecb_decrypt_block(meta_read_key, bytes(enc))
    tag = plain[0]
    if not (tag & _PICC_TAG_UID and tag & _PICC_TAG_CTR and tag & _PICC_TAG_LEN_MASK == UID_LEN):
        raise SunFormatError("PICCDataTag 0x%02X is not UID(7)+counter mirroring" % tag)
    uid = plain[1:1 + UID_LEN]
    counter = int.from_bytes(plain[1 + UID_LEN:1 + UID_LEN + 3], "little")
    return uid, counter


def sdm_session_mac_key(file_read_key: bytes, uid: bytes, counter: int) -> bytes:
    """KSesSDMFileReadMAC = CMAC(K_SDMFileRead, SV2), SV2 = 3CC300010080 || UID || SDMReadCtr
    (3 bytes little-endian)."""
    if len(uid) != UID_LEN:
        raise SecureCardError("UID must be 7 bytes")
    if not 0 <= counter <= 0xFFFFFF:
        raise SecureCardError("SDM read counter is 24 bits")
    sv2 = _SV2_PREFIX + bytes(uid) + counter.to_bytes(3, "little")
    return aes_cmac(_check_key(file_read_key, "SDM file-read key"), sv2)


def sdm_mac(file_read_key: bytes, uid: bytes, counter: int, mac_input: bytes = b"") -> bytes:
    """The 8-byte SDMMAC a card mirrors: MACt(CMAC(KSesSDMFileReadMAC, mac_input))."""
    return mac_truncate(aes_cmac(sdm_session_mac_key(file_read_key, uid, counter), mac_input))


@dataclass(frozen=True)
class SunResult:
    """Outcome of one SUN verification.

    ``reason`` is one of the protocol reason names "ok", "cloned", "card_replay",
    "secure_required"; ``uid`` is the decrypted UID (uppercase hex, "" when unknown) and
    ``counter`` the decrypted SDM read counter (-1 when unknown); ``detail`` says precisely
    what failed, for logs (never shown to members).
    """

    ok: bool
    reason: str
    uid: str
    counter: int
    detail: str = ""


class SunVerifier:
    """Checks SUN data against an enrolled card. Pure: no store, no clock, no I/O.

    The engine calls ``verify`` inside the tap transaction and, when ``ok`` is true, stores
    ``result.counter`` as the card's new last counter in the same transaction (see
    ``host/SECURE.md``).
    """

    def __init__(self, master_key: bytes | None = None) -> None:
        """``master_key``: optional site master key, used by ``keys_for`` to derive card keys."""
        self._master = None if master_key is None else _check_key(master_key, "master key")

    def keys_for(self, uid_hex: str, version: int = 1) -> CardKeys:
        """Per-card keys for an enrolled UID (hex) from the site master key given at creation."""
        if self._master is None:
            raise SecureCardError("SunVerifier has no site master key")
        return site_card_keys(self._master, _uid_bytes(uid_hex), version)

    def verify(self, uid_hex_enrolled: str, secure: bytes | str | None, keys: CardKeys,
               last_counter: int) -> SunResult:
        """Verify SUN data read from a card that anticollision reported as ``uid_hex_enrolled``.

        ``secure`` is the TAP frame's secure field (binary) or the NDEF URL; ``keys`` the
        enrolled card's keys; ``last_counter`` the last accepted counter (0 for a card never
        seen after personalisation, or the counter ``personalise`` returned). Returns a
        SunResult; never raises for bad card data (only for bad arguments from the caller).

        Order of checks: presence -> format -> PICCData decrypts to a well-formed block ->
        decrypted UID == enrolled UID -> MAC (constant-time) -> counter > last_counter.
        A wrong MAC, an undecryptable PICCData or another UID all mean the card could not
        prove it is the enrolled card: "cloned".
        """
        enrolled = _uid_bytes(uid_hex_enrolled)
        if not secure:
            return SunResult(False, "secure_required", "", -1, "no SUN data")
        try:
            msg = parse_sun(secure)
        except SunFormatError as e:
            return SunResult(False, "cloned", "", -1, "malformed: %s" % e)
        try:
            uid, counter = decrypt_picc_data(keys.sdm_meta_read, msg.picc_data)
        except SunFormatError as e:
            return SunResult(False, "cloned", "", -1, "picc_data: %s" % e)
        uid_hex = uid.hex().upper()
        # UIDs are public, so a plain comparison leaks nothing; the MAC compare below is the
        # secret one.
        if uid != enrolled:
            return SunResult(False, "cloned", uid_hex, counter, "uid mismatch")
        expected = sdm_mac(keys.sdm_file_read, uid, counter, msg.mac_input)
        if not hmac.compare_digest(expected, msg.cmac):
            return SunResult(False, "cloned", uid_hex, counter, "bad mac")
        if counter <= last_counter:
            return SunResult(False, "card_replay", uid_hex, counter,
                             "counter %d <= last %d" % (counter, last_counter))
        return SunResult(True, "ok", uid_hex, counter, "")


def _uid_bytes(uid_hex: str) -> bytes:
    """Parse an enrolled UID given as hex (any case, optional ':' or spaces) into 7 bytes."""
    if not isinstance(uid_hex, str):
        raise SecureCardError("UID must be given as hex text")
    s = uid_hex.replace(":", "").replace(" ", "")
    if len(s) != 2 * UID_LEN or not _HEX.match(s.encode()):
        raise SecureCardError("secure cards have 7-byte UIDs, got %r" % uid_hex)
    return bytes.fromhex(s)
