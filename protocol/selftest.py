# Runs on both CPython and MicroPython: checks every vector in protocol/vectors.json.
# `python -m protocol.selftest` / `micropython -m protocol.selftest`: prints "N vectors ok"
# (exit 0) or names each failing vector (exit 1).
import binascii
import json
import sys

from protocol import cobs, framing, mac, packet, replay, utf8
from protocol import errors as perr


def _unhex(s):
    return binascii.unhexlify(s)


def _hex(b):
    return binascii.hexlify(bytes(b)).decode()


def from_json(fields):
    # JSON cannot carry bytes: {"hex": ".."} stands for bytes, lists of them for uid lists.
    out = {}
    for k, v in fields.items():
        if isinstance(v, dict):
            out[k] = _unhex(v["hex"])
        elif isinstance(v, list):
            out[k] = [_unhex(x["hex"]) for x in v]
        else:
            out[k] = v
    return out


def _vectors_path():
    here = __file__
    i = here.rfind("/")
    return (here[:i] if i >= 0 else ".") + "/vectors.json"


def load():
    with open(_vectors_path()) as f:
        return json.load(f)


def _direction(v):
    return mac.UP if v["direction"] == "U" else mac.DOWN


def _check_hmac(v):
    got = _hex(mac.hmac_sha256(_unhex(v["key"]), _unhex(v["data"])))
    return None if got == v["mac"] else "hmac " + got


def _check_cobs(v):
    enc = _hex(cobs.encode(_unhex(v["raw"])))
    if enc != v["cobs"]:
        return "encode " + enc
    dec = _hex(cobs.decode(_unhex(v["cobs"])))
    return None if dec == v["raw"] else "decode " + dec


def _check_crc32(v):
    got = binascii.crc32(_unhex(v["data"])) & 0xFFFFFFFF
    return None if got == v["crc"] else "crc %08x" % got


def _check_packet(v):
    m = mac.Mac(_unhex(v["key"]))
    d = _direction(v)
    want = v["packet"]
    got = _hex(packet.encode(v["type"], v["seq"], v["device_id"], from_json(v["fields"]), m, d))
    if got != want:
        return "encode " + got
    p = packet.decode(_unhex(want), m, d)
    if p.type != v["type"] or p.seq != v["seq"] or p.device_id != v["device_id"]:
        return "header decoded as %r" % p
    if p.fields != from_json(v["fields"]):
        return "fields decoded as %r" % p.fields
    frame = _hex(framing.encode(_unhex(want)))
    if frame != v["frame"]:
        return "frame " + frame
    parser = framing.FrameParser()
    got_pkts = [_hex(x) for x in parser.feed(_unhex(v["frame"]))]
    return None if got_pkts == [want] else "parsed %r" % got_pkts


def _check_bad_packet(v):
    m = mac.Mac(_unhex(v["key"]))
    try:
        packet.decode(_unhex(v["packet"]), m, _direction(v))
    except perr.ProtocolError as e:
        name = type(e).__name__
        return None if name == v["error"] else "raised %s (%s)" % (name, e)
    return "accepted"


def _check_bad_frame(v):
    parser = framing.FrameParser()
    got_pkts = [_hex(x) for x in parser.feed(_unhex(v["stream"]))]
    if got_pkts != v["packets"]:
        return "parsed %r" % got_pkts
    return None if parser.dropped == v["dropped"] else "dropped %d" % parser.dropped


def _lax_text(raw):
    # The interpreter's own decoder: MicroPython's lets some invalid text through.
    try:
        return raw.decode("utf-8")
    except (UnicodeError, ValueError):
        return None


def _check_utf8(v):
    # utf8.valid, the decoder (as an EVENT text) and the encoder must all agree with CPython.
    raw = _unhex(v["hex"])
    ok = v["valid"]
    if utf8.valid(raw) != ok:
        return "utf8.valid says %r" % (not ok)
    body = b"\x01\x00\x00\x00\x00" + bytes([len(raw)]) + raw
    try:
        text = packet.decode_body(packet.EVENT, body)["text"]
    except perr.MalformedError:
        text = None
    if (text is not None) != ok:
        return "decode_body %s it" % ("accepted" if text is not None else "refused")
    text = _lax_text(raw)
    if ok or text is None:
        return None
    try:
        packet.encode_body(packet.EVENT, {"code": 1, "value": 0, "text": text})
    except perr.MalformedError:
        return None
    return "encode_body accepted it"


def _check_bad_fields(v):
    try:
        packet.encode_body(v["type"], from_json(v["fields"]))
    except perr.ProtocolError as e:
        name = type(e).__name__
        return None if name == v["error"] else "raised %s (%s)" % (name, e)
    return "accepted"


_OUTCOMES = {replay.NEW: "new", replay.LATE: "late", replay.RETRANSMIT: "retransmit"}


def _replay_check(w, seq, raw, is_tap):
    try:
        kind, reply = w.check(seq, raw, is_tap)
    except perr.ReplayError:
        return "replay"
    return _OUTCOMES[kind] + ("" if reply is None else ":" + _hex(reply))


def _check_replay(v):
    # Runs the steps on a fresh ReplayWindow; every "check" must give the expected outcome.
    w = replay.ReplayWindow(cache_size=v["cache_size"])
    i = 0
    for step in v["steps"]:
        op = step[0]
        if op == "accept":
            w.accept(step[1], _unhex(step[2]), _unhex(step[3]))
        elif op == "hello":
            w.hello(step[1], step[2])
        else:
            got = _replay_check(w, step[1], _unhex(step[2]), step[3])
            if got != step[4]:
                return "step %d: %s, not %s" % (i, got, step[4])
        i += 1
    return None


_CHECKS = {
    "hmac": _check_hmac, "cobs": _check_cobs, "crc32": _check_crc32, "packet": _check_packet,
    "bad_packet": _check_bad_packet, "bad_frame": _check_bad_frame, "utf8": _check_utf8,
    "bad_fields": _check_bad_fields, "replay": _check_replay,
}


def check(v):
    # Returns None when the vector holds, else a short description of what differs.
    fn = _CHECKS.get(v["kind"])
    if fn is None:
        return "unknown vector kind " + v["kind"]
    return fn(v)


def main(argv=None):
    vectors = load()
    failed = 0
    for v in vectors:
        try:
            why = check(v)
        except Exception as e:  # a vector that crashes the checker is a failure, named
            why = "crashed: %s: %s" % (type(e).__name__, e)
        if why is not None:
            failed += 1
            print("FAIL %s: %s" % (v["name"], why))
    if failed:
        print("%d of %d vectors failed" % (failed, len(vectors)))
        return 1
    print("%d vectors ok" % len(vectors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
