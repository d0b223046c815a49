# Runs on CPython (pytest): host/secure/sun.py against published test vectors (RFC 4493, AN10922, AN12196).
"""Every expected value in this file is a published vector, quoted with its source."""

import pytest

from host.errors import HostError
from host.secure.sun import (
    SecureCardError,
    SunFormatError,
    aes_cmac,
    decrypt_picc_data,
    diversify_aes128,
    mac_truncate,
    sdm_mac,
    sdm_session_mac_key,
    site_card_keys,
)

h = bytes.fromhex

# RFC 4493 "The AES-CMAC Algorithm", section 4 (Test Vectors), AES-128 key and Examples 1-4.
RFC4493_KEY = h("2b7e151628aed2a6abf7158809cf4f3c")
RFC4493_MSG = h("6bc1bee22e409f96e93d7e117393172a" "ae2d8a571e03ac9c9eb76fac45af8e51"
                "30c81c46a35ce411e5fbc1191a0a52ef" "f69f2445df4f9b17ad2b417be66c3710")


@pytest.mark.parametrize("length, tag", [
    (0, "bb1d6929e95937287fa37d129b756746"),   # Example 1: len = 0
    (16, "070a16b46b4d4144f79bdd9dd04a287c"),  # Example 2: len = 16
    (40, "dfa66747de9ae63030ca32611497c827"),  # Example 3: len = 40
    (64, "51f0bebf7e3b9d92fc49741779363cfe"),  # Example 4: len = 64
])
def test_aes_cmac_rfc4493_examples(length, tag):
    assert aes_cmac(RFC4493_KEY, RFC4493_MSG[:length]) == h(tag)


def test_aes_cmac_rejects_wrong_key_length():
    with pytest.raises(SecureCardError):
        aes_cmac(bytes(15), b"")


def test_an10922_aes128_example():
    # NXP AN10922 "Symmetric key diversification", section 2.2.1 (AES-128 key diversification
    # example): master key, UID, AID 3042F5, system identifier "NXP Abu" -> diversified key.
    key = diversify_aes128(h("00112233445566778899AABBCCDDEEFF"), h("04782E21801D80"),
                           aid=h("3042F5"), system_id=h("4E585020416275"))
    assert key == h("A8DD63A3B89D54B37CA802473FDA9175")


def test_an10922_input_length_limits():
    master = bytes(16)
    with pytest.raises(SecureCardError):
        diversify_aes128(master, b"", aid=b"", system_id=b"")
    with pytest.raises(SecureCardError):
        diversify_aes128(master, bytes(7), aid=bytes(3), system_id=bytes(22))  # 32 bytes
    assert len(diversify_aes128(master, bytes(7), aid=bytes(3), system_id=bytes(21))) == 16


def test_site_card_keys_are_distinct_per_key_and_card():
    master = bytes(range(16))
    a = site_card_keys(master, h("04DE5F1EACC040"))
    b = site_card_keys(master, h("04DE5F1EACC041"))
    rotated = site_card_keys(master, h("04DE5F1EACC040"), version=2)
    assert len(set(a.by_number())) == 5
    assert not set(a.by_number()) & set(b.by_number())
    assert not set(a.by_number()) & set(rotated.by_number())
    assert a == site_card_keys(master, h("04DE5F1EACC040"))
    assert "redacted" in repr(a) and a.app_master.hex() not in repr(a)
    with pytest.raises(SecureCardError):
        site_card_keys(master, h("04DE5F1E"))


# NXP AN12196 Rev. 1.8 "NTAG 424 DNA and NTAG 424 DNA TagTamper features and hints",
# SUN message example with all-zero K_SDMMetaRead and K_SDMFileRead: PICCData decryption
# (encrypted PICCData -> C7 04DE5F1EACC040 3D0000 DA5CF60941) and SDMMAC calculation
# (SV2 -> KSesSDMFileReadMAC 3FB5F6E3A807A03D5E3570ACE393776F; CMAC over a zero-length input
# E194C7EE12D9F7EE8A65C8331B704386 -> MACt 94EED9EE65337086).
AN12196_PICC = h("EF963FF7828658A599F3041510671E88")
AN12196_UID = h("04DE5F1EACC040")
AN12196_CTR = 0x3D  # SDMReadCtr 3D0000, LSB first
AN12196_SESSION_MAC_KEY = h("3FB5F6E3A807A03D5E3570ACE393776F")
AN12196_FULL_CMAC = h("E194C7EE12D9F7EE8A65C8331B704386")
AN12196_MACT = h("94EED9EE65337086")


def test_an12196_picc_data_decryption():
    assert decrypt_picc_data(bytes(16), AN12196_PICC) == (AN12196_UID, AN12196_CTR)


def test_an12196_session_mac_key():
    assert sdm_session_mac_key(bytes(16), AN12196_UID, AN12196_CTR) == AN12196_SESSION_MAC_KEY


def test_an12196_full_and_truncated_mac():
    assert aes_cmac(AN12196_SESSION_MAC_KEY, b"") == AN12196_FULL_CMAC
    assert mac_truncate(AN12196_FULL_CMAC) == AN12196_MACT
    assert sdm_mac(bytes(16), AN12196_UID, AN12196_CTR) == AN12196_MACT


def test_picc_data_with_wrong_key_is_refused():
    with pytest.raises(SunFormatError):
        decrypt_picc_data(h("01" * 16), AN12196_PICC)


def test_errors_share_the_host_root():
    assert issubclass(SunFormatError, SecureCardError)
    assert issubclass(SecureCardError, HostError)
