# Runs on CPython (pytest helpers): PN532 frame builders that read like the user manual (nfcpy style).
"""``CMD("4A0100")``, ``RSP(...)``, ``ACK()``, ``NACK()``, ``ERR()``: whole PN532 frames."""

from __future__ import annotations


def _frame(tfi: int, hexdata: str) -> bytes:
    body = bytes([tfi]) + bytes.fromhex(hexdata)
    n = len(body)
    dcs = (-sum(body)) & 0xFF
    if n <= 255:
        return bytes([0, 0, 0xFF, n, (-n) & 0xFF]) + body + bytes([dcs, 0])
    hi, lo = n >> 8, n & 0xFF
    return bytes([0, 0, 0xFF, 0xFF, 0xFF, hi, lo, (-(hi + lo)) & 0xFF]) + body + bytes([dcs, 0])


def CMD(hexdata: str) -> bytes:
    """Host -> PN532 information frame (TFI D4) around the command code and parameters."""
    return _frame(0xD4, hexdata)


def RSP(hexdata: str) -> bytes:
    """PN532 -> host information frame (TFI D5) around the response code and data."""
    return _frame(0xD5, hexdata)


def ACK() -> bytes:
    return bytes.fromhex("0000FF00FF00")


def NACK() -> bytes:
    return bytes.fromhex("0000FFFF0000")


def ERR() -> bytes:
    """Application-level error frame (syntax error)."""
    return bytes.fromhex("0000FF01FF7F8100")
