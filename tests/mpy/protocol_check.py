# Runs on both CPython and MicroPython: one deterministic protocol workout whose printed
# summary must be identical under both interpreters (tests/test_protocol_interpreters.py).
import binascii

from protocol import framing, mac, packet
from protocol import errors as perr
from protocol.selftest import from_json, load


class Lcg:
    # Tiny deterministic PRNG (same numbers on both interpreters; no `random` differences).
    def __init__(self, seed):
        self.s = seed & 0xFFFFFFFF

    def next(self, n):
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return self.s % n


def main():
    vectors = [v for v in load() if v["kind"] == "packet"]
    key = binascii.unhexlify(vectors[0]["key"])
    m = mac.Mac(key)
    pkts = [binascii.unhexlify(v["packet"]) for v in vectors]
    frames = [framing.encode(p) for p in pkts]
    stream = b"".join(frames)
    rng = Lcg(2026)

    # 1. Random chunking yields the same packets as one big feed.
    same = 0
    for trial in range(50):
        parser = framing.FrameParser()
        got = []
        i = 0
        while i < len(stream):
            n = 1 + rng.next(64)
            got.extend(parser.feed(stream[i:i + n]))
            i += n
        if got == pkts:
            same += 1
    print("chunking", same, "of 50")

    # 2. Bit flips: no forged packet is accepted; every frame not touched arrives.
    originals = set(pkts)
    forged = 0
    lost_clean = 0
    flips = 0
    for trial in range(200):
        buf = bytearray(stream)
        touched = set()
        for _ in range(1 + rng.next(3)):
            pos = rng.next(len(buf))
            buf[pos] ^= 1 << rng.next(8)
            touched.add(pos)
            flips += 1
        parser = framing.FrameParser()
        got = parser.feed(buf)
        for p in got:
            try:
                dec = packet.parse(p)
                d = mac.UP if dec.type in (packet.HELLO, packet.TAP, packet.EVENT, packet.ACK) else mac.DOWN
                packet.decode(p, m, d)
            except perr.ProtocolError:
                continue
            if p not in originals:
                forged += 1
        start = 0
        for f, p in zip(frames, pkts):
            end = start + len(f)  # f[0] and f[-1] are its delimiters
            clean = True
            for t in touched:
                if start <= t < end:
                    clean = False
            if clean and p not in got:
                lost_clean += 1
            start = end
    print("flips", flips, "forged", forged, "lost_clean", lost_clean)

    # 3. Line noise between frames (no byte of any frame touched) loses no frame.
    lost_noise = 0
    for trial in range(50):
        buf = bytearray()
        for f in frames:
            for _ in range(rng.next(4)):
                buf.append(1 + rng.next(255))
            buf.extend(f)
        got = framing.FrameParser().feed(buf)
        lost_noise += len(pkts) - len(got)
    print("noise lost", lost_noise)

    # 4. Round trip of every vector's fields.
    ok = 0
    for v in vectors:
        d = mac.UP if v["direction"] == "U" else mac.DOWN
        raw = packet.encode(v["type"], v["seq"], v["device_id"], from_json(v["fields"]), m, d)
        if packet.decode(raw, m, d).fields == from_json(v["fields"]):
            ok += 1
    print("roundtrip", ok, "of", len(vectors))

    # 5. TapWriter (firmware hot path) builds the same bytes as the generic encoder.
    tw = packet.TapWriter("gate-01", m)
    v = [x for x in vectors if x["name"] == "tap_uid10_secure"][0]
    f = from_json(v["fields"])
    got = bytes(tw.tap(v["seq"], f["uid"], f["sak"], f["flags"], f["direction"], f["service"], f["amount"], f["device_time"], f["secure"]))
    print("tapwriter", got == binascii.unhexlify(v["packet"]))
    # ... and the VOID in the same buffer, then a TAP again (the type byte is set each time).
    vv = [x for x in vectors if x["name"] == "void"][0]
    void = bytes(tw.void(vv["seq"], vv["fields"]["tap_seq"]))
    again = bytes(tw.tap(v["seq"], f["uid"], f["sak"], f["flags"], f["direction"], f["service"], f["amount"], f["device_time"], f["secure"]))
    print("voidwriter", void == binascii.unhexlify(vv["packet"]), again == got)
    fw = framing.FrameWriter()
    print("framewriter", bytes(fw.encode(got)) == framing.encode(got))


main()
