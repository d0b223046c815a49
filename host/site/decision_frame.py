# Runs on CPython (host): a tap's DECISION frame built with two struct calls, byte for byte pk.encode's.
"""``decision_frame(seq, device_id, fields, mac)``: the DECISION packet that
``protocol.packet.encode(DECISION, seq, device_id, fields, mac, DOWN)`` builds, without its
generic per-field loop (which is written for both interpreters). It runs inside every tap's
transaction on the writer's thread, so its cost is paid by every tap of a batch in turn.

``fields`` are :func:`host.site.taps.decision_fields`'s (already clamped to the wire's
ranges); anything the two struct calls do not take (a value out of range, text that is not
UTF-8 or longer than 64 bytes, a sale id of 0 handled as the optional tail) goes through
``protocol.packet.encode``, which raises what it raises for it.

``decision_of(seq, device_id, tap_seq, d, mac)`` is ``decision_frame(seq, device_id,
decision_fields(tap_seq, d), mac)`` for an engine Decision without the fields dict: a
decision whose values are in the wire's ranges already (every one the engine makes) is packed
straight from it; any other goes the long way, through ``decision_fields`` (its clamps).
"""

from __future__ import annotations

import re
import struct
from functools import lru_cache
from typing import Any

from host.rules.engine import clip_text
from protocol import codes
from protocol import packet as pk

_FIXED = struct.Struct(">IBBHBiih")   # tap_seq .. uses (protocol/packet.py SPECS[DECISION])
_SALE = struct.Struct(">I")
_HEAD = struct.Struct(">BBIB")        # version, type, seq, device id length
_HEAD3 = struct.Struct(">BBI")        # the same without the length (decision_of's ids carry it)
_TEXT_MAX = 64
_DEVICE_ID = re.compile(rb"[A-Za-z0-9_.-]{1,16}")   # protocol/packet.py _valid_device_id
#: Reason name -> wire code (the first of a name, as ``codes.reason_code``).
_REASON = {name: i for i, name in reversed(list(enumerate(codes.REASONS)))}
_INTERNAL = codes.reason_code("internal")


def decision_fields(tap_seq: int, d: Any) -> dict[str, Any]:
    """DECISION body fields for an engine Decision, clamped to the wire's ranges."""
    def clamp(v: int, lo: int, hi: int) -> int:
        return max(lo, min(hi, int(v)))

    return {
        "tap_seq": tap_seq, "verdict": codes.GRANT if d.verdict == "grant" else codes.DENY,
        "reason": codes.reason_code(d.reason), "relay_ms": clamp(d.relay_ms, 0, 60000),
        "pattern": clamp(d.pattern, 0, 255),
        "balance": clamp(d.balance_fen, -0x80000000, 0x7FFFFFFF),
        "points": clamp(d.points, -0x80000000, 0x7FFFFFFF),
        "uses": clamp(d.uses_left, -1, 0x7FFF), "text": clip_text(d.text or ""),
        "sale_id": clamp(d.sale_id, 0, 0xFFFFFFFF),
    }


def decision_frame(seq: int, device_id: str, f: dict[str, Any], mac: Any) -> bytes:
    """See the module doc."""
    try:
        text = f["text"].encode("utf-8")
        dev = device_id.encode("ascii")
        if (len(text) > _TEXT_MAX or not 0 <= f["verdict"] <= 1 or f["relay_ms"] > 60000
                or f["uses"] < -1 or _DEVICE_ID.fullmatch(dev) is None):
            raise ValueError
        body = (_FIXED.pack(f["tap_seq"], f["verdict"], f["reason"], f["relay_ms"],
                            f["pattern"], f["balance"], f["points"], f["uses"])
                + bytes((len(text),)) + text)
        if f["sale_id"]:
            body += _SALE.pack(f["sale_id"])
        data = _HEAD.pack(pk.VERSION, pk.DECISION, seq, len(dev)) + dev \
            + len(body).to_bytes(2, "big") + body
    except (struct.error, UnicodeError, ValueError, TypeError):
        return pk.encode(pk.DECISION, seq, device_id, f, mac, pk.DOWN)
    return data + mac.tag(pk.DOWN, data)


@lru_cache(maxsize=4096)
def _dev_bytes(device_id: str) -> bytes | None:
    """The device id's length byte and ASCII bytes; None when it is not a valid id."""
    try:
        dev = device_id.encode("ascii")
    except UnicodeError:
        return None
    return bytes((len(dev),)) + dev if _DEVICE_ID.fullmatch(dev) else None


def decision_of(seq: int, device_id: str, tap_seq: int, d: Any, mac: Any) -> bytes:
    """See the module doc (``d``: a ``host.rules.engine.Decision``)."""
    dev, text, relay, pattern, uses = (_dev_bytes(device_id), d.text or "", d.relay_ms,
                                       d.pattern, d.uses_left)
    try:
        tb = text.encode("utf-8")
        if (dev is None or len(tb) > _TEXT_MAX or not 0 <= relay <= 60000
                or not 0 <= pattern <= 255 or not -1 <= uses <= 0x7FFF
                or type(relay) is not int or type(pattern) is not int
                or type(uses) is not int or type(d.balance_fen) is not int
                or type(d.points) is not int or type(d.sale_id) is not int):
            raise ValueError
        body = (_FIXED.pack(tap_seq, codes.GRANT if d.verdict == "grant" else codes.DENY,
                            _REASON.get(d.reason, _INTERNAL), relay, pattern, d.balance_fen,
                            d.points, uses)
                + bytes((len(tb),)) + tb)
        if d.sale_id:
            body += _SALE.pack(d.sale_id)
        data = _HEAD3.pack(pk.VERSION, pk.DECISION, seq) + dev \
            + len(body).to_bytes(2, "big") + body
    except (struct.error, UnicodeError, ValueError, TypeError):
        return decision_frame(seq, device_id, decision_fields(tap_seq, d), mac)
    return data + mac.tag(pk.DOWN, data)
