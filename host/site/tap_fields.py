# Runs on CPython (host): a TAP frame's body decoded with one struct call, protocol.packet.decode_body's fields.
"""``tap_fields(body)``: what ``protocol.packet.decode_body(TAP, body)`` returns for a TAP
body, without its generic per-field loop (written for both interpreters), on the reader
thread of every tap. A body the one struct call does not take plainly (a length or value out
of range, truncated, trailing bytes) goes through ``decode_body``, which raises what it
raises for it; so does every other frame type.
"""

from __future__ import annotations

import struct
from typing import Any

from protocol import packet as pk

_MID = struct.Struct(">BBBHII")   # sak, flags, direction, service, amount, device_time
_UID_LENS = (4, 7, 10)           # protocol/packet.py _UID_LENS
_SECURE_MAX = 96                 # SPECS[TAP]'s "secure" length
_FLAGS_MAX, _DIRECTION_MAX = 3, 2


def tap_fields(body: bytes) -> dict[str, Any]:
    """See the module doc."""
    n = len(body)
    ul = body[0] if n else 0
    o = 1 + ul
    if ul in _UID_LENS and n >= o + _MID.size + 1:
        sak, flags, direction, service, amount, device_time = _MID.unpack_from(body, o)
        o += _MID.size
        sl = body[o]
        end = o + 1 + sl
        rest = n - end
        if (flags <= _FLAGS_MAX and direction <= _DIRECTION_MAX and sl <= _SECURE_MAX
                and (rest == 0 or (rest == 4 and body[end:] != b"\0\0\0\0"))):
            return {"uid": body[1:1 + ul], "sak": sak, "flags": flags, "direction": direction,
                    "service": service, "amount": amount, "device_time": device_time,
                    "secure": body[o + 1:end],
                    "sale_id": int.from_bytes(body[end:], "big") if rest else 0}
    return pk.decode_body(pk.TAP, body)
