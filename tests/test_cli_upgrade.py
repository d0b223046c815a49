"""Schema upgrades only on request: ``tapkiosk upgrade`` backs up, then migrates; every other
command and the daemon refuse an older schema with one line; ``--version``; dated backups."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from host.cli.app import main
from host.store.db import MIGRATIONS

LATEST = MIGRATIONS[-1][0]


def make_old_db(path, upto: int = 5) -> None:
    """A database as an older tapkiosk left it: migrations 1..``upto`` only."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT "
                 "NULL, applied_at INTEGER NOT NULL)")
    for version, name, sql in MIGRATIONS[:upto]:
        conn.executescript(sql)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)",
                     (version, name, int(time.time())))
    conn.close()


def schema(path) -> int:
    with sqlite3.connect(path) as c:
        return c.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]


@pytest.fixture
def old_db(tmp_path, monkeypatch):
    monkeypatch.delenv("TAPKIOSK_DB", raising=False)
    path = tmp_path / "site.db"
    make_old_db(path)
    return path


@pytest.mark.parametrize("argv", [["verify"], ["device", "list"], ["report", "devices"]])
def test_commands_refuse_an_old_schema_and_change_nothing(old_db, capsys, argv):
    assert main(["--db", str(old_db), *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert "schema 5" in err and "tapkiosk --db" in err and "upgrade" in err
    assert schema(old_db) == 5


def test_upgrade_backs_up_then_migrates(old_db, tmp_path, capsys):
    backups = tmp_path / "backups"
    assert main(["--db", str(old_db), "--json", "upgrade", "--backup-dir", str(backups)]) == 0
    capsys.readouterr()
    assert schema(old_db) == LATEST
    [copy] = list(backups.iterdir())
    assert copy.name.startswith("site-") and copy.suffix == ".db"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o660
    assert schema(copy) == 5                     # the copy is the database before the upgrade
    assert main(["--db", str(old_db), "verify"]) == 0
    # Nothing left to migrate: no second backup.
    assert main(["--db", str(old_db), "upgrade", "--backup-dir", str(backups)]) == 0
    assert len(list(backups.iterdir())) == 1


def test_daemon_refuses_an_old_schema_with_exit_2(old_db):
    r = subprocess.run([sys.executable, "-m", "host.daemon", "--db", str(old_db),
                        "--serial", "socket://127.0.0.1:9"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "tapkiosk --db" in r.stderr and "upgrade" in r.stderr
    assert schema(old_db) == 5


def test_version_prints_the_package_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "tapkiosk 0.2.0"


def test_backup_keeps_dated_generations_each_verified(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TAPKIOSK_DB", raising=False)
    db, folder = tmp_path / "site.db", tmp_path / "bk"
    assert main(["--db", str(db), "init"]) == 0
    made = []
    for _ in range(4):
        capsys.readouterr()
        assert main(["--db", str(db), "--json", "backup", str(folder), "--keep", "3"]) == 0
        import json
        out = json.loads(capsys.readouterr().out)
        assert out["verify"] == "ok"
        made.append(out["backup"])
    from host.store.backup import generations
    left = generations(folder, "site")
    assert sorted(map(str, folder.iterdir())) == sorted(made[1:])   # the oldest went
    assert [str(p) for p in left] == made[1:]                        # oldest first
    for p in left:
        assert stat.S_IMODE(p.stat().st_mode) == 0o660
        assert main(["--db", str(p), "verify"]) == 0
