"""host/site/tap_fields.py decodes a TAP body exactly as protocol/packet.py's generic
decoder does: the same fields (same types, same order) for every body it accepts, the same
error for every body it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import host.site.tap_fields as tf
from protocol import packet as pk
from protocol.errors import ProtocolError

U32 = st.integers(0, 0xFFFFFFFF)


def _decoded(body: bytes):
    try:
        return pk.decode_body(pk.TAP, body), None
    except ProtocolError as e:
        return None, e


def _same(body: bytes) -> None:
    want, err = _decoded(body)
    if err is not None:
        with pytest.raises(type(err)):
            tf.tap_fields(body)
        return
    got = tf.tap_fields(body)
    assert got == want and list(got) == list(want)
    assert [type(v) for v in got.values()] == [type(v) for v in want.values()]


@settings(max_examples=500, deadline=None)
@given(uid=st.binary(min_size=3, max_size=11), sak=st.integers(0, 255),
       flags=st.integers(0, 5), direction=st.integers(0, 4), service=st.integers(0, 65535),
       amount=U32, device_time=U32, secure=st.binary(max_size=100),
       sale=st.one_of(st.none(), U32), cut=st.integers(0, 3), extra=st.binary(max_size=3))
def test_a_built_body_decodes_as_the_generic_decoder(uid, sak, flags, direction, service,
                                                    amount, device_time, secure, sale, cut,
                                                    extra):
    body = (bytes((len(uid),)) + uid + bytes((sak, flags, direction)) + service.to_bytes(2, "big")
            + amount.to_bytes(4, "big") + device_time.to_bytes(4, "big")
            + bytes((len(secure),)) + secure + (b"" if sale is None else sale.to_bytes(4, "big")))
    _same(body)
    _same(body[:len(body) - cut])
    _same(body + extra)


@settings(max_examples=500, deadline=None)
@given(body=st.binary(max_size=140))
def test_any_bytes_decode_or_fail_as_the_generic_decoder(body):
    _same(body)


def test_a_plain_tap_is_decoded_without_the_generic_decoder(monkeypatch):
    body = (b"\x07" + bytes.fromhex("04A1B2C3D4E5F6") + b"\x20\x01\x02\x00\x03"
            + (1250).to_bytes(4, "big") + (99).to_bytes(4, "big") + b"\x00"
            + (7).to_bytes(4, "big"))
    want = pk.decode_body(pk.TAP, body)
    monkeypatch.setattr(tf.pk, "decode_body", None)   # the long way would fail now
    assert tf.tap_fields(body) == want and want["sale_id"] == 7 and want["amount"] == 1250
