# Runs on CPython (developer machine): regenerates protocol/vectors.json from an independent reference encoder.
"""Regenerate protocol/vectors.json (CPython only).

The vectors are the contract between firmware and host: the same file is checked by
`python -m protocol.selftest` and `micropython -m protocol.selftest`. MACs and CRCs are computed
here with CPython's own `hmac` and `binascii`, not with protocol/, so the file is an independent
reference; run this only when the wire format changes on purpose, and review the diff.

Usage: ``python -m tools.gen_vectors [--check]``; ``--check`` writes nothing and exits 1 when
the file differs from what this script would write.
"""

from __future__ import annotations

import argparse
import binascii
import hashlib
import hmac
import json
import struct
import sys
from pathlib import Path
from typing import Any

from protocol import cobs, ota, packet as P

OUT = Path(__file__).resolve().parent.parent / "protocol" / "vectors.json"
KEY = bytes(range(32))
DEV = "gate-01"


def ref_packet(ptype: int, seq: int, dev: str, body: bytes, key: bytes, direction: bytes) -> bytes:
    """Build a packet from the README's byte diagram with CPython's hmac (an independent path)."""
    data = bytes([1, ptype]) + struct.pack(">I", seq) + bytes([len(dev)]) + dev.encode()
    data += struct.pack(">H", len(body)) + body
    return data + hmac.new(key, direction + data, hashlib.sha256).digest()[:16]


def ref_frame(pkt: bytes) -> bytes:
    """0x00, COBS(packet || crc32 big-endian), 0x00: a delimiter on both sides (protocol/README.md)."""
    return b"\x00" + cobs.encode(pkt + struct.pack(">I", binascii.crc32(pkt))) + b"\x00"


def ref_utf8(raw: bytes) -> bool:
    """CPython's strict decoder is the reference for protocol/utf8.py."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# Boundaries of RFC 3629's table, and what MicroPython's decoder accepts but CPython does not.
UTF8_CASES: list[tuple[str, bytes]] = [
    ("empty", b""), ("ascii", b"A\x7f"), ("u0080", b"\xc2\x80"), ("u07ff", b"\xdf\xbf"),
    ("u0800", b"\xe0\xa0\x80"), ("ud7ff", b"\xed\x9f\xbf"), ("ue000", b"\xee\x80\x80"),
    ("uffff", b"\xef\xbf\xbf"), ("u10000", b"\xf0\x90\x80\x80"), ("u10ffff", b"\xf4\x8f\xbf\xbf"),
    ("chinese", "欢迎".encode()),
    ("surrogate_d800", b"\xed\xa0\x80"), ("surrogate_dfff", b"\xed\xbf\xbf"),
    ("overlong_c080", b"\xc0\x80"), ("overlong_c1bf", b"\xc1\xbf"), ("overlong_e08080", b"\xe0\x80\x80"),
    ("overlong_e09fbf", b"\xe0\x9f\xbf"), ("overlong_f0808080", b"\xf0\x80\x80\x80"),
    ("overlong_f08fbfbf", b"\xf0\x8f\xbf\xbf"), ("above_max_f4908080", b"\xf4\x90\x80\x80"),
    ("f5", b"\xf5\x80\x80\x80"), ("ff", b"\xff"), ("lone_continuation", b"\x80"),
    ("truncated_2", b"A\xc2"), ("truncated_3", b"\xe6\xac"), ("truncated_4", b"\xf0\x90\x80"),
    ("bad_continuation", b"\xc2A"),
]


# ReplayWindow scenarios (README "Sequence numbers and replays"), (name, cache_size, steps):
# ["accept", seq, raw, reply] | ["hello", seq, resend_floor] |
# ["check", seq, raw, is_tap, expect], expect "new", "late", "replay" or "retransmit:<reply>".
REPLAY_CASES: list[tuple[str, int, list[list[Any]]]] = [
    ("replay_retransmission_gets_cached_reply", 16, [
        ["check", 5, "05", False, "new"], ["accept", 5, "05", "a5"],
        ["check", 5, "05", False, "retransmit:a5"], ["check", 5, "06", False, "replay"],
        ["check", 4, "04", False, "replay"], ["check", 6, "06", False, "new"]]),
    ("replay_late_tap_above_floor", 16, [
        ["accept", 100, "64", "00"], ["check", 50, "32", True, "replay"], ["hello", 120, 40],
        ["check", 50, "32", True, "late"], ["check", 40, "28", True, "late"],
        ["check", 39, "27", True, "replay"], ["check", 50, "32", False, "replay"]]),
    ("replay_floor_above_hello_ignored", 16, [
        ["accept", 100, "64", "00"], ["hello", 120, 500], ["check", 50, "32", True, "replay"]]),
    ("replay_cache_bounded", 4, [["accept", i, "%02x" % i, "%02x" % (0x80 + i)] for i in range(1, 10)] + [
        ["check", 9, "09", False, "retransmit:89"], ["check", 6, "06", False, "retransmit:86"],
        ["check", 5, "05", False, "replay"], ["check", 10, "0a", False, "new"]]),
]

# Fields encode_body must refuse, with the error it must raise.
_DECISION = dict(tap_seq=1, verdict=1, reason=0, relay_ms=0, pattern=0, balance=0, points=0, uses=-1, text="")
_TAP = dict(uid=bytes(4), sak=0, flags=0, direction=0, service=0, amount=0, device_time=0, secure=b"")
BAD_FIELDS: list[tuple[str, int, dict[str, Any]]] = [
    ("fields_verdict_range", P.DECISION, {**_DECISION, "verdict": 3}),
    ("fields_relay_ms_range", P.DECISION, {**_DECISION, "relay_ms": 60001}),
    ("fields_missing", P.PING, {}),
    ("fields_uid_3_bytes", P.TAP, {**_TAP, "uid": b"\x01\x02\x03"}),
    ("fields_secure_97_bytes", P.TAP, {**_TAP, "secure": bytes(97)}),
    ("fields_text_65_bytes", P.EVENT, dict(code=1, value=0, text="x" * 65)),
    ("fields_allow_25_uids", P.CONFIG, dict(cfg_version=1, relay_ms=0, debounce_ms=0, offline_after_s=1, heartbeat_s=1, allow_op=1, allow=[bytes(4)] * 25)),
    ("fields_body_over_255", P.CONFIG, dict(cfg_version=1, relay_ms=0, debounce_ms=0, offline_after_s=1, heartbeat_s=1, allow_op=1, allow=[bytes(10)] * 24)),
]


def rule_vectors() -> list[dict[str, Any]]:
    """Replay-window scenarios and fields the encoder must refuse."""
    vectors: list[dict[str, Any]] = []
    for name, size, steps in REPLAY_CASES:
        vectors.append(dict(kind="replay", name=name, cache_size=size, steps=steps))
    for name, ptype, fields in BAD_FIELDS:
        vectors.append(dict(kind="bad_fields", name=name, type=ptype, fields=to_json(fields), error="MalformedError"))
    return vectors


def to_json(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in fields.items():
        if isinstance(v, bytes):
            out[k] = {"hex": v.hex()}
        elif isinstance(v, list):
            out[k] = [{"hex": x.hex()} for x in v]
        else:
            out[k] = v
    return out


MESSAGES: list[tuple[str, int, int, bytes, dict[str, Any]]] = [
    ("hello", P.HELLO, 0x00030000, P.UP, dict(fw="tapkiosk-fw 0.1.0", proto=1, kind=1, caps=0x0003, boot=3, reset=1, resend_floor=0x00020005)),
    ("welcome", P.WELCOME, 0x00010001, P.DOWN, dict(hello_seq=0x00030000, host_time=1795000000, heartbeat_s=30, offline_after_s=10, cfg_version=7)),
    ("tap_uid4", P.TAP, 0x00030001, P.UP, dict(uid=bytes.fromhex("DEADBEEF"), sak=0x08, flags=0, direction=1, service=0, amount=0, device_time=1795000001, secure=b"", sale_id=0)),
    ("tap_uid7_amount", P.TAP, 0x00030002, P.UP, dict(uid=bytes.fromhex("04A1B2C3D4E5F6"), sak=0x00, flags=0, direction=0, service=0, amount=1250, device_time=1795000002, secure=b"", sale_id=0)),
    ("tap_offline_resent", P.TAP, 0x00020005, P.UP, dict(uid=bytes.fromhex("04A1B2C3D4E5F6"), sak=0x08, flags=3, direction=1, service=0, amount=0, device_time=1794999000, secure=b"", sale_id=0)),
    ("tap_uid10_secure", P.TAP, 0x00030003, P.UP, dict(uid=bytes.fromhex("0102030405060708090A"), sak=0x20, flags=0, direction=0, service=2, amount=0, device_time=0, secure=bytes.fromhex("01EF963FF7828658A599F3041510671E8894EED9EE65337086"), sale_id=0)),
    ("decision_grant", P.DECISION, 0x00010002, P.DOWN, dict(tap_seq=0x00030001, verdict=1, reason=0, relay_ms=800, pattern=1, balance=12345, points=678, uses=11, text="欢迎 Li · 11 washes left", sale_id=0)),
    ("decision_deny", P.DECISION, 0x00010003, P.DOWN, dict(tap_seq=0x00030002, verdict=0, reason=5, relay_ms=0, pattern=2, balance=350, points=-1, uses=-1, text="余额不足 3.50", sale_id=0)),
    ("ping", P.PING, 0x00030004, P.UP, dict(nonce=0xCAFEBABE)),
    ("ping_down", P.PING, 0x00010004, P.DOWN, dict(nonce=1)),
    ("pong", P.PONG, 0x00010005, P.DOWN, dict(nonce=0xCAFEBABE, host_time=1795000005)),
    ("event", P.EVENT, 0x00030005, P.UP, dict(code=2, value=3, text="pn532 timeout")),
    ("config", P.CONFIG, 0x00010006, P.DOWN, dict(cfg_version=8, relay_ms=800, debounce_ms=1500, offline_after_s=10, heartbeat_s=30, allow_op=1, allow=[bytes.fromhex("DEADBEEF"), bytes.fromhex("04A1B2C3D4E5F6")])),
    ("config_empty", P.CONFIG, 0x00010007, P.DOWN, dict(cfg_version=9, relay_ms=500, debounce_ms=1000, offline_after_s=5, heartbeat_s=15, allow_op=0, allow=[])),
    ("error", P.ERROR, 0x00010008, P.DOWN, dict(ref_seq=0x00030006, code=4, text="replay")),
    ("ack", P.ACK, 0x00030007, P.UP, dict(ref_seq=0x00010006, code=0)),
    ("void", P.VOID, 0x00030008, P.UP, dict(tap_seq=0x00030002)),
    ("decision_voided", P.DECISION, 0x00010009, P.DOWN, dict(tap_seq=0x00030002, verdict=0, reason=20, relay_ms=0, pattern=0, balance=12345, points=678, uses=-1, text="已撤销 voided", sale_id=0)),
    # Sales (protocol/README.md "Sales"): SALE arms (amount > 0) or clears (amount 0) a sale on a
    # reader; the TAP that pays it and its DECISION carry the sale id as an optional last field.
    ("sale", P.SALE, 0x0001000A, P.DOWN, dict(sale_id=42, amount=2400, service=0, timeout_s=60, text="Pay 24.00 请刷卡")),
    ("sale_wash_program", P.SALE, 0x0001000B, P.DOWN, dict(sale_id=43, amount=4000, service=2, timeout_s=90, text="Premium wash 40.00")),
    ("sale_cancel", P.SALE, 0x0001000C, P.DOWN, dict(sale_id=42, amount=0, service=0, timeout_s=0, text="")),
    ("tap_sale", P.TAP, 0x00030009, P.UP, dict(uid=bytes.fromhex("04A1B2C3D4E5F6"), sak=0x00, flags=0, direction=0, service=0, amount=2400, device_time=1795000009, secure=b"", sale_id=42)),
    ("decision_sale", P.DECISION, 0x0001000D, P.DOWN, dict(tap_seq=0x00030009, verdict=1, reason=0, relay_ms=0, pattern=1, balance=9945, points=700, uses=-1, text="paid 22.80", sale_id=42)),
    ("status", ota.STATUS, 0x00030009, P.UP, dict(app="tapkiosk-fw 0.2.0", mpy="1.24.1", uptime_s=86400, heap_free=61440, reset=1, link=1, outbox=2, trial=1)),
    ("update_begin", ota.UPDATE_BEGIN, 0x0001000A, P.DOWN, dict(update_id=0x5EED0001, version="0.2.0", size=1000, chunks=6, sha256=bytes(range(32)), kind=1)),
    ("update_chunk", ota.UPDATE_CHUNK, 0x0001000B, P.DOWN, dict(update_id=0x5EED0001, index=5, data=bytes(range(40)))),
    ("update_status", ota.UPDATE_STATUS, 0x0003000A, P.UP, dict(update_id=0x5EED0001, have=6, state=1, code=0)),
]


RFC4231 = [
    ("rfc4231_1", b"\x0b" * 20, b"Hi There"),
    ("rfc4231_2", b"Jefe", b"what do ya want for nothing?"),
    ("rfc4231_3", b"\xaa" * 20, b"\xdd" * 50),
    ("rfc4231_4", bytes(range(1, 26)), b"\xcd" * 50),
    ("rfc4231_6", b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First"),
    ("rfc4231_7", b"\xaa" * 131, b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm."),
]


def primitive_vectors() -> list[dict[str, Any]]:
    """HMAC (RFC 4231 cases 1-4, 6, 7; case 5 truncates, ours truncates separately), COBS, UTF-8, CRC-32."""
    vectors: list[dict[str, Any]] = []
    for name, key, data in RFC4231:
        vectors.append(dict(kind="hmac", name=name, key=key.hex(), data=data.hex(), mac=hmac.new(key, data, hashlib.sha256).hexdigest()))
    cobs_cases = [
        ("00", "0101"), ("0000", "010101"), ("11220033", "0311220233"),
        ("11223344", "0511223344"), ("11000000", "0211010101"),
    ]
    for raw, enc in cobs_cases:
        vectors.append(dict(kind="cobs", name="cobs_" + raw, raw=raw, cobs=enc))
    block = bytes(range(1, 255))  # 254 non-zero bytes: one full block
    # Wikipedia's COBS examples 5-7: a full 254-byte block, a leading zero, a trailing 0xFF.
    vectors.append(dict(kind="cobs", name="cobs_254", raw=block.hex(), cobs=(b"\xff" + block).hex()))
    vectors.append(dict(kind="cobs", name="cobs_zero_254", raw=(b"\x00" + block).hex(), cobs=(b"\x01\xff" + block).hex()))
    vectors.append(dict(kind="cobs", name="cobs_255", raw=(block + b"\xff").hex(), cobs=(b"\xff" + block + b"\x02\xff").hex()))
    for name, raw in UTF8_CASES:
        vectors.append(dict(kind="utf8", name="utf8_" + name, hex=raw.hex(), valid=ref_utf8(raw)))
    vectors.append(dict(kind="crc32", name="crc32_check", data=b"123456789".hex(), crc=0xCBF43926))
    return vectors


def packet_vectors() -> list[dict[str, Any]]:
    """One good packet (and its frame) per entry of MESSAGES."""
    vectors: list[dict[str, Any]] = []
    for name, ptype, seq, direction, fields in MESSAGES:
        body = P.encode_body(ptype, fields)
        pkt = ref_packet(ptype, seq, DEV, body, KEY, direction)
        vectors.append(dict(kind="packet", name=name, type=ptype, seq=seq, device_id=DEV, key=KEY.hex(), direction=direction.decode(), fields=to_json(fields), packet=pkt.hex(), frame=ref_frame(pkt).hex()))
    return vectors


def bad_packet_vectors(tap: bytes) -> list[dict[str, Any]]:
    """Packets decode() must refuse, each with the ProtocolError subclass it must raise."""
    vectors: list[dict[str, Any]] = []

    def bad(name: str, pkt: bytes, error: str, direction: str = "U") -> None:
        vectors.append(dict(kind="bad_packet", name=name, key=KEY.hex(), direction=direction, packet=pkt.hex(), error=error))

    def event(text: bytes) -> bytes:
        return ref_packet(P.EVENT, 5, DEV, bytes([2, 0, 0, 0, 1, len(text)]) + text, KEY, P.UP)

    flipped = bytearray(tap); flipped[12] ^= 0x01
    bad("bad_mac_flipped_body", bytes(flipped), "AuthError")
    flipped = bytearray(tap); flipped[-1] ^= 0x80
    bad("bad_mac_flipped_mac", bytes(flipped), "AuthError")
    bad("bad_mac_wrong_direction", tap, "AuthError", "D")
    bad("bad_mac_other_key", ref_packet(P.TAP, 0x00030001, DEV, P.encode_body(P.TAP, MESSAGES[2][4]), bytes(32), P.UP), "AuthError")
    bad("truncated", tap[:-1], "MalformedError")
    bad("too_short", tap[:10], "MalformedError")
    bad("oversize", tap + bytes(300), "MalformedError")
    bad("bad_version", b"\x02" + tap[1:], "UnsupportedError")
    bad("unknown_type", tap[:1] + b"\x7f" + tap[2:], "UnsupportedError")
    bad("bad_device_id", ref_packet(P.PING, 5, "gate 01", struct.pack(">I", 1), KEY, P.UP), "MalformedError")
    bad("body_trailing_byte", ref_packet(P.PING, 5, DEV, struct.pack(">I", 1) + b"\x00", KEY, P.UP), "MalformedError")
    bad("body_bad_uid_len", ref_packet(P.TAP, 5, DEV, bytes([5]) + bytes(5) + bytes(15), KEY, P.UP), "MalformedError")
    bad("body_bad_utf8", event(b"\xc3\x28"), "MalformedError")
    bad("body_verdict_range", ref_packet(P.DECISION, 5, DEV, struct.pack(">IBBHBiih", 1, 2, 0, 0, 0, 0, 0, -1) + b"\x00", KEY, P.DOWN), "MalformedError", "D")
    # Text that MicroPython's own decoder would let through: surrogate, overlong, above U+10FFFF.
    bad("body_utf8_surrogate", event(b"\xed\xa0\x80"), "MalformedError")
    bad("body_utf8_overlong", event(b"\xc0\x80"), "MalformedError")
    bad("body_utf8_above_max", event(b"\xf4\x90\x80\x80"), "MalformedError")
    # body_len 256 (> MAX_BODY) in a packet that still fits 296 bytes: a CONFIG of 22 ten-byte UIDs.
    big = struct.pack(">IHHHHB", 10, 0, 0, 1, 1, 2) + bytes([22]) + (bytes([10]) + bytes(range(1, 11))) * 22
    bad("body_len_256", ref_packet(P.CONFIG, 5, DEV, big, KEY, P.DOWN), "MalformedError", "D")
    sale = P.encode_body(P.SALE, dict(sale_id=42, amount=2400, service=0, timeout_s=60, text=""))
    bad("sale_sent_up", ref_packet(P.SALE, 5, DEV, sale, KEY, P.UP), "MalformedError")
    bad("sale_id_zero", ref_packet(P.SALE, 5, DEV, bytes(4) + sale[4:], KEY, P.DOWN), "MalformedError", "D")
    tap_body = P.encode_body(P.TAP, MESSAGES[2][4])
    bad("tap_sale_id_zero", ref_packet(P.TAP, 5, DEV, tap_body + bytes(4), KEY, P.UP), "MalformedError")
    bad("tap_sale_id_truncated", ref_packet(P.TAP, 5, DEV, tap_body + b"\x00\x2a", KEY, P.UP), "MalformedError")
    bad("decision_sent_up", ref_packet(P.DECISION, 5, DEV, struct.pack(">IBBHBiih", 1, 1, 0, 0, 0, 0, 0, -1) + b"\x00", KEY, P.UP), "MalformedError")
    return vectors


def bad_frame_vectors(tap: bytes, decision: bytes) -> list[dict[str, Any]]:
    """Damaged byte streams: which packets the parser must still deliver, how many it drops."""
    vectors: list[dict[str, Any]] = []
    good = ref_frame(tap)
    dec = ref_frame(decision)

    def badf(name: str, stream: bytes, packets: list[bytes], dropped: int) -> None:
        vectors.append(dict(kind="bad_frame", name=name, stream=stream.hex(), packets=[p.hex() for p in packets], dropped=dropped))

    flipped = bytearray(good); flipped[5] ^= 0x04
    badf("frame_bad_crc_then_good", bytes(flipped) + dec, [decision], 1)
    badf("frame_garbage_then_good", b"\x13\x37\xff\xfe\x00" + good, [tap], 1)
    badf("frame_truncated_then_good", good[: len(good) // 2] + b"\x00" + good, [tap], 1)
    badf("frame_leading_delimiters", b"\x00\x00\x00" + good, [tap], 0)
    badf("frame_oversize_then_good", b"\x01" * 400 + b"\x00" + good, [tap], 1)
    badf("frame_too_short", b"\x02\x01\x00" + good, [tap], 1)
    badf("frame_two_back_to_back", good + dec, [tap, decision], 0)
    # Line noise between two frames: the next frame's leading delimiter closes it off.
    badf("frame_noise_between_frames", good + b"\x13\x37\xfe" + dec, [tap, decision], 1)
    badf("frame_noise_then_two_frames", b"\x42" * 7 + good + dec, [tap, decision], 1)
    return vectors


def build() -> list[dict[str, Any]]:
    """Every vector, in file order."""
    vectors = primitive_vectors() + packet_vectors()
    tap = bytes.fromhex(next(v["packet"] for v in vectors if v["name"] == "tap_uid4"))
    decision = bytes.fromhex(next(v["packet"] for v in vectors if v["name"] == "decision_grant"))
    return vectors + bad_packet_vectors(tap) + bad_frame_vectors(tap, decision) + rule_vectors()


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) protocol/vectors.json; return the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if protocol/vectors.json is not up to date")
    args = ap.parse_args(argv)
    vectors = build()
    text = json.dumps(vectors, indent=1, ensure_ascii=False) + "\n"
    if args.check:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print(f"{OUT.name}: {len(vectors)} vectors, {'up to date' if same else 'differs: run without --check and review the diff'}")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {len(vectors)} vectors to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
