# Runs on both CPython and MicroPython: the exceptions protocol/packet.py raises for a bad body or type, with their texts.
#
# Few distinct texts (each is an object on the board's heap); packet.py imports this module
# with the first bad packet it meets (a reader whose frames are good never loads it).
from protocol.errors import MalformedError, UnsupportedError
from protocol.packet import MAX_BODY, NAMES


def bad(ptype, name, what):
    # The MalformedError for field `name` of a `ptype` body.
    return MalformedError("%s.%s: %s" % (NAMES[ptype], name, what))


def out_of_range(ptype, name, what, v, lo, hi):
    # what: "length", "count" or "value"; v is not in lo..hi.
    return bad(ptype, name, "%s %r not in %d..%d" % (what, v, lo, hi))


def uid_len(ptype, name, n):
    return bad(ptype, name, "uid length %d is not 4, 7 or 10" % n)


def unknown(ptype):
    return UnsupportedError("unknown message type 0x%02x" % ptype)


def too_long(n):
    return MalformedError("body of %d bytes exceeds %d" % (n, MAX_BODY))
