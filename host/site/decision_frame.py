# Runs on CPython (host): a tap's DECISION frame built with two struct calls, byte for byte pk.encode's.
"""``decision_frame(seq, device_id, fields, mac)``: the DECISION packet that
``protocol.packet.encode(DECISION, seq, device_id, fields, mac, DOWN)`` builds, without its
generic per-field loop (which is written for both interpreters). It runs inside every tap's
transaction on the writer's thread, so its cost is paid by every tap of a batch in turn.

``fields`` are :func:`host.site.taps.decision_fields`'s (already clamped to the wire's
ranges); anything the two struct calls do not take (a value out of range, text that is not
UTF-8 or longer than 64 bytes, a sale id of 0 handled as the optional tail) goes through
``protocol.packet.encode``, which raises what it raises for it.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from protocol import packet as pk

_FIXED = struct.Struct(">IBBHBiih")   # tap_seq .. uses (protocol/packet.py SPECS[DECISION])
_SALE = struct.Struct(">I")
_HEAD = struct.Struct(">BBIB")        # version, type, seq, device id length
_TEXT_MAX = 64
_DEVICE_ID = re.compile(rb"[A-Za-z0-9_.-]{1,16}")   # protocol/packet.py _valid_device_id


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
