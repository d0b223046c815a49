# Runs on CPython (pytest support): a throwaway PostgreSQL server for the tests on both backends.
"""A real PostgreSQL for the tests (Debian's ``postgresql`` package, installed by ``make test``).

``PgServer`` runs ``initdb`` into a temporary directory and ``pg_ctl start`` on a free
loopback port with its socket directory in that temporary directory, fsync on (the tests
check durability), trust authentication for 127.0.0.1. initdb and postgres refuse to run as
root: as root they run as the ``postgres`` system user, owning the temporary directory.
``new_database()`` is a fresh database copied from a template that has every migration, so
each test starts from an empty, migrated store in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path


def pg_bin(name: str) -> str | None:
    """The PostgreSQL program ``name`` (on PATH, else Debian's /usr/lib/postgresql/N/bin)."""
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


def unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here (None when they can)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    if pg_bin("initdb") is None or pg_bin("pg_ctl") is None:
        return "PostgreSQL is not installed (make postgresql, or apt-get install postgresql)"
    if os.getuid() == 0 and _uid_of("postgres") is None:
        return "running as root and there is no 'postgres' user to run the server as"
    return None


def _uid_of(user: str) -> int | None:
    import pwd
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One PostgreSQL server in a temporary directory (see the module doc)."""

    def __init__(self, port: int | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tapkiosk-pg-"))
        self.data = self.dir / "data"
        self.port = port or _free_port()
        self.as_postgres = os.getuid() == 0
        if self.as_postgres:
            os.chown(self.dir, _uid_of("postgres"), -1)
        self._names = itertools.count(1)
        self._lock = threading.Lock()
        self.template = "tapkiosk_template"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = list(argv)
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, cwd=self.dir, check=check, capture_output=True, text=True,
                              timeout=120)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def init(self) -> "PgServer":
        """initdb (trust authentication, UTF8, C collation)."""
        self._run(pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--locale=C")
        return self

    def start(self, attempts: int = 20) -> "PgServer":
        """pg_ctl start on the loopback port; waits until it accepts connections. After a
        kill -9 the old backends may still hold the shared memory for a moment: tried again."""
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on "
                "-c max_connections=200 -c shared_buffers=32MB")
        for attempt in range(attempts):
            r = self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                          str(self.dir / "log"), "-w", "-t", "60", "start", check=False)
            if r.returncode == 0:
                return self
            time.sleep(0.25)
        log = (self.dir / "log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"PostgreSQL did not start: {r.stdout}{r.stderr}\n{log}")

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop (``immediate`` is a crash: no checkpoint, recovery at the next start)."""
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def kill9(self) -> None:
        """SIGKILL the postmaster (its backends see it die and exit): a crash of the server.
        Returns once no process of the server is left (a backend that has not yet seen the
        postmaster die could still answer a query)."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 9)
        deadline = time.monotonic() + 30
        while self._processes() and time.monotonic() < deadline:
            time.sleep(0.02)

    def _processes(self) -> list[int]:
        """Pids of the processes working in this server's data directory."""
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/cwd") == os.path.realpath(self.data):
                        out.append(int(entry))
                except OSError:
                    continue
        return out

    def admin(self, sql: str) -> None:
        import psycopg
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(sql)

    def make_template(self) -> None:
        """The template database: every migration applied."""
        from host.store.db import open_db
        self.admin(f"DROP DATABASE IF EXISTS {self.template}")
        self.admin(f"CREATE DATABASE {self.template}")
        open_db(self.url(self.template), upgrade=True).close()

    def new_database(self) -> str:
        """URL of a new database copied from the migrated template."""
        with self._lock:
            name = f"t{os.getpid()}_{next(self._names)}"
            self.admin(f"CREATE DATABASE {name} TEMPLATE {self.template}")
        return self.url(name)

    def cleanup(self) -> None:
        """Stop the server (SIGKILL when pg_ctl could not) and remove its directory."""
        self.stop("immediate")
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().split()[0]), 9)
            except (OSError, ValueError):
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_server():
    """A started PostgreSQL server with its migrated template, removed afterwards; the test
    is skipped with the reason when PostgreSQL cannot run here."""
    import pytest

    why = unavailable()
    if why:
        pytest.skip(why)
    server = PgServer().init().start()
    try:
        server.make_template()
        yield server
    finally:
        server.cleanup()
