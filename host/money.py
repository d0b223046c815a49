# Runs on CPython (host): strict yuan <-> integer fen conversion. Money is never a float.
"""Money helpers: amounts are integer fen (1 yuan = 100 fen) everywhere in the host."""

import re

from host.errors import InputError

# Digits are ASCII only (``\d`` would accept full-width and other Unicode digits).
_YUAN = re.compile(r"(0|[1-9][0-9]{0,11})(?:\.([0-9]{1,2}))?")

#: Largest amount accepted from text: 999,999,999,999.99 yuan, well inside SQLite's int64.
MAX_FEN = 99_999_999_999_999


def parse_yuan(text: str) -> int:
    """Parse a non-negative yuan amount with at most two decimals into integer fen.

    ``"12.50" -> 1250``, ``"3" -> 300``, ``"0.5" -> 50``. Rejects, with ``InputError``:
    empty strings, signs, exponents, ``nan``/``inf``, more than two decimals, leading zeros,
    surrounding spaces, non-ASCII digits and anything that is not a ``str``.
    """
    if not isinstance(text, str):
        raise InputError(f"amount must be a string like 12.50, got {type(text).__name__}")
    m = _YUAN.fullmatch(text)
    if m is None:
        shown = text if len(text) <= 24 else text[:21] + "..."
        raise InputError(
            f"bad amount {shown!r}: use yuan with at most two decimals, e.g. 12.50")
    whole, frac = m.group(1), m.group(2) or ""
    return int(whole) * 100 + int((frac + "00")[:2])


def format_fen(fen: int) -> str:
    """Format integer fen as yuan with two decimals: ``1250 -> "12.50"``, ``-5 -> "-0.05"``."""
    if type(fen) is not int:
        if isinstance(fen, bool) or not isinstance(fen, int):
            raise TypeError(f"fen must be an int, got {type(fen).__name__}")
        fen = int(fen)
    if fen >= 0:
        return f"{fen // 100}.{fen % 100:02d}"
    return f"-{-fen // 100}.{-fen % 100:02d}"
