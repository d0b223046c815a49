# Runs on CPython (pytest): the serial link's frame reader against protocol/framing.py's.
"""host/site/links/cobs_frames.py yields what ``protocol.framing.FrameParser`` yields for the
same bytes fed in the same pieces: the same packets, and the same ``frames``, ``dropped`` and
``last_error`` text after every piece (good frames, real TAP packets, flipped bits,
truncated and over-long frames, garbage between them)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from host.site.links.cobs_frames import FrameParser
from protocol import framing
from protocol import packet as pk
from protocol.mac import Mac
from protocol.packet import MAX_PACKET


def _state(p) -> tuple:
    return p.frames, p.dropped, None if p.last_error is None else str(p.last_error)


def _same(stream: bytes, cuts: list[int]) -> list[bytes]:
    ours, theirs = FrameParser(), framing.FrameParser()
    got = []
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    for a, b in zip(bounds, bounds[1:]):
        piece = stream[a:b]
        mine = ours.feed(piece)
        assert mine == theirs.feed(piece)
        assert all(type(x) is bytes for x in mine)
        assert _state(ours) == _state(theirs)
        got += mine
    return got


def _tap(seq: int, dev: str, amount: int, secure: bytes) -> bytes:
    return pk.encode(pk.TAP, seq, dev, {
        "uid": bytes(range(7)), "sak": 0x20, "flags": 0, "direction": 0, "service": 1,
        "amount": amount, "device_time": seq, "secure": secure, "sale_id": 0},
        Mac(bytes(range(32))), pk.UP)


REAL = st.builds(_tap, st.integers(0, 0xFFFFFFFF),
                 st.from_regex(r"[a-z0-9-]{1,16}", fullmatch=True), st.integers(0, 0xFFFFFFFF),
                 st.binary(max_size=96))
PACKETS = st.one_of(st.binary(min_size=0, max_size=MAX_PACKET), REAL)


@st.composite
def _chunk(draw) -> bytes:
    kind = draw(st.sampled_from(["frame", "frame", "flipped", "cut", "garbage", "long", "zero"]))
    if kind == "garbage":
        return draw(st.binary(min_size=1, max_size=40))
    if kind == "long":
        return b"\x00" + b"\x01" * draw(st.integers(framing.MAX_FRAME - 2, framing.MAX_FRAME + 3))
    if kind == "zero":
        return b"\x00" * draw(st.integers(1, 3))
    frame = bytearray(framing.encode(draw(PACKETS)))
    if kind == "flipped":
        i = draw(st.integers(0, len(frame) - 1))
        frame[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "cut":
        frame = frame[:draw(st.integers(1, len(frame) - 1))]
    return bytes(frame)


@settings(max_examples=400, deadline=None)
@given(chunks=st.lists(_chunk(), max_size=8), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_same_packets_counts_and_errors_in_any_pieces(chunks: list[bytes], cuts: list[int]):
    _same(b"".join(chunks), cuts)


@settings(max_examples=200, deadline=None)
@given(packets=st.lists(st.one_of(st.binary(min_size=1, max_size=MAX_PACKET), REAL),
                        min_size=1, max_size=5), cuts=st.lists(st.integers(0, 5000)))
def test_good_frames_come_out_whole_in_order(packets: list[bytes], cuts: list[int]):
    stream = b"".join(framing.encode(p) for p in packets)
    assert _same(stream, cuts) == packets


def test_a_frame_fed_byte_by_byte_and_each_kind_of_damage() -> None:
    frame = framing.encode(b"\x01\x00\x02" * 20)
    assert _same(frame, list(range(len(frame)))) == [b"\x01\x00\x02" * 20]
    bad_crc = bytearray(frame)
    bad_crc[5] ^= 0x40
    for stream in (bytes(bad_crc), b"\x00\x05\x01\x00", b"\x00\x02\x01\x00",
                   b"\x00" + b"\x07" * (framing.MAX_FRAME + 1) + b"\x00"):
        p = FrameParser()
        assert p.feed(stream) == [] and p.dropped == 1
        _same(stream, [3])
