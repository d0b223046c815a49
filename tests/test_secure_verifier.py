# Runs on CPython (pytest): SunVerifier and parse_sun — forms, reasons, bit flips, wrong keys.
"""SunVerifier on the published AN12196 SUN example (all-zero keys, UID 04DE5F1EACC040,
counter 61, picc_data EF963FF7828658A599F3041510671E88, cmac 94EED9EE65337086; NXP AN12196
Rev. 1.8, SUN example with K_SDMMetaRead = K_SDMFileRead = 0) and on mutations of it."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host.secure.sun import (
    SUN_FIELD_TAG,
    CardKeys,
    SecureCardError,
    SunFormatError,
    SunVerifier,
    parse_sun,
    sun_field,
)
from protocol.codes import REASONS

h = bytes.fromhex
PICC = h("EF963FF7828658A599F3041510671E88")
CMAC = h("94EED9EE65337086")
UID_HEX = "04DE5F1EACC040"
ZERO_KEYS = CardKeys(*([bytes(16)] * 5))
FIELD = bytes((SUN_FIELD_TAG,)) + PICC + CMAC


def test_published_example_is_accepted_in_binary_form():
    r = SunVerifier().verify(UID_HEX, FIELD, ZERO_KEYS, 60)
    assert (r.ok, r.reason, r.uid, r.counter) == (True, "ok", UID_HEX, 61)


@pytest.mark.parametrize("url", [
    "https://t.tapkiosk.example/t?p=EF963FF7828658A599F3041510671E88&c=94EED9EE65337086",
    "https://x.example/?picc_data=ef963ff7828658a599f3041510671e88&cmac=94eed9ee65337086",
    "x.example/ntag424?e=EF963FF7828658A599F3041510671E88&c=94EED9EE65337086",
])
def test_url_forms_are_accepted(url):
    assert parse_sun(url) == parse_sun(FIELD)
    assert SunVerifier().verify(UID_HEX, url.encode(), ZERO_KEYS, 0).ok


def test_uid_is_compared_in_any_hex_spelling():
    assert SunVerifier().verify("04:de:5f:1e:ac:c0:40", FIELD, ZERO_KEYS, 0).ok


def test_reasons_are_protocol_reason_names():
    v = SunVerifier()
    reasons = {v.verify(UID_HEX, FIELD, ZERO_KEYS, 0).reason,
               v.verify(UID_HEX, FIELD, ZERO_KEYS, 61).reason,
               v.verify(UID_HEX, b"", ZERO_KEYS, 0).reason,
               v.verify("04DE5F1EACC041", FIELD, ZERO_KEYS, 0).reason}
    assert reasons == {"ok", "card_replay", "secure_required", "cloned"}
    assert reasons <= set(REASONS)


@pytest.mark.parametrize("last, ok, reason", [(60, True, "ok"), (61, False, "card_replay"),
                                              (62, False, "card_replay")])
def test_counter_must_be_fresh(last, ok, reason):
    r = SunVerifier().verify(UID_HEX, FIELD, ZERO_KEYS, last)
    assert (r.ok, r.reason, r.counter) == (ok, reason, 61)


@pytest.mark.parametrize("secure", [None, b""])
def test_missing_sun_data_is_secure_required(secure):
    r = SunVerifier().verify(UID_HEX, secure, ZERO_KEYS, 0)
    assert (r.ok, r.reason) == (False, "secure_required")


def test_other_enrolled_uid_is_cloned():
    r = SunVerifier().verify("04DE5F1EACC041", FIELD, ZERO_KEYS, 0)
    assert (r.ok, r.reason, r.uid, r.detail) == (False, "cloned", UID_HEX, "uid mismatch")


def test_wrong_file_read_key_is_cloned():
    keys = CardKeys(bytes(16), h("01" * 16), bytes(16), bytes(16), bytes(16))
    r = SunVerifier().verify(UID_HEX, FIELD, keys, 0)
    assert (r.ok, r.reason, r.detail) == (False, "cloned", "bad mac")


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=8 * (len(FIELD) - 1) - 1))
def test_any_bit_flip_in_picc_data_or_cmac_is_refused(bit):
    mutated = bytearray(FIELD)
    mutated[1 + bit // 8] ^= 1 << (bit % 8)
    r = SunVerifier().verify(UID_HEX, bytes(mutated), ZERO_KEYS, 0)
    assert (r.ok, r.reason) == (False, "cloned")


@pytest.mark.parametrize("bad", [
    b"\x01" + PICC,                            # no MAC
    b"\x01" + PICC + CMAC + b"\x00" * 5,       # file data not whole blocks
    b"\x02" + PICC + CMAC,                     # unknown tag, not a URL either
    b"https://t.tapkiosk.example/t?p=EF96&c=94EED9EE65337086",
    b"https://t.tapkiosk.example/t?c=94EED9EE65337086",
])
def test_malformed_data_is_refused(bad):
    with pytest.raises(SunFormatError):
        parse_sun(bad)
    r = SunVerifier().verify(UID_HEX, bad, ZERO_KEYS, 0)
    assert (r.ok, r.reason) == (False, "cloned") and r.detail.startswith("malformed")


def test_binary_field_round_trip_with_file_data():
    enc = bytes(range(32))
    msg = parse_sun(sun_field(PICC, CMAC, enc))
    assert (msg.picc_data, msg.cmac, msg.enc_file_data) == (PICC, CMAC, enc)
    assert msg.to_field() == FIELD + enc


@pytest.mark.parametrize("uid", ["04DE5F1EACC0", "04DE5F1EACC04G", 42])
def test_bad_enrolled_uid_is_a_caller_error(uid):
    with pytest.raises(SecureCardError):
        SunVerifier().verify(uid, FIELD, ZERO_KEYS, 0)
