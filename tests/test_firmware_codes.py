"""The firmware's const copies of protocol/codes.py values (it does not import that module: heap) match it."""

from __future__ import annotations

import re

import pytest

from conftest import ROOT
from protocol import codes


@pytest.mark.parametrize("name", ["session.py", "uplink.py", "tappath.py", "main.py"])
def test_firmware_code_consts_match_protocol_codes(name: str) -> None:
    src = (ROOT / "firmware" / name).read_text()
    found = re.findall(r"^_((?:ERR|EV|PAT)_[A-Z_]+|GRANT|VOIDED) = const\((\d+)\)", src, re.M)
    assert found
    for const_name, value in found:
        want = codes.REASONS.index("voided") if const_name == "VOIDED" else getattr(codes, const_name)
        assert int(value) == want, const_name
    m = re.search(r"^_ERRORS = (\(.*\))$", src, re.M)
    if m:
        assert eval(m.group(1)) == codes.ERRORS  # noqa: S307 - a literal tuple from our own file
