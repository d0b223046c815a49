"""CLI edges: a closed pipe ends quietly; --help names the delegated commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from host.admin import Admin
from host.privacy import keyfile
from host.store.db import open_db


def test_closed_pipe_gives_no_traceback(tmp_path: Path) -> None:
    db_path = tmp_path / "site.db"
    db = open_db(db_path)
    keyfile.create(f"{db_path}.key")
    db.execute("PRAGMA synchronous=OFF")  # fixture speed only; the CLI reopens with its pragmas
    admin = Admin(db)
    for i in range(1500):  # > 64 KiB of output: more than a pipe buffer holds
        admin.add_member(name=f"Member {i:04d}", consent_terms="t1")
    db.close()
    proc = subprocess.Popen([sys.executable, "-m", "host.cli", "--db", str(db_path), "member", "list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0
    assert first.split()[:2] == [b"id", b"name"]
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_help_names_the_delegated_commands(capsys) -> None:
    from host.cli.app import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("daemon", "flash", "sim", "demo"):
        assert name in out.split("also:")[1]
