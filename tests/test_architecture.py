# Runs on CPython (pytest): the host's layering as tests — what host/ may import and how it is laid out.
"""The rules of host/README.md's map, checked on the source: ``host/`` never imports ``sim``
(the simulation orchestrates the host, not the other way round) nor ``tools``; its top level
keeps at most six modules; the tap path has no callback named ``current_tap``; and the
delegated subcommands are entry points, not module names written into ``host``."""

from __future__ import annotations

import ast
from importlib.metadata import entry_points
from pathlib import Path

from conftest import ROOT

HOST = ROOT / "host"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and node.value.startswith(("sim.", "tools.")) and " " not in node.value:
            out.add(node.value)   # a module name kept as a string for a later import
    return out


def test_host_imports_neither_sim_nor_tools():
    bad = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p)
                                            if m.split(".")[0] in ("sim", "tools"))
           for p in HOST.rglob("*.py")}
    assert {k: v for k, v in bad.items() if v} == {}


def test_host_top_level_holds_at_most_six_modules():
    modules = sorted(p.name for p in HOST.glob("*.py") if p.name != "__init__.py")
    assert "daemon.py" in modules and len(modules) <= 6, modules


def test_nothing_in_host_is_named_current_tap():
    hits = [str(p.relative_to(ROOT)) for p in HOST.rglob("*.py")
            if "current_tap" in p.read_text(encoding="utf-8")]
    assert hits == []


def test_delegated_subcommands_are_entry_points():
    names = {ep.name: ep.value for ep in entry_points(group="tapkiosk.commands")}
    assert names == {"daemon": "host.daemon", "flash": "tools.flash", "sim": "sim.cli",
                     "demo": "sim.demo", "doctor": "host.site.doctor"}
