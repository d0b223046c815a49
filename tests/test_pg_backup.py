# Runs on CPython (pytest): `tapkiosk backup` of a PostgreSQL database — pg_dump, verified, restorable.
"""Issue 17 (chain): ``tapkiosk backup DIR`` on a ``postgresql://`` database writes a dated
custom-format ``pg_dump`` in DIR, verified in the snapshot it dumps; ``pg_restore`` of it into
a fresh database passes ``verify`` and holds the same balances; without pg_dump the command
fails with one line and leaves nothing. Runs on the session's real PostgreSQL server."""

from __future__ import annotations

import json
import subprocess

import pytest

from host.admin import Admin
from host.cli.app import main
from host.errors import InputError
from host.rules.engine import Engine, Tap
from host.store import pg_backup
from host.store.db import open_db
from host.store.devices import register_device
from site_support import UID


@pytest.fixture
def chain_url(pg_server, tmp_path, monkeypatch):
    from host.privacy import keyfile
    key = str(tmp_path / "chain.key")
    keyfile.create(key)
    monkeypatch.setenv(keyfile.ENV, key)
    monkeypatch.delenv("TAPKIOSK_DB", raising=False)
    url = pg_server.new_database()
    db = open_db(url)
    try:
        admin = Admin(db)
        register_device(db, "K1", "kiosk")
        mid = admin.add_member("Li Lei", phone="13800138000", consent_terms="t1")["member_id"]
        admin.enroll_card(mid, UID)
        admin.topup(mid, 100_00)
        assert Engine(db).decide(Tap("K1", 1, UID, amount_fen=10_00)).verdict == "grant"
    finally:
        db.conn.close()
    return url


def _balances(url):
    db = open_db(url)
    try:
        return db.execute("SELECT id, principal_fen, bonus_fen, points FROM members ORDER BY id"
                          ).fetchall()
    finally:
        db.conn.close()


def test_backup_dumps_and_restores_into_a_fresh_database(chain_url, pg_server, tmp_path,
                                                         capsys):
    folder = tmp_path / "backups"
    made = []
    for _ in range(3):
        assert main(["--db", chain_url, "--json", "backup", str(folder), "--keep", "2"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["verify"] == "ok" and out["backup"].endswith(".dump")
        made.append(out["backup"])
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        m.rsplit("/", 1)[1] for m in made[1:])          # the oldest pruned
    assert (folder / made[-1].rsplit("/", 1)[1]).stat().st_mode & 0o777 == 0o660
    pg_server.admin("CREATE DATABASE restored_backup")
    fresh = pg_server.url("restored_backup")
    done = subprocess.run([pg_backup.pg_tool("pg_restore"), "--no-owner", "-d", fresh,
                           made[-1]], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert main(["--db", fresh, "verify"]) == 0
    capsys.readouterr()
    assert _balances(fresh) == _balances(chain_url) and _balances(fresh)[0][1] > 0
    assert main(["--db", fresh, "--json", "member", "show", "--card", UID, "--reveal"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "Li Lei"   # the same data key


def test_backup_reports_a_ledger_the_projections_disagree_with(chain_url, tmp_path, capsys):
    db = open_db(chain_url)
    db.execute("UPDATE members SET principal_fen = principal_fen + 1")
    db.conn.close()
    assert main(["--db", chain_url, "--json", "backup", str(tmp_path / "b")]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["verify"] == "FAILED" and out["problems"]
    assert (tmp_path / "b" / out["backup"].rsplit("/", 1)[1]).exists()   # kept for a look


def test_backup_without_pg_dump_fails_with_one_line(chain_url, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pg_backup.shutil, "which", lambda name: None)
    monkeypatch.setattr(pg_backup.glob, "glob", lambda pattern: [])
    assert main(["--db", chain_url, "backup", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pg_dump not found" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").iterdir())


def test_a_failing_pg_dump_leaves_no_file(chain_url, tmp_path, capsys, monkeypatch):
    fake = tmp_path / "pg_dump"
    fake.write_text("#!/bin/sh\necho 'pg_dump: error: server version mismatch' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(pg_backup.shutil, "which", lambda name: str(fake))
    assert main(["--db", chain_url, "backup", str(tmp_path / "b")]) == 2
    assert "pg_dump failed: pg_dump: error: server version mismatch" in capsys.readouterr().err
    assert list((tmp_path / "b").iterdir()) == []


def test_a_server_that_does_not_answer_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(pg_backup, "pg_tool", lambda name: name)     # found; the server refuses
    with pytest.raises(InputError, match="cannot open database"):
        pg_backup.dump("postgresql://nobody@127.0.0.1:1/x", tmp_path / "b")
    assert not (tmp_path / "b").exists()
