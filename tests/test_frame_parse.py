"""host/site/frame_parse.py parses a frame's structure exactly as protocol/packet.py's
``parse``: the same Packet (type, seq, device id, body, raw) for every frame it accepts, the
same error (type and text) for every frame it refuses."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from host.site.frame_parse import parse
from protocol import packet as pk
from protocol.errors import ProtocolError

KEY = bytes(range(32))
DEVICE_CHARS = st.sampled_from(list("abcXYZ019_.-") + ["é", " ", "/"])


def _outcome(fn, data: bytes):
    try:
        p = fn(data)
    except ProtocolError as e:
        return ("error", type(e), str(e))
    assert type(p.device_id) is str and type(p.body) is bytes and type(p.raw) is bytes
    return ("packet", p.type, p.seq, p.device_id, p.body, p.raw, p.fields)


def _frame(ptype: int, seq: int, dev: str, body: bytes) -> bytes:
    """A frame with any header values (packet.encode refuses most bad ones)."""
    d = dev.encode("utf-8")
    head = bytes((pk.VERSION, ptype)) + seq.to_bytes(4, "big") + bytes((len(d) & 0xFF,)) + d
    return head + (len(body) & 0xFFFF).to_bytes(2, "big") + body + b"\x07" * 16


def _same(data: bytes) -> None:
    assert _outcome(parse, data) == _outcome(pk.parse, data)


def test_a_real_tap_frame_parses_the_same() -> None:
    from protocol.mac import Mac
    raw = pk.encode(pk.TAP, 42, "kiosk-1", {
        "uid": bytes(7), "sak": 0x20, "flags": 0, "direction": 0, "service": 1, "amount": 300,
        "device_time": 1, "secure": b"", "sale_id": 0}, Mac(KEY), pk.UP)
    got = parse(raw)
    assert (got.type, got.seq, got.device_id) == (pk.TAP, 42, "kiosk-1")
    _same(raw)


@settings(max_examples=600, deadline=None)
@given(ptype=st.one_of(st.sampled_from([pk.TAP, pk.HELLO, pk.PING, pk.DECISION]),
                      st.integers(0, 255)), seq=st.integers(0, 0xFFFFFFFF),
       dev=st.text(DEVICE_CHARS, max_size=18), body=st.binary(max_size=260),
       cut=st.integers(-3, 3), version=st.sampled_from([pk.VERSION, pk.VERSION, 0, 2]))
def test_any_frame_gets_the_same_packet_or_error(ptype, seq, dev, body, cut, version) -> None:
    data = bytearray(_frame(ptype, seq, dev, body))
    data[0] = version
    data = bytes(data)
    if cut > 0:
        data = data[:-cut]
    elif cut < 0:
        data = data + b"\0" * -cut
    _same(data)


@settings(max_examples=300, deadline=None)
@given(ptype=st.sampled_from([pk.TAP, pk.HELLO, pk.PING, pk.DECISION, pk.VOID]),
       seq=st.integers(0, 0xFFFFFFFF), body=st.binary(max_size=255),
       dev=st.text(st.sampled_from(list("azAZ09_.-")), min_size=1, max_size=16))
def test_well_formed_frames_get_the_same_packet(ptype, seq, dev, body) -> None:
    data = _frame(ptype, seq, dev, body)
    got = _outcome(parse, data)
    assert got[0] == "packet" and got[5] is data   # raw: the received bytes, not a copy
    assert got == _outcome(pk.parse, data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_get_the_same_error(data: bytes) -> None:
    _same(data)


def test_a_bytearray_goes_the_long_way_with_the_same_result() -> None:
    raw = _frame(pk.TAP, 5, "gate-2", b"\x04" + bytes(4) + bytes(13) + b"\0")
    assert _outcome(parse, bytearray(raw)) == _outcome(pk.parse, bytearray(raw))
