"""The firmware's heap after init, counted by bench/firmware_heap.py as the board runs it (.mpy
built as tools/appfiles.py builds them): at most 32 KiB on the 32-bit build (issue 19), and no
growth over a run of taps. Under the 64-bit unix port (objects twice the size) only the growth
and the counting are checked; .ci/run repeats this under the 32-bit build."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.micropython]

HEAP_MAX = 32 * 1024


@pytest.fixture(scope="module")
def heap() -> dict:
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "firmware_heap.py"), "--taps", "300"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_no_heap_growth_over_taps(heap: dict) -> None:
    assert heap["taps"] == 300
    assert heap["heap_growth_bytes"] == 0, heap


def test_board_build_counts_less_than_the_plain_build(heap: dict) -> None:
    # Stripped source paths and short __file__ paths: the board's count is the smaller one.
    assert heap["word_bits"] in (32, 64)
    assert 0 < heap["heap_after_init_bytes"] < heap["heap_after_init_plain_mpy_bytes"], heap


def test_heap_after_init_within_32_kib_on_32_bits(heap: dict) -> None:
    if heap["word_bits"] != 32:
        pytest.skip("the 32 KiB target is for the 32-bit build (TAPKIOSK_MICROPYTHON)")
    assert heap["heap_after_init_bytes"] <= HEAP_MAX, heap
