# Runs on CPython (host): the one spelling of a card UID the store keeps (upper-case hex).
"""Card UIDs as the store keeps them: 8, 14 or 20 upper-case hex digits (4, 7 or 10 bytes)."""

from __future__ import annotations

import re

from host.errors import InputError

_UID_RE = re.compile(r"(?:[0-9A-F]{8}|[0-9A-F]{14}|[0-9A-F]{20})")


def canonical_uid(text: str) -> str:
    """Upper-case hex UID of 4, 7 or 10 bytes (8, 14 or 20 hex digits); InputError otherwise.

    Colons and surrounding whitespace are dropped. Only ASCII is looked at before upper-casing:
    ``str.upper`` maps some non-ASCII letters to hex digits (U+FB00 "ﬀ" becomes "FF").
    """
    uid = text.strip().replace(":", "") if isinstance(text, str) else ""
    if not uid.isascii() or not _UID_RE.fullmatch(uid.upper()):
        raise InputError(f"bad card UID {text!r}: use 8, 14 or 20 hex digits, e.g. 04A1B2C3D4E5F6")
    return uid.upper()
