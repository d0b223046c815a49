# Runs on CPython (host): a frame's structure parsed with one struct call, protocol.packet.parse's Packet.
"""``parse(data)``: the :class:`protocol.packet.Packet` that ``protocol.packet.parse(data)``
returns, for the daemon's every received frame, without its per-byte device id loop (written
for both interpreters): the header in one struct call, the device id checked once per id
(remembered, as decision_frame.py's ids). Anything it does not take as a well-formed frame
goes through ``protocol.packet.parse``, which raises what it raises for it, so a bad frame is
refused with the same error (tests/test_frame_parse.py compares both on random frames).
"""

from __future__ import annotations

import re
import struct
from functools import lru_cache

from protocol import packet as pk
from protocol.mac import MAC_LEN

_HEAD = struct.Struct(">BIB")   # type, seq, device id length (after the version byte)
_MIN = 9 + 1 + MAC_LEN          # protocol/packet.py: _HEADER_MIN + 1 + _MAC_LEN
_DEVICE_ID = re.compile(rb"[A-Za-z0-9_.-]{1,16}")   # protocol/packet.py _valid_device_id


@lru_cache(maxsize=4096)
def _device_id(dev: bytes) -> str | None:
    """The device id's text; None when it is not a valid id."""
    return dev.decode() if _DEVICE_ID.fullmatch(dev) else None


def parse(data: bytes) -> pk.Packet:
    """See the module doc."""
    n = len(data)
    if type(data) is bytes and _MIN <= n <= pk.MAX_PACKET and data[0] == pk.VERSION:
        ptype, seq, dl = _HEAD.unpack_from(data, 1)
        off = 7 + dl
        if off + 2 <= n:
            dev = _device_id(data[7:off])
            bl = (data[off] << 8) | data[off + 1]
            if (dev is not None and bl <= pk.MAX_BODY and off + 2 + bl + MAC_LEN == n
                    and pk.spec(ptype) is not None):
                return pk.Packet(ptype, seq, dev, data[off + 2:off + 2 + bl], data)
    return pk.parse(data)
