"""`tapkiosk doctor`: one line per check against daemon.toml, exit 1 when one fails; a real
mosquitto for the broker login, a missing serial port, the database and the readers. The
database checks run on SQLite and on PostgreSQL (``db_url``), and a PostgreSQL server that
does not answer is one FAIL line."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time

import pytest

from conftest import free_port, mosquitto_path, wait_until
from host.cli.app import main
from host.store.db import open_db
from host.store.db import safe_url
from host.store.devices import register_device, touch_device


def _site(tmp_path, broker_address: str, serial: str, db=None, **mqtt: str):
    db = db or tmp_path / "site.db"
    d = open_db(db)
    register_device(d, "gate-1", "gate")
    register_device(d, "wash-1", "wash")
    touch_device(d, "gate-1", last_seen=int(time.time()) - 3, online=True, fw="fw 0.2.0")
    d.execute("INSERT INTO taps (ts, device_id, seq, uid, verdict, reason, relay_ms, pattern, "
              "text, balance_fen, points, uses_left, device_time) VALUES "
              "(?, 'gate-1', 65537, '04A1B2C3', 'grant', 'ok', 0, 0, '', 0, 0, 0, ?)",
              (int(time.time()), int(time.time()) - 1))
    d.conn.close()
    extra = "".join(f'{k} = "{v}"\n' for k, v in mqtt.items())
    conf = tmp_path / "daemon.toml"
    conf.write_text(f'db = "{db}"\nserial = ["{serial}"]\nmqtt = "{broker_address}"\n{extra}')
    return db, conf


def test_doctor_reports_each_check_and_exits_1_on_a_failure(tmp_path, broker, capsys, db_url):
    db, conf = _site(tmp_path, broker.address, str(tmp_path / "ttyUSB9"), db_url)
    assert main(["doctor", "--config", str(conf)]) == 1
    lines = capsys.readouterr().out.splitlines()

    def status(what: str) -> str:
        [line] = [ln for ln in lines if ln[5:].startswith(what)]
        return line.split()[0]

    assert status(f"serial {tmp_path / 'ttyUSB9'}") == "FAIL"
    assert status(f"broker {broker.host}:{broker.port} login as (anonymous)") == "OK"
    assert status(f"database {safe_url(str(db))}") == "OK"
    assert status("reader gate-1 (gate)") == "OK" and status("reader wash-1 (wash)") == "FAIL"
    assert status("clock of gate-1") == "OK"
    assert any("no such port" in ln and "daemon.toml" in ln for ln in lines)
    assert lines[-1] == "2 check(s) failed"


def test_doctor_fails_a_stopped_broker_and_an_old_schema(tmp_path, broker, capsys, db_url):
    port = tmp_path / "ttyUSB0"
    port.write_text("")
    db, conf = _site(tmp_path, broker.address, str(port), db_url)
    broker.stop()
    d = open_db(db)
    d.conn.execute("DELETE FROM schema_migrations WHERE version = 3")
    d.conn.close()
    assert main(["doctor", "--config", str(conf)]) == 1
    out = capsys.readouterr().out
    assert f"OK   serial {port}" in out
    assert "FAIL broker" in out and "cannot connect" in out
    assert f"FAIL database {safe_url(str(db))}" in out and "upgrade" in out


def test_doctor_fails_a_postgresql_server_that_does_not_answer(tmp_path, broker, capsys):
    port = free_port()                   # nothing listens there
    url = f"postgresql://tapkiosk:secret@127.0.0.1:{port}/tapkiosk"
    conf = tmp_path / "daemon.toml"
    conf.write_text(f'db = "{url}"\nserial = []\nmqtt = "{broker.address}"\n')
    assert main(["doctor", "--config", str(conf)]) == 1
    out = capsys.readouterr().out
    [line] = [ln for ln in out.splitlines() if " database " in ln]
    assert line.startswith("FAIL database postgresql://tapkiosk:***@127.0.0.1") and \
        "Connection refused" in line and "secret" not in out


def _password_broker(tmp_path, user: str, password: str):
    """A real mosquitto that wants a login (mosquitto_passwd), on a free loopback port."""
    exe, passwd = mosquitto_path(), shutil.which("mosquitto_passwd")
    if exe is None or passwd is None:
        pytest.fail("mosquitto and mosquitto_passwd are needed (make test installs them)")
    pw, port = tmp_path / "passwd", free_port()
    subprocess.run([passwd, "-c", "-b", str(pw), user, password], check=True,
                   capture_output=True)
    (tmp_path / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\n"
        f"persistence false\nuser {pwd.getpwuid(os.getuid()).pw_name}\n")
    proc = subprocess.Popen([exe, "-c", str(tmp_path / "mosquitto.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_until(lambda: proc.poll() is not None or listening(), 10, what="mosquitto")
    if proc.poll() is not None:
        pytest.fail("mosquitto exited: " + proc.stderr.read().decode(errors="replace"))
    return proc, port


def test_doctor_checks_the_broker_login(tmp_path, capsys):
    proc, port = _password_broker(tmp_path, "tapkiosk-daemon", "right")
    try:
        for password, want in (("right", "OK"), ("wrong", "FAIL")):
            (tmp_path / password).mkdir()
            _, conf = _site(tmp_path / password, f"127.0.0.1:{port}", "socket://127.0.0.1:1",
                            mqtt_user="tapkiosk-daemon", mqtt_password=password)
            main(["doctor", "--config", str(conf)])
            line = next(ln for ln in capsys.readouterr().out.splitlines() if "broker" in ln)
            assert line.startswith(want), line
            if want == "FAIL":
                assert "password" in line
    finally:
        proc.kill()
        proc.wait(5)
