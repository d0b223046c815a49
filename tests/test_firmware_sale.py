# Runs on CPython (pytest): the firmware's sale handling (firmware/sale.py, tappath.py) under the MicroPython unix port.
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, micropython_path, run_micropython

pytestmark = [pytest.mark.micropython,
              pytest.mark.skipif(micropython_path() is None, reason="needs the MicroPython unix port")]


def test_sale_shows_clears_times_out_and_rides_on_the_next_tap(tmp_path: Path) -> None:
    r = run_micropython([str(ROOT / "tests" / "mpy" / "sale_display.py")], cwd=tmp_path)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "ARMED 42 2400 SHOWN Pay 24.00" in out
    assert "OTHER_CLEAR 42" in out            # clearing another sale id leaves this one
    assert "CLEARED 0 Cancelled" in out
    assert "TIMED_OUT False Sale timed out" in out
    # The TAP made during the sale carries its id and amount; its DECISION ends the sale; the
    # next TAP is a plain one with the reader's own amount.
    assert "PAID_TAP (44, 2400) SALE_AFTER 0" in out
    assert "PLAIN_TAP (0, 700)" in out


def test_wash_buttons_are_debounced_and_checked_in_config(tmp_path: Path) -> None:
    r = run_micropython([str(ROOT / "tests" / "mpy" / "wash_buttons.py")], cwd=tmp_path,
                        env={"TAPKIOSK_SIM_INPUTS": str(tmp_path / "in.txt")})
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "GLITCH []" in out                  # 40 ms of bounce is not a press
    assert "HELD [2]" in out                   # held down: one press
    assert "AGAIN [2, 2] 2" in out             # released and pressed again: a second one
    assert "CONFIG [(1, 32), (2, 33)] 0" in out
    for bad in ("BAD gate config.json: buttons", "BAD code config.json: buttons.pins keys",
                "BAD twice config.json: buttons.pins use a GPIO once",
                "BAD pin config.json: buttons.pins.1"):
        assert bad in out, out
