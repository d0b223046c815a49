# Runs on both CPython and MicroPython: packet header, MAC and message bodies of wire protocol v1.
#
# packet = ver u8 | type u8 | seq u32 | dev_len u8 | device_id | body_len u16 | body | mac[16]
# mac    = HMAC-SHA256(device_key, direction || packet-without-mac)[:16]
# All integers big-endian. protocol/README.md has the byte diagrams.
import struct

from protocol.compat import const
from protocol.errors import AuthError, MalformedError, UnsupportedError
from protocol.mac import DOWN, UP, equal  # noqa: F401 (UP, DOWN re-exported)
from protocol.utf8 import valid as _valid_utf8

VERSION = const(1)
_MAX_DEVICE_ID = const(16)
MAX_BODY = const(255)
_HEADER_MIN = const(9)  # ver, type, seq, dev_len, body_len with an empty device id
MAX_PACKET = const(296)  # 9 + 16 + 255 + 16
_MAC_LEN = const(16)  # protocol/mac.py MAC_LEN

HELLO = const(0x01)
WELCOME = const(0x02)
TAP = const(0x03)
DECISION = const(0x04)
PING = const(0x05)
PONG = const(0x06)
EVENT = const(0x07)
CONFIG = const(0x08)
ERROR = const(0x09)
ACK = const(0x0A)
VOID = const(0x0B)
SALE = const(0x0C)
# 0x0D..0x0F: free.
# CONFIG, SALE (in protocol/control.py) and 0x10..0x13, STATUS and the app-update messages (in
# protocol/ota.py): their tables are loaded with the first such frame (a reader that only taps
# never keeps them on its heap).
_OTA_FIRST = const(0x10)
_OTA_LAST = const(0x13)

NAMES = {
    HELLO: "HELLO", WELCOME: "WELCOME", TAP: "TAP", DECISION: "DECISION", PING: "PING",
    PONG: "PONG", EVENT: "EVENT", ERROR: "ERROR", ACK: "ACK", VOID: "VOID",
}
# Which direction may send each type: U = device -> host, D = host -> device.
DIRECTIONS = {
    HELLO: UP, WELCOME: DOWN, TAP: UP, DECISION: DOWN, PING: UP + DOWN, PONG: UP + DOWN,
    EVENT: UP, ERROR: DOWN, ACK: UP, VOID: UP,
}

# TAP.flags
FLAG_OFFLINE = const(0x01)  # the device granted this tap from its offline allow-list
# TAP.direction
DIR_NONE = const(0)
DIR_IN = const(1)
DIR_OUT = const(2)
# CONFIG.allow_op: protocol/control.py (ALLOW_*).

# Module globals cost the board a dict slot each (and this module's dict is the largest one
# it keeps): names used only here are `_NAME = const(...)`, which MicroPython folds into the
# code and never stores (the dict stays at 53 slots or fewer, the size below 97).
# Body field kinds: struct codes for integers, and three variable-length kinds.
_STR = const("s")    # u8 length + UTF-8 text
_BYTES = const("b")  # u8 length + raw bytes
_UIDS = const("L")   # u8 count + count * (u8 length + uid bytes)

# Bounds above 2**30 are big ints on a 32-bit port (an object each): named once, shared. Not
# const(): a const big int is a new constant object at every use (about 2 KB more heap here).
_U32 = 0xFFFFFFFF
_I32_LO = -0x80000000
_I32_HI = 0x7FFFFFFF

# Field specs, flat: name, kind, lo, hi for each field in turn (one tuple per type, not one
# per field: about 1 KB less board heap). For _STR/_BYTES lo/hi bound the byte length; for
# integers they bound the value; for _UIDS they bound the count. fields(ptype) gives the
# (name, kind, lo, hi) tuples.
SPECS = {
    HELLO: (
        "fw", _STR, 0, 32,
        "proto", "B", 1, 255,
        "kind", "B", 1, 3,
        "caps", "H", 0, 0xFFFF,
        "boot", "H", 0, 0xFFFF,
        "reset", "B", 0, 255,
        "resend_floor", "I", 0, _U32,
    ),
    WELCOME: (
        "hello_seq", "I", 0, _U32,
        "host_time", "I", 0, _U32,
        "heartbeat_s", "H", 1, 3600,
        "offline_after_s", "H", 1, 3600,
        "cfg_version", "I", 0, _U32,
    ),
    TAP: (
        "uid", _BYTES, 4, 10,
        "sak", "B", 0, 255,
        "flags", "B", 0, 3,
        "direction", "B", 0, 2,
        "service", "H", 0, 0xFFFF,
        "amount", "I", 0, _U32,
        "device_time", "I", 0, _U32,
        "secure", _BYTES, 0, 96,
        "sale_id", "I", 1, _U32,
    ),
    DECISION: (
        "tap_seq", "I", 0, _U32,
        "verdict", "B", 0, 1,
        "reason", "B", 0, 255,
        "relay_ms", "H", 0, 60000,
        "pattern", "B", 0, 255,
        "balance", "i", _I32_LO, _I32_HI,
        "points", "i", _I32_LO, _I32_HI,
        "uses", "h", -1, 0x7FFF,
        "text", _STR, 0, 64,
        "sale_id", "I", 1, _U32,
    ),
    PING: (
        "nonce", "I", 0, _U32,
    ),
    PONG: (
        "nonce", "I", 0, _U32,
        "host_time", "I", 0, _U32,
    ),
    EVENT: (
        "code", "B", 1, 255,
        "value", "I", 0, _U32,
        "text", _STR, 0, 64,
    ),
    ERROR: (
        "ref_seq", "I", 0, _U32,
        "code", "B", 1, 255,
        "text", _STR, 0, 64,
    ),
    ACK: (
        "ref_seq", "I", 0, _U32,
        "code", "B", 0, 255,
    ),
    VOID: (
        "tap_seq", "I", 0, _U32,
    ),
}
# Optional last field (absent = 0): TAP and DECISION carry `sale_id` only when a sale is being
# paid, so frames without a sale are byte for byte those of readers that know no SALE.
_TAIL = const("sale_id")
_UID_LENS = (4, 7, 10)


def _tail(ptype):
    return _TAIL if ptype == TAP or ptype == DECISION else None


def spec(ptype):
    # The body spec of ptype (None: unknown); the types of protocol/control.py and
    # protocol/ota.py load on first use.
    s = SPECS.get(ptype)
    if s is None:
        if ptype == CONFIG or ptype == SALE:
            from protocol import control as m
        elif _OTA_FIRST <= ptype <= _OTA_LAST:
            from protocol import ota as m
        else:
            return None
        SPECS.update(m.SPECS)
        NAMES.update(m.NAMES)
        DIRECTIONS.update(m.DIRECTIONS)
        s = SPECS.get(ptype)
    return s


def fields(ptype):
    # The (name, kind, lo, hi) of each body field of ptype, in wire order (host and tests).
    sp = spec(ptype)
    return [tuple(sp[j:j + 4]) for j in range(0, len(sp), 4)]


def _valid_device_id(dev):
    if not 1 <= len(dev) <= _MAX_DEVICE_ID:
        return False
    for c in dev:
        # [A-Za-z0-9_.-]
        if not (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c in (45, 46, 95)):
            return False
    return True


def _err(fn, *args):
    # The exception for a bad packet, built by protocol/badpacket.py (few distinct texts; that
    # code loads with the first bad packet, not at boot).
    from protocol import badpacket
    return getattr(badpacket, fn)(*args)


def _dev_bytes(device_id):
    dev = device_id.encode() if isinstance(device_id, str) else bytes(device_id)
    if not _valid_device_id(dev):
        raise MalformedError("bad device id %r" % device_id)
    return dev


def _text_bytes(ptype, name, text):
    # str -> UTF-8 bytes, strict on both interpreters (a MicroPython str can hold a surrogate).
    try:
        raw = text.encode("utf-8")
    except UnicodeError:
        raw = None
    if raw is None or not _valid_utf8(raw):
        raise _err("bad", ptype, name, "not UTF-8")
    return raw


def encode_body(ptype, fields):
    # fields: dict name -> value. Missing fields are an error; values are range-checked.
    sp = spec(ptype)
    if sp is None:
        raise _err("unknown", ptype)
    out = bytearray()
    tail = _tail(ptype)
    for j in range(0, len(sp), 4):
        name, kind, lo, hi = sp[j], sp[j + 1], sp[j + 2], sp[j + 3]
        if name == tail and not fields.get(name):
            break
        if name not in fields:
            raise _err("bad", ptype, name, "missing")
        v = fields[name]
        if kind == _STR or kind == _BYTES:
            raw = _text_bytes(ptype, name, v) if kind == _STR else bytes(v)
            if not lo <= len(raw) <= hi:
                raise _err("out_of_range", ptype, name, "length", len(raw), lo, hi)
            if name == "uid" and len(raw) not in _UID_LENS:
                raise _err("uid_len", ptype, name, len(raw))
            out.append(len(raw))
            out.extend(raw)
        elif kind == _UIDS:
            from protocol.control import encode_uids
            encode_uids(out, ptype, name, v, lo, hi)
        else:
            if not isinstance(v, int) or not lo <= v <= hi:
                raise _err("out_of_range", ptype, name, "value", v, lo, hi)
            out.extend(struct.pack(">" + kind, v))
    if len(out) > MAX_BODY:
        raise _err("too_long", len(out))
    return bytes(out)


def decode_body(ptype, body):
    # Strict: every byte accounted for, every value in range, text valid UTF-8.
    sp = spec(ptype)
    if sp is None:
        raise _err("unknown", ptype)
    fields = {}
    i = 0
    n = len(body)
    tail = _tail(ptype)
    for j in range(0, len(sp), 4):
        name, kind, lo, hi = sp[j], sp[j + 1], sp[j + 2], sp[j + 3]
        if name == tail and i == n:
            fields[name] = 0
            break
        if kind == _STR or kind == _BYTES:
            if i >= n:
                raise _err("bad", ptype, name, "truncated")
            ln = body[i]
            i += 1
            if not lo <= ln <= hi:
                raise _err("out_of_range", ptype, name, "length", ln, lo, hi)
            if i + ln > n:
                raise _err("bad", ptype, name, "truncated")
            raw = bytes(body[i:i + ln])
            i += ln
            if kind == _STR:
                if not _valid_utf8(raw):
                    raise _err("bad", ptype, name, "not UTF-8")
                fields[name] = raw.decode("utf-8")
            else:
                if name == "uid" and ln not in _UID_LENS:
                    raise _err("uid_len", ptype, name, ln)
                fields[name] = raw
        elif kind == _UIDS:
            from protocol.control import decode_uids
            fields[name], i = decode_uids(body, i, ptype, name, lo, hi)
        else:
            size = struct.calcsize(kind)
            if i + size > n:
                raise _err("bad", ptype, name, "truncated")
            v = struct.unpack_from(">" + kind, body, i)[0]
            i += size
            if not lo <= v <= hi:
                raise _err("out_of_range", ptype, name, "value", v, lo, hi)
            fields[name] = v
    if i != n:
        raise MalformedError("%s: %d trailing bytes" % (NAMES[ptype], n - i))
    return fields


class Packet:
    # A parsed packet. `fields` is filled by decode(); `raw` is the whole packet with its MAC.
    def __init__(self, ptype, seq, device_id, body, raw):
        self.type = ptype
        self.seq = seq
        self.device_id = device_id
        self.body = body
        self.raw = raw
        self.fields = None

    @property
    def name(self):
        return NAMES.get(self.type, "0x%02x" % self.type)


def parse(data):
    # Structure only (no MAC check, no body decode): lets the host find the device key first.
    n = len(data)
    if n < _HEADER_MIN + 1 + _MAC_LEN:
        raise MalformedError("packet too short (%d bytes)" % n)
    if n > MAX_PACKET:
        raise MalformedError("packet too long (%d bytes)" % n)
    if data[0] != VERSION:
        raise UnsupportedError("protocol version %d not supported" % data[0])
    ptype = data[1]
    if spec(ptype) is None:
        raise _err("unknown", ptype)
    seq = int.from_bytes(bytes(data[2:6]), "big")
    dl = data[6]
    dev = bytes(data[7:7 + dl])
    if dl == 0 or dl > _MAX_DEVICE_ID or not _valid_device_id(dev):
        raise MalformedError("bad device id %r" % dev)
    off = 7 + dl
    bl = (data[off] << 8) | data[off + 1]
    if bl > MAX_BODY:
        raise _err("too_long", bl)
    if off + 2 + bl + _MAC_LEN != n:
        raise MalformedError("length fields do not match packet size")
    body = bytes(data[off + 2:off + 2 + bl])
    return Packet(ptype, seq, dev.decode(), body, bytes(data))


def verify(packet, mac, direction):
    # mac: a Mac for the device's key. Raises AuthError on mismatch.
    raw = packet.raw
    if not equal(mac.tag(direction, raw[:-_MAC_LEN]), raw[-_MAC_LEN:]):
        raise AuthError("bad MAC from %s" % packet.device_id)


def decode(data, mac, direction):
    # Parse, authenticate, check the direction may send this type, then decode the body.
    p = parse(data)
    verify(p, mac, direction)
    if direction not in DIRECTIONS[p.type]:
        raise MalformedError("%s may not be sent in this direction" % NAMES[p.type])
    p.fields = decode_body(p.type, p.body)
    return p


def encode(ptype, seq, device_id, fields, mac, direction):
    # Whole packet (with MAC) for a message given as a dict of fields.
    return encode_raw(ptype, seq, device_id, encode_body(ptype, fields), mac, direction)


def encode_raw(ptype, seq, device_id, body, mac, direction):
    dev = _dev_bytes(device_id)
    if not 0 <= seq <= 0xFFFFFFFF:
        raise MalformedError("seq out of range")
    if len(body) > MAX_BODY:
        raise _err("too_long", len(body))
    head = bytearray(7 + len(dev) + 2)
    head[0] = VERSION
    head[1] = ptype
    struct.pack_into(">I", head, 2, seq)
    head[6] = len(dev)
    head[7:7 + len(dev)] = dev
    struct.pack_into(">H", head, 7 + len(dev), len(body))
    data = bytes(head) + bytes(body)
    return data + mac.tag(direction, data)


# uid (u8 length + 10) + sak..device_time + secure length (14) + secure (96) + sale_id (4).
_TAP_BODY_MAX = const(1 + 10 + 14 + 96 + 4)


class TapWriter:
    # Firmware hot path: builds TAP packets, and the VOID that gives up on one, in one buffer
    # allocated once. Returns a memoryview into that buffer (valid until the next call: the
    # caller stores or sends it first).
    def __init__(self, device_id, mac):
        dev = _dev_bytes(device_id)
        self._mac = mac
        # The largest TAP this device can send: uid 10, secure 96, sale_id, and the MAC.
        self._buf = bytearray(9 + len(dev) + _TAP_BODY_MAX + _MAC_LEN)
        self._mv = memoryview(self._buf)
        b = self._buf
        b[0] = VERSION
        b[6] = len(dev)
        b[7:7 + len(dev)] = dev
        self._body = 9 + len(dev)

    def tap(self, seq, uid, sak, flags, direction, service, amount, device_time, secure=b"",
            sale_id=0):
        ul = len(uid)
        sl = len(secure)
        if ul not in _UID_LENS or sl > 96:
            raise MalformedError("TAP: bad uid or secure length")
        b = self._buf
        b[1] = TAP
        struct.pack_into(">I", b, 2, seq)
        i = self._body
        b[i] = ul
        b[i + 1:i + 1 + ul] = uid
        i += 1 + ul
        struct.pack_into(">BBBHIIB", b, i, sak, flags, direction, service, amount, device_time, sl)
        i += 14
        if sl:
            b[i:i + sl] = secure
            i += sl
        if sale_id:
            struct.pack_into(">I", b, i, sale_id)
            i += 4
        return self._seal(i)

    def void(self, seq, tap_seq):
        # VOID: the device gives up on tap_seq (body: tap_seq u32).
        b = self._buf
        b[1] = VOID
        struct.pack_into(">I", b, 2, seq)
        struct.pack_into(">I", b, self._body, tap_seq)
        return self._seal(self._body + 4)

    def _seal(self, i):
        # body_len, then the MAC over everything before it.
        b = self._buf
        struct.pack_into(">H", b, self._body - 2, i - self._body)
        b[i:i + _MAC_LEN] = self._mac.tag(UP, self._mv[:i])
        return self._mv[:i + _MAC_LEN]
