# Runs on CPython (pytest): host/store/uid.py's canonical_uid, the one spelling of a card UID.
import pytest

from host.store.uid import canonical_uid
from host.errors import InputError


@pytest.mark.parametrize("text,uid", [
    ("04a1b2c3d4e5f6", "04A1B2C3D4E5F6"),
    ("  DE:AD:BE:EF \n", "DEADBEEF"),
    ("0102030405060708090a", "0102030405060708090A"),
])
def test_hex_uids_of_4_7_10_bytes_come_out_upper_case(text, uid):
    assert canonical_uid(text) == uid


@pytest.mark.parametrize("text", [
    "DEADBE\ufb00",        # U+FB00 LATIN SMALL LIGATURE FF: upper-cases to "FF"
    "\ufb00\ufb00\ufb00\ufb00",
    "DEADBEE\uff26",       # FULLWIDTH F
    "DEADBEEF0",           # 9 digits
    "DEADBEEG",
    "",
    None,
])
def test_anything_but_ascii_hex_is_refused_with_one_message(text):
    with pytest.raises(InputError, match="bad card UID .*use 8, 14 or 20 hex digits"):
        canonical_uid(text)
