# Runs on CPython (host): a device key's frame MAC with its hash states made once, protocol.mac.Mac's bytes.
"""``HostMac(key)``: :class:`protocol.mac.Mac` (HMAC-SHA256 of ``direction || data``, first
16 bytes) for the daemon, which tags or checks every frame of a device with the same key:
the inner hash after ``ipad || direction`` and the outer hash after ``opad`` are computed
once per key and direction and copied per frame (two SHA-256 blocks less per frame, no pads
rebuilt). protocol/mac.py stays the one definition, written for both interpreters; this
gives the same bytes (tests/test_hostmac.py)."""

from __future__ import annotations

import hashlib
from typing import Any

from protocol.mac import DOWN, MAC_LEN, UP, Mac


class HostMac(Mac):
    """See the module doc; ``tag(direction, data)`` as :class:`protocol.mac.Mac`'s."""

    def __init__(self, key: bytes) -> None:
        super().__init__(key)   # checks the key's length, makes the pads
        self._outer = hashlib.sha256(self._opad)
        self._inner: dict[bytes, Any] = {d: hashlib.sha256(self._ipad + d) for d in (UP, DOWN)}

    def tag(self, direction: bytes, data: bytes) -> bytes:
        base = self._inner.get(direction)
        if base is None:
            return super().tag(direction, data)
        inner = base.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:MAC_LEN]
