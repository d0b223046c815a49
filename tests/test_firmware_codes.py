"""The firmware's const copies of protocol/codes.py values (it does not import that module: heap) match it."""

from __future__ import annotations

import re

import pytest

from conftest import ROOT
from protocol import codes


@pytest.mark.parametrize("name", ["welcome.py", "host_error.py", "config_apply.py", "tappath.py", "tapfault.py", "device.py", "status.py"])
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


def test_firmware_fleet_consts_match_protocol_ota() -> None:
    from protocol import ota

    want = {"_STATUS": ota.STATUS, "_LINK_SERIAL": ota.LINK_SERIAL, "_LINK_MQTT": ota.LINK_MQTT,
            "_UPDATE_BEGIN": ota.UPDATE_BEGIN, "_CH": ota.UPDATE_CHUNK_MAX}
    seen = set()
    for name in ("status.py", "app.py", "update.py"):
        src = (ROOT / "firmware" / name).read_text()
        for const_name, value in re.findall(r"^(_[A-Z_]+) = const\((0x[0-9A-Fa-f]+|\d+)\)", src, re.M):
            if const_name in want:
                assert int(value, 0) == want[const_name], (name, const_name)
                seen.add(const_name)
    assert seen == set(want)
    # UPDATE_CHUNK is the last type the reader takes to its updater (app.py: t >= UPDATE_BEGIN).
    assert ota.UPDATE_CHUNK == ota.UPDATE_BEGIN + 1 and ota.UPDATE_STATUS > ota.UPDATE_CHUNK


def test_firmware_seq_consts_match_protocol_seq() -> None:
    # app.py and bootcount.py do not import protocol/seq.py (heap on the board): their copies match.
    from protocol import seq

    want = {"_CTR_MAX": seq.CTR_MAX, "_BOOT_MAX": seq.BOOT_MAX}
    for name, names in (("app.py", {"_CTR_MAX", "_BOOT_MAX"}), ("bootcount.py", {"_BOOT_MAX"})):
        src = (ROOT / "firmware" / name).read_text()
        found = dict(re.findall(r"^(_[A-Z_]+) = const\((0x[0-9A-Fa-f]+|\d+)\)", src, re.M))
        for const_name in names:
            assert int(found[const_name], 0) == want[const_name], (name, const_name)
        assert "protocol.seq" not in src and "import seq" not in src, name
