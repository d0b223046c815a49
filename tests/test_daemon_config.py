# Runs on CPython (pytest): the daemon's configuration — bad config is one line and exit 2.
"""Daemon configuration: flags, TOML and their errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from daemon_support import ROOT, make_site

from host.daemon import Daemon
from host.errors import HostError
from host.site.config import load_config
from host.site.writer import WriterClosed


@pytest.mark.parametrize("argv, needle", [
    ([], "nothing to serve"),
    (["--mqtt", "localhost:99999"], "port must be 1..65535"),
    (["--serial", "/dev/null", "--baud", "fast"], "bad baud"),
    (["--nfc", "udp:127.0.0.1:1"], "nfc_device"),
    (["--mqtt", "h:1", "--heartbeat-s", "100", "--offline-after-s", "10"], "offline_after_s"),
    (["--mqtt", "h:1", "--mqtt-user", "u"], "go together"),
    (["--mqtt", "h:1", "--log-level", "loud"], "log_level"),
    (["--nope"], "unrecognized arguments"),
])
def test_bad_flags_one_line_exit_2(argv: list[str], needle: str, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from host.daemon import main
    assert main(["--db", str(tmp_path / "x.db"), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert err.count("\n") == 1 and err.startswith("tapkiosk daemon: error:")


def test_bad_toml_and_unknown_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from host.daemon import main
    bad = tmp_path / "bad.toml"
    bad.write_text("mqtt = \n")
    assert main(["--config", str(bad)]) == 2
    assert "bad config" in capsys.readouterr().err
    unk = tmp_path / "unk.toml"
    unk.write_text('mqtt = "127.0.0.1:1883"\nmqqt_user = "x"\n')
    assert main(["--config", str(unk)]) == 2
    assert "unknown key 'mqqt_user'" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "missing.toml")]) == 2


def test_flags_win_over_file(tmp_path: Path) -> None:
    conf = tmp_path / "d.toml"
    conf.write_text('db = "a.db"\nmqtt = "127.0.0.1:1883"\nheartbeat_s = 20\n'
                    'serial = ["socket://127.0.0.1:1"]\n')
    c = load_config(["--config", str(conf), "--heartbeat-s", "25", "--db", "b.db"])
    assert (c.db, c.heartbeat_s, c.mqtt_port, c.serial) == ("b.db", 25, 1883,
                                                            ["socket://127.0.0.1:1"])


def test_shipped_example_config_is_valid(tmp_path: Path) -> None:
    c = load_config(["--config", str(ROOT / "deploy" / "daemon.toml")])
    assert c.mqtt is not None and c.metrics_port is not None


def test_unopenable_db_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from host.daemon import main
    (tmp_path / "f").write_text("x")
    assert main(["--db", str(tmp_path / "f" / "site.db"), "--mqtt", "127.0.0.1:1"]) == 2
    assert "cannot open database" in capsys.readouterr().err


def test_link_that_cannot_start_stops_the_ones_before_it(tmp_path: Path) -> None:
    """The serial link starts, then the NFC device turns out unregistered: start() raises
    and leaves no link running and the writer closed."""
    path = tmp_path / "site.db"
    make_site(path)
    d = Daemon(load_config(["--db", str(path), "--serial", "loop://", "--no-http",
                            "--nfc", "udp:127.0.0.1:1", "--nfc-device", "nobody"]))
    with pytest.raises(HostError, match="not registered"):
        d.start()
    assert d.links == []
    with pytest.raises(WriterClosed):
        d.writer.call(lambda db: None)
    assert not any(t.name == "serial loop://" for t in threading.enumerate() if t.is_alive())


def test_missing_database_is_refused_not_created(tmp_path: Path, capsys) -> None:
    from host.daemon import main

    missing = tmp_path / "typo.db"
    assert main(["--db", str(missing), "--serial", "loop://"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0] and "init" in err[0]
    assert not missing.exists()
