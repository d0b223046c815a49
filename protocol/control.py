# Runs on both CPython and MicroPython: the CONFIG and SALE message tables, and the UID-list field kind only CONFIG uses.
#
# protocol/packet.py loads this module with the first such frame it parses or encodes (as it
# loads protocol/ota.py), so a reader between two CONFIGs does not keep these tables and this
# code on its heap.
from protocol import packet as P

_U32 = 0xFFFFFFFF

# CONFIG.allow_op
ALLOW_KEEP = 0
ALLOW_REPLACE = 1
ALLOW_ADD = 2
ALLOW_REMOVE = 3

NAMES = {P.CONFIG: "CONFIG", P.SALE: "SALE"}
DIRECTIONS = {P.CONFIG: P.DOWN, P.SALE: P.DOWN}

# Flat, as protocol/packet.py SPECS: name, kind, lo, hi for each field in turn.
SPECS = {
    P.CONFIG: (
        "cfg_version", "I", 0, _U32,
        "relay_ms", "H", 0, 60000,
        "debounce_ms", "H", 0, 60000,
        "offline_after_s", "H", 1, 3600,
        "heartbeat_s", "H", 1, 3600,
        "allow_op", "B", 0, 3,
        "allow", "L", 0, 24,  # u8 count + count * (u8 length + uid bytes); lo, hi bound the count
    ),
    P.SALE: (
        "sale_id", "I", 1, _U32,
        "amount", "I", 0, _U32,
        "service", "H", 0, 0xFFFF,
        "timeout_s", "H", 0, 3600,
        "text", "s", 0, 64,
    ),
}


def encode_uids(out, ptype, name, v, lo, hi):
    # Appends the UID list v to the bytearray out.
    if not lo <= len(v) <= hi:
        raise P._err("out_of_range", ptype, name, "count", len(v), lo, hi)
    out.append(len(v))
    for uid in v:
        if len(uid) not in P._UID_LENS:
            raise P._err("uid_len", ptype, name, len(uid))
        out.append(len(uid))
        out.extend(uid)


def decode_uids(body, i, ptype, name, lo, hi):
    # The UID list at body[i:] -> (list of bytes, index after it).
    n = len(body)
    if i >= n:
        raise P._err("bad", ptype, name, "truncated")
    count = body[i]
    i += 1
    if not lo <= count <= hi:
        raise P._err("out_of_range", ptype, name, "count", count, lo, hi)
    uids = []
    for _ in range(count):
        if i >= n:
            raise P._err("bad", ptype, name, "truncated")
        ln = body[i]
        i += 1
        if ln not in P._UID_LENS:
            raise P._err("uid_len", ptype, name, ln)
        if i + ln > n:
            raise P._err("bad", ptype, name, "truncated")
        uids.append(bytes(body[i:i + ln]))
        i += ln
    return uids, i
