# Runs on CPython (pytest): the flash tool's self-check makes a real test tap through the daemon.
"""issue #20 item 2: a wash bay or kiosk provisioned without its program or amount refused every
card while the self-check said OK. Now the self-check (``--test-card UID``) sends one real TAP
with the reader's own service/amount through the real daemon, fails loudly when it is refused,
and voids the tap so the test card is not charged.

The board is the recording fake of the flash tests, except that the self-check program the
tool sends over the "REPL" runs in the real firmware under the MicroPython unix port, wired to
the PN532 emulator and a serial cable to ``host.daemon`` (the end-to-end rig).
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
from firmware_rig import CARD, Rig
from flash_support import RecordingBoard, make_app_tree

from conftest import micropython_path
from tools import flash

pytestmark = [pytest.mark.micropython, pytest.mark.skipif(micropython_path() is None, reason="needs the MicroPython unix port")]


class SimBoard(RecordingBoard):
    """The recording board whose REPL is the rig's simulated board running the real firmware."""

    def __init__(self, rig: Rig) -> None:
        super().__init__(files={"config.json": (rig.board.dir / "config.json").read_bytes()})
        self.rig = rig

    def exec(self, code: str, timeout: float = 30.0) -> str:
        self._enter("exec", code)
        r = subprocess.run([micropython_path(), "-c", code], cwd=self.rig.board.dir, env=self.rig.board.env,
                           capture_output=True, text=True, timeout=timeout)
        return r.stdout


@pytest.fixture
def rig(tmp_path, request):
    kind, settings = request.param
    r = Rig(tmp_path, kind=kind, **settings)
    yield r
    r.close()


def settings_of(**args) -> dict:
    """service/amount/direction as `flash provision` writes them for these flags."""
    cfg = flash.build_config({"device_id": "x-1", "link": "serial", **args}, key=bytes(32))
    return {k: cfg[k] for k in ("service", "amount", "direction")}


def update(tmp_path: Path, board: SimBoard, capsys, *extra: str) -> tuple[int, str, str]:
    argv = ["update", "--port", "/dev/ttyUSB0", "--app-root", str(make_app_tree(tmp_path / "repo")), *extra]
    code = flash.main(argv, board_factory=lambda port: board)
    out, err = capsys.readouterr()
    return code, out, err


def voids(rig: Rig) -> list[tuple]:
    with sqlite3.connect(rig.db) as c:
        return c.execute("SELECT device_id, tap_seq FROM tap_voids").fetchall()


@pytest.mark.parametrize("rig", [("wash", settings_of(kind="wash", program=1))], indirect=True)
def test_test_tap_is_granted_then_voided(rig, tmp_path, capsys):
    code, out, err = update(tmp_path, SimBoard(rig), capsys, "--test-card", CARD)
    assert code == 0, out + err + rig.console()
    assert "tap        OK    granted" in out and "voided: not charged" in out
    assert f"test tap of {CARD} granted and voided" in out
    rows = rig.wait_taps(1)
    assert [(r[1], r[2]) for r in rows] == [(CARD, "grant")]
    assert voids(rig) == [(rig.device_id, rows[0][0])]


@pytest.mark.parametrize("rig, reason", [
    (("wash", {"service": 0}), "bad_service"),      # what provisioning wrote before: no program
    (("kiosk", {"amount": 0}), "invalid_amount"),   # ... and no amount
    (("wash", settings_of(kind="wash", program=9)), "bad_service"),  # a program the policy lacks
], indirect=["rig"])
def test_refused_test_tap_fails_the_selfcheck(rig, reason, tmp_path, capsys):
    code, out, err = update(tmp_path, SimBoard(rig), capsys, "--test-card", CARD)
    assert code == 5, out + err + rig.console()
    assert f"tap        FAIL  refused: {reason}" in out
    assert "try: the host refused this reader's test tap" in out
    assert "self-check failed: tap" in err


@pytest.mark.parametrize("rig", [("wash", settings_of(kind="wash", program=1))], indirect=True)
def test_without_a_test_card_the_summary_says_no_tap_was_tested(rig, tmp_path, capsys):
    code, out, _ = update(tmp_path, SimBoard(rig), capsys)
    assert code == 0
    assert "tap        SKIP" in out and "no tap was tested" in out
    assert rig.wait_taps(0) == []


def test_bad_test_card_is_refused_before_the_board_is_touched(tmp_path, capsys):
    board = RecordingBoard()
    argv = ["update", "--port", "/dev/ttyUSB0", "--test-card", "04-XY", "--app-root",
            str(make_app_tree(tmp_path / "repo"))]
    assert flash.main(argv, board_factory=lambda port: board) == 2
    assert "bad --test-card" in capsys.readouterr().err and board.calls == []
