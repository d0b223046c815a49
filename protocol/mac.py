# Runs on both CPython and MicroPython: HMAC-SHA256 over hashlib (MicroPython has no hmac module).
import hashlib

_BLOCK = 64

MAC_LEN = 16
UP = b"U"    # device -> host
DOWN = b"D"  # host -> device


def _pads(key):
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = bytes(key) + bytes(_BLOCK - len(key))
    ipad = bytes(b ^ 0x36 for b in key)
    opad = bytes(b ^ 0x5C for b in key)
    return ipad, opad


def hmac_sha256(key, msg):
    # RFC 2104 HMAC with SHA-256; checked against RFC 4231 and CPython's hmac.
    ipad, opad = _pads(key)
    inner = hashlib.sha256(ipad)
    inner.update(msg)
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


class Mac:
    # Keyed MAC for one device: pads computed once, then one call per packet.
    def __init__(self, key):
        if len(key) != 32:
            from protocol.errors import ProtocolError
            raise ProtocolError("device key must be 32 bytes, got %d" % len(key))
        self._ipad, self._opad = _pads(key)

    def tag(self, direction, data):
        # First 16 bytes of HMAC-SHA256(key, direction || data).
        inner = hashlib.sha256(self._ipad)
        inner.update(direction)
        inner.update(data)
        outer = hashlib.sha256(self._opad)
        outer.update(inner.digest())
        return outer.digest()[:MAC_LEN]


def equal(a, b):
    # Constant-time comparison: time depends on the length only, never on where bytes differ.
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0
