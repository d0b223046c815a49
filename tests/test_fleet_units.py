"""The reader's side of an update, one piece at a time under the MicroPython unix port:
the boot stub's switch, trial and rollback, and the restart that waits for the outbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, micropython_path, run_micropython

pytestmark = [pytest.mark.micropython,
              pytest.mark.skipif(micropython_path() is None, reason="needs the MicroPython unix port")]


def test_switch_trial_rollback_and_power_cuts(tmp_path: Path) -> None:
    r = run_micropython([str(ROOT / "tests" / "mpy" / "ota_switch.py")], cwd=tmp_path)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    assert lines["PLAIN"] == "0 app none prev none next none trial none"
    assert lines["FIRST"] == "1 app 2 prev none next none trial 1"
    assert lines["SECOND"] == "1 app 3 prev 2 next none trial 1"
    assert lines["BOOT2"] == "2 app 3 prev 2 next none trial 2"
    assert lines["BOOT3"] == "3 app 3 prev 2 next none trial 3"
    assert lines["BOOT4"] == "0 app 2 prev none next none trial none"
    assert lines["ROLLBACK"] == "3: reset 3 times on trial"
    assert lines["CUT"] == "1 app 4 prev 2 next none trial 1"
    assert lines["CUT_ROLLBACK"] == "0 app 2 prev none next none trial none"
    # The restart waits until the taps still in the outbox reached the host.
    assert lines["SWITCH"] == "['tap delivered', 'tap delivered', 'reset 75']"


def test_failed_firmware_trial_boots_the_previous_partition(tmp_path: Path) -> None:
    r = run_micropython([str(ROOT / "tests" / "mpy" / "ota_fw.py")], cwd=tmp_path)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "SWITCH 1 ota_1\n" in out
    assert "DATA ota_0 new False False\n" in out
    assert "ROLLBACK 3.0: no answer from the host in 60 s\n" in out
