"""The site install keeps its secrets: file modes of the database and the shipped deploy files."""

from __future__ import annotations

import configparser
import os
import stat
from pathlib import Path

import pytest

from conftest import ROOT

from host.store.db import open_db


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o000, 0o660), (0o002, 0o660), (0o022, 0o640), (0o007, 0o660)])
def test_new_database_and_its_wal_give_others_no_access(tmp_path, umask, mask, expected):
    umask(mask)
    path = tmp_path / "site" / "site.db"
    db = open_db(path)
    db.execute("CREATE TABLE t (x)")  # WAL mode: this write creates site.db-wal and site.db-shm
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    assert wal.exists() and shm.exists()
    for f in (path, wal, shm):
        assert _mode(f) == expected, f"{f.name} is {oct(_mode(f))}"
        assert _mode(f) & 0o007 == 0, f"{f.name} is open to others"
    db.conn.close()


def test_open_db_keeps_an_existing_file_and_its_mode(tmp_path, umask):
    umask(0o000)
    path = tmp_path / "site.db"
    open_db(path).execute("CREATE TABLE t (x)")
    os.chmod(path, 0o600)
    db = open_db(path)
    assert db["t"].exists()
    assert _mode(path) == 0o600


def _unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment]
    cp.read(ROOT / "deploy" / "tapkiosk.service")
    return cp


def test_service_unit_keeps_the_state_directory_for_the_group_only():
    svc = _unit()["Service"]
    assert svc["User"] == "tapkiosk" and svc["Group"] == "tapkiosk"
    assert "dialout" in svc["SupplementaryGroups"].split()
    # systemd chmods the StateDirectory at every start (default 0755): the mode is set here.
    assert svc["StateDirectoryMode"] == "2770"
    # Files the daemon creates (database, WAL, SHM): group read/write, nothing for others.
    assert int(svc["UMask"], 8) & 0o007 == 0o007 and int(svc["UMask"], 8) & 0o060 == 0
