"""The same protocol code and vectors give the same results under CPython and MicroPython."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, run_micropython

import pytest

pytestmark = pytest.mark.micropython


def _cpython(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, timeout=120)


def test_selftest_same_vector_count_under_both(micropython: str) -> None:
    cp = _cpython(["-m", "protocol.selftest"])
    mp = run_micropython(["-m", "protocol.selftest"])
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert mp.returncode == 0, mp.stdout + mp.stderr
    assert cp.stdout.endswith(b"vectors ok\n")
    assert cp.stdout == mp.stdout


def test_selftest_names_a_failing_vector(tmp_path, micropython: str) -> None:
    # Copy protocol/ with one vector's expected bytes altered: both interpreters must say which.
    import json
    import shutil

    pkg = tmp_path / "protocol"
    shutil.copytree(ROOT / "protocol", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    vectors = json.loads((pkg / "vectors.json").read_text())
    target = next(v for v in vectors if v["name"] == "decision_grant")
    target["packet"] = target["packet"][:-2] + ("00" if not target["packet"].endswith("00") else "01")
    (pkg / "vectors.json").write_text(json.dumps(vectors))
    cp = subprocess.run([sys.executable, "-m", "protocol.selftest"], cwd=tmp_path, capture_output=True, timeout=60)
    mp = run_micropython(["-m", "protocol.selftest"], env={"MICROPYPATH": f"{tmp_path}:.frozen"}, cwd=tmp_path)
    for proc in (cp, mp):
        assert proc.returncode == 1
        assert b"FAIL decision_grant" in proc.stdout


def test_workout_prints_the_same_under_both(micropython: str) -> None:
    cp = _cpython(["tests/mpy/protocol_check.py"])
    mp = run_micropython(["tests/mpy/protocol_check.py"])
    assert cp.returncode == 0, cp.stderr
    assert mp.returncode == 0, mp.stdout + mp.stderr
    lines = cp.stdout.decode().splitlines()
    assert lines[0] == "chunking 50 of 50"
    assert lines[1].split()[2:] == ["forged", "0", "lost_clean", "0"]
    assert lines[2] == "noise lost 0"
    assert lines[3].startswith("roundtrip") and lines[3].split()[1] == lines[3].split()[3]
    assert lines[4:] == ["tapwriter True", "voidwriter True True", "framewriter True"]
    assert cp.stdout == mp.stdout
