"""Property tests of protocol/ under CPython, against independent references (hypothesis).
The rule tables (replay window, field ranges, UTF-8, frames) are vectors in protocol/vectors.json,
checked under CPython and MicroPython alike: see test_protocol_interpreters.py."""

from __future__ import annotations

import binascii
import hashlib
import hmac
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import cobs, framing, mac, packet as P
from protocol.errors import AuthError, FrameError, MalformedError, ProtocolError

KEY = bytes(range(32))
MAC = mac.Mac(KEY)
device_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", min_size=1, max_size=16)
uids = st.sampled_from([4, 7, 10]).flatmap(lambda n: st.binary(min_size=n, max_size=n))


def _field(name: str, kind: str, lo: int, hi: int) -> st.SearchStrategy:
    if name == "uid":
        return uids
    if kind == "s":
        # UTF-8 text whose encoding fits [lo, hi] bytes.
        return st.text(max_size=hi).filter(lambda t: lo <= len(t.encode()) <= hi)
    if kind == "b":
        return st.binary(min_size=lo, max_size=hi)
    if kind == "L":
        return st.lists(uids, min_size=lo, max_size=min(hi, 20))
    return st.integers(lo, hi)


# Every type, those packet.py loads on first use too (protocol/control.py, protocol/ota.py).
TYPES = [t for t in range(256) if P.spec(t) is not None]
messages = st.sampled_from(TYPES).flatmap(
    lambda t: st.tuples(st.just(t), st.fixed_dictionaries({n: _field(n, k, lo, hi) for n, k, lo, hi in P.fields(t)}))
)


def _direction(ptype: int) -> bytes:
    return P.DIRECTIONS[ptype][:1]


@given(messages, st.integers(0, 0xFFFFFFFF), device_ids)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_every_message_type_round_trips(msg, seq, dev) -> None:
    ptype, fields = msg
    d = _direction(ptype)
    raw = P.encode(ptype, seq, dev, fields, MAC, d)
    p = P.decode(raw, MAC, d)
    assert (p.type, p.seq, p.device_id, p.fields) == (ptype, seq, dev, fields)
    # The frame layer carries it unchanged.
    assert framing.FrameParser().feed(framing.encode(raw)) == [raw]


@given(st.binary(max_size=600), st.binary(min_size=1, max_size=200))
def test_hmac_matches_cpython(key: bytes, msg: bytes) -> None:
    assert mac.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_constant_time_equal_is_correct() -> None:
    assert mac.equal(b"abc", b"abc")
    assert not mac.equal(b"abc", b"abd")
    assert not mac.equal(b"abc", b"ab")
    assert mac.equal(b"", b"")


def test_mac_key_must_be_32_bytes() -> None:
    with pytest.raises(ProtocolError):
        mac.Mac(b"short")


@given(st.binary(max_size=1200))
def test_cobs_round_trip_has_no_zero(data: bytes) -> None:
    enc = cobs.encode(data)
    assert 0 not in enc
    assert len(enc) <= cobs.max_encoded_len(len(data))
    assert cobs.decode(enc) == data


def _reference_frames(stream: bytes) -> list[bytes]:
    """An independent, obviously-correct decoder: split on 0x00, COBS-decode, check CRC."""
    out = []
    for chunk in stream.split(b"\x00")[:-1]:
        if not chunk or len(chunk) > framing.MAX_FRAME:
            continue
        try:
            raw, i = bytearray(), 0
            while i < len(chunk):
                code = chunk[i]
                block = chunk[i + 1 : i + code]
                if len(block) != code - 1:
                    raise ValueError
                raw += block
                i += code
                if code != 0xFF and i < len(chunk):
                    raw.append(0)
        except ValueError:
            continue
        if len(raw) >= 5 and struct.unpack(">I", raw[-4:])[0] == binascii.crc32(raw[:-4]):
            out.append(bytes(raw[:-4]))
    return out


@given(st.binary(max_size=2000))
@settings(max_examples=300)
def test_parser_on_arbitrary_bytes_never_raises_and_matches_reference(data: bytes) -> None:
    parser = framing.FrameParser()
    got = parser.feed(data)
    assert got == _reference_frames(data)
    for p in got:
        # Anything it yields either parses or fails with a ProtocolError, never anything else.
        try:
            P.decode(p, MAC, mac.UP)
        except ProtocolError:
            pass


def _stream(rng: random.Random, n: int) -> tuple[list[bytes], list[bytes]]:
    pkts = []
    for i in range(n):
        uid = rng.choice([4, 7, 10])
        fields = dict(uid=rng.randbytes(uid), sak=rng.randrange(256), flags=0, direction=1, service=rng.randrange(5), amount=rng.randrange(10**6), device_time=rng.randrange(2**32), secure=b"")
        pkts.append(P.encode(P.TAP, i + 1, "gate-01", fields, MAC, mac.UP))
    return pkts, [framing.encode(p) for p in pkts]


@given(st.lists(st.integers(1, 300), min_size=1, max_size=40), st.integers(0, 2**32))
def test_random_chunking_gives_the_same_packets(chunks: list[int], seed: int) -> None:
    pkts, frames = _stream(random.Random(seed), 12)
    stream = b"".join(frames)
    parser, got, i, k = framing.FrameParser(), [], 0, 0
    while i < len(stream):
        n = chunks[k % len(chunks)]
        got += parser.feed(stream[i : i + n])
        i, k = i + n, k + 1
    assert got == pkts
    assert parser.dropped == 0


def test_100k_random_corruptions_forge_nothing_and_lose_only_damaged_frames() -> None:
    rng = random.Random(4231)
    pkts, frames = _stream(rng, 50)
    stream = b"".join(frames)
    bounds, start = [], 0
    for f in frames:
        bounds.append((start, start + len(f)))
        start += len(f)
    originals = set(pkts)
    corruptions = forged = lost_clean = 0
    while corruptions < 100_000:
        buf = bytearray(stream)
        touched = set()
        for _ in range(50):
            pos = rng.randrange(len(buf))
            kind = rng.randrange(3)
            if kind == 0:
                buf[pos] ^= 1 << rng.randrange(8)
            elif kind == 1:
                buf[pos] = rng.randrange(256)
            else:
                buf[pos] = 0  # a spurious delimiter
            touched.add(pos)
            corruptions += 1
        got = framing.FrameParser().feed(buf)
        for p in got:
            try:
                P.decode(p, MAC, mac.UP)
            except ProtocolError:
                continue
            if p not in originals:
                forged += 1
        got_set = set(got)
        for (a, b), p in zip(bounds, pkts):
            if not any(a <= t < b for t in touched) and p not in got_set:
                lost_clean += 1
    assert corruptions >= 100_000
    assert forged == 0
    assert lost_clean == 0


def test_truncation_and_garbage_cost_only_the_damaged_frame() -> None:
    pkts, frames = _stream(random.Random(7), 3)
    stream = frames[0][:-5] + b"\xde\xad" + b"\x00" + frames[1] + b"\x01\x02\x03" + b"\x00" + frames[2]
    parser = framing.FrameParser()
    assert parser.feed(stream) == [pkts[1], pkts[2]]
    assert parser.dropped == 2
    assert isinstance(parser.last_error, FrameError)


@given(st.lists(st.binary(max_size=6), min_size=13, max_size=13), st.integers(0, 2**32))
def test_line_noise_between_frames_costs_no_frame(noise: list[bytes], seed: int) -> None:
    # Before frames had a leading delimiter, noise after one frame's 0x00 was glued to the next.
    pkts, frames = _stream(random.Random(seed), 12)
    writer = framing.FrameWriter()
    stream = b"".join(n + bytes(writer.encode(p)) for n, p in zip(noise, pkts)) + noise[-1]
    assert framing.FrameParser().feed(stream) == pkts
    assert frames[0][0] == 0 and frames[0][-1] == 0 and 0 not in frames[0][1:-1]


def test_oversize_frame_is_dropped_and_parser_resyncs() -> None:
    pkts, frames = _stream(random.Random(8), 1)
    parser = framing.FrameParser()
    assert parser.feed(b"\x05" * 5000 + b"\x00" + frames[0]) == pkts
    assert parser.dropped == 1


def test_frame_encode_refuses_oversize_packet() -> None:
    with pytest.raises(FrameError):
        framing.encode(bytes(P.MAX_PACKET + 1))


def test_bad_mac_and_wrong_key_are_auth_errors() -> None:
    raw = P.encode(P.PING, 9, "kiosk-1", {"nonce": 5}, MAC, mac.UP)
    with pytest.raises(AuthError):
        P.decode(raw, mac.Mac(bytes(32)), mac.UP)
    with pytest.raises(AuthError):
        P.decode(raw, MAC, mac.DOWN)


def test_text_that_is_not_strict_utf8_is_refused_as_malformed_on_encode() -> None:
    # CPython raised UnicodeEncodeError (not a ProtocolError) for a lone surrogate.
    for text in ("\ud800", "ok \udfff"):
        with pytest.raises(MalformedError, match="EVENT.text"):
            P.encode_body(P.EVENT, dict(code=1, value=0, text=text))
