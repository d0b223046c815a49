"""The docs tell the truth: the operator walkthrough runs as written, the backup recipe makes a
usable copy, and every relative link points at a file (and heading) that exists."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

from host.cli import app as cli

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "host" / "README.md",
        ROOT / "protocol" / "README.md", ROOT / "deploy" / "README.md", ROOT / "DEVELOPERS.md"]


def console_blocks(path: Path) -> list[list[str]]:
    """The lines of every ```console block of a Markdown file."""
    blocks, cur = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if cur is None and line.strip() == "```console":
            cur = []
        elif cur is not None and line.strip() == "```":
            blocks.append(cur)
            cur = None
        elif cur is not None:
            cur.append(line)
    assert cur is None, f"unclosed ```console block in {path}"
    return blocks


def walkthrough(path: Path) -> list[tuple[str, list[str]]]:
    """[(command, expected output lines)] in document order."""
    steps: list[tuple[str, list[str]]] = []
    for block in console_blocks(path):
        for line in block:
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif line.strip() and line.strip() != "...":
                assert steps, f"output line before any command in {path}: {line!r}"
                steps[-1][1].append(line)
    return steps


def _norm(text: str) -> str:
    return " ".join(text.split())


def test_operator_walkthrough_runs_as_written(tmp_path, monkeypatch):
    steps = walkthrough(ROOT / "docs" / "operators.md")
    assert len(steps) >= 25, "the walkthrough lost its commands"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TAPKIOSK_DB", raising=False)
    for command, expected in steps:
        argv = shlex.split(command)
        if argv[0] == "export":
            name, _, value = argv[1].partition("=")
            # The doc's path, moved into the test's directory.
            monkeypatch.setenv(name, str(tmp_path / Path(value).name))
            continue
        assert argv[0] == "tapkiosk", f"the walkthrough may only run tapkiosk: {command}"
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(argv[1:])
        assert rc == 0, f"$ {command}\nexit {rc}\n{err.getvalue()}"
        got = _norm(out.getvalue())
        pos = 0
        for want in expected:
            i = got.find(_norm(want), pos)
            assert i >= 0, f"$ {command}\nexpected (in order): {want!r}\ngot:\n{out.getvalue()}"
            pos = i + len(_norm(want))
    assert (tmp_path / "site-export.json").exists()


def test_backup_recipe_in_deploy_doc_makes_a_consistent_copy(tmp_path):
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    m = re.search(r"^\s*(python3 -c \"import sqlite3.*)$", text, re.M)
    assert m, "docs/deploy.md lost its backup one-liner"
    db = tmp_path / "site.db"
    for argv in (["init"], ["member", "add", "--name", "Ann"], ["topup", "1", "100.00"]):
        assert cli.main(["--db", str(db), *argv]) == 0
    # Take the backup while another connection holds a read transaction (as the daemon may).
    busy = sqlite3.connect(db)
    busy.execute("BEGIN")
    busy.execute("SELECT count(*) FROM ledger").fetchone()
    backup = tmp_path / "backup.db"
    cmd = shlex.split(m.group(1))
    cmd = [sys.executable if c == "python3" else c for c in cmd]
    cmd = [str(db) if c.endswith("site.db") else str(backup) if c.endswith(".db") else c
           for c in cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    busy.rollback()
    busy.close()
    assert r.returncode == 0, r.stderr
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["--db", str(backup), "member", "show", "1"]) == 0
        assert cli.main(["--db", str(backup), "verify"]) == 0
    assert "balance_fen: 100.00" in out.getvalue() or "balance: 100.00" in out.getvalue()


def _slug(heading: str) -> str:
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    out, fence = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            out.add(_slug(line.lstrip("#")))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_and_headings(doc):
    text = doc.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # links inside code are not links
    bad = []
    for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor}")
    assert not bad, f"{doc.relative_to(ROOT)}: " + "; ".join(bad)


def test_docs_name_no_machine_paths():
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for pattern in (r"/work/", r"/tmp/tapkiosk-demo-\w", r"/home/\w+"):
            assert not re.search(pattern, text), f"{doc.relative_to(ROOT)} names {pattern}"
