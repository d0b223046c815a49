"""host/site/decision_frame.py builds, byte for byte, the DECISION packet protocol/packet.py's
generic encoder builds, for any fields host/site/taps.decision_fields can make (and for
fields it could not: then it raises what pk.encode raises)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host.rules.engine import Decision
from host.site.decision_frame import decision_frame, decision_of
from host.site.taps import decision_fields
from protocol import codes
from protocol import packet as pk
from protocol.errors import ProtocolError
from protocol.mac import Mac

MAC = Mac(os.urandom(32))
I64 = st.integers(-(1 << 63), (1 << 63) - 1)


@settings(max_examples=400, deadline=None)
@given(seq=st.integers(0, 0xFFFFFFFF), tap_seq=st.integers(0, 0xFFFFFFFF),
       dev=st.from_regex(r"[A-Za-z0-9_.-]{1,16}", fullmatch=True),
       verdict=st.sampled_from(["grant", "deny"]),
       reason=st.sampled_from(list(codes.REASONS) + ["no-such-reason"]),
       relay=I64, pattern=I64, balance=I64, points=I64, uses=I64,
       text=st.text(max_size=80), sale=st.integers(-5, (1 << 33)))
def test_the_same_bytes_as_the_generic_encoder(seq, tap_seq, dev, verdict, reason, relay,
                                              pattern, balance, points, uses, text, sale):
    d = Decision(verdict, reason, relay, pattern, text, balance, points, uses, None,
                 sale_id=sale)
    f = decision_fields(tap_seq, d)
    try:
        want = pk.encode(pk.DECISION, seq, dev, f, MAC, pk.DOWN)
    except ProtocolError as e:
        with pytest.raises(type(e)):
            decision_frame(seq, dev, f, MAC)
        return
    got = decision_frame(seq, dev, f, MAC)
    assert got == want
    assert pk.decode(got, MAC, pk.DOWN).fields["tap_seq"] == tap_seq


@settings(max_examples=600, deadline=None)
@given(seq=st.integers(0, 0xFFFFFFFF), tap_seq=st.integers(-3, 0x1FFFFFFFF),
       dev=st.one_of(st.from_regex(r"[A-Za-z0-9_.-]{1,16}", fullmatch=True),
                     st.text(max_size=18)),
       verdict=st.sampled_from(["grant", "deny"]),
       reason=st.sampled_from(list(codes.REASONS) + ["no-such-reason"]),
       relay=st.one_of(st.integers(-2, 60002), I64), pattern=st.one_of(st.integers(-2, 258), I64),
       balance=I64, points=st.one_of(st.integers(-1000, 1000), I64),
       uses=st.one_of(st.integers(-3, 0x8001), I64), text=st.text(max_size=80),
       sale=st.integers(-5, (1 << 33)))
def test_from_a_decision_the_same_bytes_as_by_its_fields(seq, tap_seq, dev, verdict, reason,
                                                         relay, pattern, balance, points,
                                                         uses, text, sale):
    """decision_of (straight from the Decision) == the generic encoder of decision_fields,
    or raises what it raises."""
    d = Decision(verdict, reason, relay, pattern, text, balance, points, uses, None,
                 sale_id=sale)
    try:
        want = pk.encode(pk.DECISION, seq, dev, decision_fields(tap_seq, d), MAC, pk.DOWN)
    except ProtocolError as e:
        with pytest.raises(type(e)):
            decision_of(seq, dev, tap_seq, d, MAC)
        return
    assert decision_of(seq, dev, tap_seq, d, MAC) == want


@pytest.mark.parametrize("dev", ["", "a b", "x" * 17, "k\u00e9"])
def test_a_bad_device_id_raises_as_the_generic_encoder_does(dev):
    f = decision_fields(1, Decision("grant", "ok", 0, 0, "", 0, 0, -1, None))
    with pytest.raises(ProtocolError):
        decision_frame(1, dev, f, MAC)


def test_text_that_is_not_utf8_raises_as_the_generic_encoder_does():
    f = dict(decision_fields(1, Decision("grant", "ok", 0, 0, "", 0, 0, -1, None)),
             text="bad \udc80")
    with pytest.raises(ProtocolError):
        pk.encode(pk.DECISION, 1, "k1", f, MAC, pk.DOWN)
    with pytest.raises(ProtocolError):
        decision_frame(1, "k1", f, MAC)


def test_an_engine_decision_is_packed_straight_not_the_long_way(monkeypatch):
    import host.site.decision_frame as df

    d = Decision("grant", "ok", 500, 1, "Paid 12.50", 8750, 12, -1, 3, sale_id=9)
    want = decision_frame(7, "k001", decision_fields(70, d), MAC)
    monkeypatch.setattr(df, "decision_fields", None)   # the long way would fail now
    monkeypatch.setattr(df, "decision_frame", None)
    assert df.decision_of(7, "k001", 70, d, MAC) == want
