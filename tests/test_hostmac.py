"""host/site/hostmac.py tags frames with exactly protocol/mac.py's bytes, for both directions
(and any other direction byte), and refuses a key of the wrong length as Mac does."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host.site.hostmac import HostMac
from protocol.errors import ProtocolError
from protocol.mac import DOWN, UP, Mac


@settings(max_examples=300, deadline=None)
@given(key=st.binary(min_size=32, max_size=32), data=st.binary(max_size=600),
       direction=st.sampled_from([UP, DOWN, b"X", b""]))
def test_the_same_tag_as_protocol_mac(key, data, direction):
    host = HostMac(key)
    want = Mac(key).tag(direction, data)
    assert host.tag(direction, data) == want
    assert host.tag(direction, data) == want   # the kept hash states are not consumed


def test_two_keys_give_two_tags_and_a_short_key_is_refused():
    a, b = HostMac(os.urandom(32)), HostMac(os.urandom(32))
    assert a.tag(UP, b"frame") != b.tag(UP, b"frame")
    assert a.tag(UP, b"frame") != a.tag(DOWN, b"frame")
    with pytest.raises(ProtocolError):
        HostMac(b"short")
