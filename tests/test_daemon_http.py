# Runs on CPython (pytest): the daemon serves the HTTP API — [http] in daemon.toml, --http, --no-http, events on the bus.
from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from daemon_support import CARD, InProcessDaemon, make_site

from host.errors import InputError
from host.site.config import load_config
from host.store.db import open_db
from host.store.tokens import add_token


def test_http_defaults_to_loopback_8080_and_takes_the_toml_table_and_flags(tmp_path: Path) -> None:
    c = load_config(["--db", "x.db", "--serial", "loop://"])
    assert (c.http.enabled, c.http.address, c.http.port) == (True, "127.0.0.1", 8080)
    conf = tmp_path / "daemon.toml"
    conf.write_text('serial = ["loop://"]\n[http]\naddress = "0.0.0.0"\nport = 9000\n')
    c = load_config(["--config", str(conf)])
    assert (c.http.address, c.http.port) == ("0.0.0.0", 9000)
    c = load_config(["--config", str(conf), "--http", "127.0.0.1:0"])
    assert (c.http.address, c.http.port) == ("127.0.0.1", 0)
    assert load_config(["--config", str(conf), "--no-http"]).http.enabled is False


@pytest.mark.parametrize("argv, needle", [
    (["--http", "nohost"], "ADDR:PORT"), (["--http", "h:70000"], "ADDR:PORT"),
])
def test_bad_http_flag_is_refused(argv: list[str], needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        load_config(["--db", "x.db", "--serial", "loop://", *argv])


def test_bad_http_table_names_the_key(tmp_path: Path) -> None:
    conf = tmp_path / "daemon.toml"
    conf.write_text('serial = ["loop://"]\n[http]\nport = "eighty"\n')
    with pytest.raises(InputError, match=r"\[http\] port"):
        load_config(["--config", str(conf)])


def test_the_api_answers_on_the_configured_port_and_stops_first(tmp_path: Path) -> None:
    path = tmp_path / "site.db"
    make_site(path)
    db = open_db(path)
    token = add_token(db, "t", "sales")[1]
    db.conn.close()
    port = free_port()
    d = InProcessDaemon(["--db", str(path), "--serial", "loop://", "--http", f"127.0.0.1:{port}"])
    try:
        assert d.daemon.web.port == port
        r = httpx.get(f"http://127.0.0.1:{port}/v1/products",
                      headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and "coffee" in [p["id"] for p in r.json()["products"]]
    finally:
        d.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/products", timeout=2)


def test_a_busy_http_port_is_exit_2_and_starts_nothing(tmp_path: Path, capsys) -> None:
    from host.daemon import main
    path = tmp_path / "site.db"
    make_site(path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        import logging
        root = logging.getLogger("tapkiosk")
        saved = (root.handlers[:], root.propagate, root.level)
        try:
            rc = main(["--db", str(path), "--serial", "loop://", "--http", f"127.0.0.1:{port}"])
        finally:
            root.handlers[:], root.propagate, root.level = saved
    assert rc == 2
    err = capsys.readouterr().err
    assert "cannot serve the HTTP API" in err and str(port) in err


def test_taps_and_decisions_are_published_and_a_broken_bus_breaks_no_tap(tmp_path: Path) -> None:
    from host.rules.engine import Tap
    path = tmp_path / "site.db"
    make_site(path)
    d = InProcessDaemon(["--db", str(path), "--serial", "loop://"])
    try:
        sub = d.daemon.bus.subscribe()
        dec = d.daemon.service.submit_local_tap(Tap("kiosk-1", 0, CARD, amount_fen=100))
        assert dec.verdict == "grant"
        kinds = [sub.get(2).kind for _ in range(3)]
        assert kinds == ["device_online", "tap", "decision"]
        d.daemon.bus.publish = None            # anything that raises when called
        dec = d.daemon.service.submit_local_tap(Tap("kiosk-1", 0, CARD, amount_fen=100))
        assert dec.verdict == "grant" and d.daemon.service.publisher.failed >= 2
    finally:
        d.stop()
