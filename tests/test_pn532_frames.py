# Runs on CPython (pytest): PN532 frame builders written like UM0701-02, and their own checks.
"""Frame builders shared by the PN532 tests: ``CMD("4A0100")``, ``RSP("4B00")``, ``ACK()``.

Other test modules import them (``from pn532_frames import CMD, RSP, ACK``); the checks
below pin the builders to frames printed in the PN532 user manual and used by nfcpy.
"""

from __future__ import annotations

from pn532_frames import ACK, CMD, ERR, NACK, RSP, _frame  # noqa: F401


def test_builders_match_frames_from_the_manual_and_nfcpy():
    # GetFirmwareVersion and its answer for a PN532 V1.6 (UM0701-02 7.2.2).
    assert CMD("02") == bytes.fromhex("0000FF02FED4022A00")
    assert RSP("0332010607") == bytes.fromhex("0000FF06FAD50332010607E800")
    # SAMConfiguration normal mode, as nfcpy's pn532 init sends it.
    assert CMD("14010000") == bytes.fromhex("0000FF05FBD4140100001700")
    assert RSP("15") == bytes.fromhex("0000FF02FED5151600")


def test_extended_frame_for_more_than_255_bytes():
    data = "00" + "AB" * 262
    f = CMD(data)
    assert f[:5] == bytes.fromhex("0000FFFFFF")
    n = f[5] << 8 | f[6]
    assert n == 264 and (f[5] + f[6] + f[7]) & 0xFF == 0
    assert sum(f[8:8 + n + 1]) & 0xFF == 0 and f[-1] == 0
