"""The site install keeps its secrets: file modes of the database and the shipped deploy files,
and the broker configuration as shipped (ACL, logins, client ids) against a real mosquitto."""

from __future__ import annotations

import configparser
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import ROOT, free_port, micropython_path, mosquitto_path, wait_until

from host.errors import Conflict, InputError
from host.site.broker_acl import DAEMON_USER, acl_text, write_acl
from host.store.db import open_db
from host.store.devices import register_device
from sim.cli import VirtualReader
from sim.pn532 import PN532Emulator
from sim.run_device import SimBoard, make_config
from tools.flash import build_config


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


# ---------------------------------------------------------------------------------------
# issue #12 item 2: the broker ACL. A real mosquitto runs deploy/mosquitto.conf as shipped
# (only its port and file paths substituted), with the ACL written from a site database and
# a password file made by mosquitto_passwd.
# ---------------------------------------------------------------------------------------

PASSWORDS = {DAEMON_USER: "daemon-pw", "wash-3": "wash-3-pw", "gate-01": "gate-01-pw", "stranger": "stranger-pw"}


def mosquitto_passwd_path() -> str | None:
    return shutil.which("mosquitto_passwd") or next(
        (p for p in ("/usr/bin/mosquitto_passwd", "/usr/sbin/mosquitto_passwd") if os.path.exists(p)), None)


def start_site_broker(tmp_path: Path, db, passwords: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """mosquitto with the shipped configuration, the ACL written from ``db`` and a password
    file made by mosquitto_passwd; returns the process and its port."""
    exe, passwd = mosquitto_path(), mosquitto_passwd_path()
    if exe is None or passwd is None:
        pytest.fail("mosquitto and mosquitto_passwd are needed (make test installs them)")
    acl, pw = tmp_path / "tapkiosk.acl", tmp_path / "tapkiosk.passwd"
    write_acl(db, acl)
    for i, (user, password) in enumerate(passwords.items()):
        subprocess.run([passwd, *(["-c"] if i == 0 else []), "-b", str(pw), user, password], check=True,
                       capture_output=True)
    port = free_port()
    shipped = (ROOT / "deploy" / "mosquitto.conf").read_text()
    conf = (shipped.replace("listener 1883 127.0.0.1", f"listener {port} 127.0.0.1")
            .replace("/etc/mosquitto/tapkiosk.passwd", str(pw))
            .replace("/etc/mosquitto/tapkiosk.acl", str(acl)))
    assert conf.count(str(tmp_path)) == 2 and f"listener {port}" in conf
    # The test's own additions: where to keep the persistence file, and no privilege drop
    # (the temporary files belong to the user running the tests).
    conf += f"persistence_location {tmp_path}/\nuser {pwd.getpwuid(os.getuid()).pw_name}\n"
    (tmp_path / "mosquitto.conf").write_text(conf)
    proc = subprocess.Popen([exe, "-c", str(tmp_path / "mosquitto.conf")], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(lambda: proc.poll() is not None or _listening(port), 10, what="mosquitto to listen")
    if proc.poll() is not None:
        pytest.fail("mosquitto exited: " + proc.stderr.read().decode(errors="replace"))
    return proc, port


@pytest.fixture
def site_broker(tmp_path):
    """The site's broker for two registered readers; yields connect(user, client_id=, password=)."""
    db = open_db(tmp_path / "site.db")
    for dev in ("wash-3", "gate-01"):
        register_device(db, dev, "wash" if dev == "wash-3" else "gate", key=os.urandom(32))
    proc, port = start_site_broker(tmp_path, db, PASSWORDS)
    clients: list[Client] = []

    def connect(user: str, client_id: str | None = None, password: str | None = None) -> "Client":
        c = Client(port, user, password or PASSWORDS[user], client_id or user)
        clients.append(c)
        return c

    try:
        yield connect
    finally:
        for c in clients:
            c.close()
        proc.kill()
        proc.wait(5)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Client:
    """A paho client that records what it receives, its SUBACK codes and its disconnects."""

    def __init__(self, port: int, user: str, password: str, client_id: str) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.granted: dict[int, list[int]] = {}
        self.connack: list[int] = []
        self.disconnects = 0
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        c.username_pw_set(user, password)
        c.on_connect = lambda cl, ud, flags, rc, props: self.connack.append(rc.value)
        c.on_message = lambda cl, ud, m: self.got.append((m.topic, m.payload))
        c.on_subscribe = lambda cl, ud, mid, rcs, props: self.granted.__setitem__(mid, [r.value for r in rcs])
        c.on_disconnect = self._on_disconnect
        self.c = c
        c.connect("127.0.0.1", port)
        c.loop_start()
        wait_until(lambda: self.connack, 10, what=f"CONNACK for {user}")

    def _on_disconnect(self, *args) -> None:
        self.disconnects += 1

    @property
    def accepted(self) -> bool:
        return self.connack[-1] == 0

    def subscribe(self, topic: str) -> int:
        """SUBACK code (0/1 granted QoS, 128 refused)."""
        _rc, mid = self.c.subscribe(topic, qos=1)
        return wait_until(lambda: self.granted.get(mid), 10, what=f"SUBACK for {topic}")[0]

    def publish(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_acl_text_refuses_ids_that_would_widen_a_topic_or_be_the_daemon():
    with pytest.raises(InputError):
        acl_text(["wash/#"])
    with pytest.raises(InputError):
        acl_text(["a b"])
    with pytest.raises(Conflict):
        acl_text([DAEMON_USER])
    text = acl_text(["wash-3"])
    assert "user wash-3\ntopic write tapkiosk/v1/wash-3/up\n" in text and "#" not in text.split("\n\n", 1)[1]


def test_reader_login_gets_its_own_topics_only(site_broker):
    daemon = site_broker(DAEMON_USER)
    wash, gate = site_broker("wash-3"), site_broker("gate-01")
    assert daemon.accepted and wash.accepted and gate.accepted
    assert daemon.subscribe("tapkiosk/v1/+/up") < 128 and daemon.subscribe("tapkiosk/v1/+/status") < 128
    # A reader may subscribe to everything or to another reader's topics (mosquitto 2.0 grants
    # the SUBACK or refuses it, 128) but the broker delivers it none of their messages.
    for topic in ("#", "tapkiosk/v1/+/down", "tapkiosk/v1/gate-01/down", "tapkiosk/v1/+/up",
                  "tapkiosk/v1/gate-01/status"):
        wash.subscribe(topic)
    assert gate.subscribe("tapkiosk/v1/gate-01/down") < 128
    gate.publish("tapkiosk/v1/gate-01/up", b"gate tap")
    gate.publish("tapkiosk/v1/gate-01/status", b"online")
    # A reader cannot publish as another reader or as the host: the daemon and gate-01 never
    # see these; its own topic goes through (and, being later, arrives after).
    wash.publish("tapkiosk/v1/gate-01/up", b"forged")
    wash.publish("tapkiosk/v1/gate-01/status", b"offline")
    wash.publish("tapkiosk/v1/gate-01/down", b"forged decision")
    wash.publish("tapkiosk/v1/wash-3/up", b"own")
    wait_until(lambda: ("tapkiosk/v1/wash-3/up", b"own") in daemon.got, 10, what="the reader's own TAP")
    daemon.publish("tapkiosk/v1/gate-01/down", b"decision")
    daemon.publish("tapkiosk/v1/wash-3/down", b"wash decision")
    wait_until(lambda: gate.got, 10, what="the daemon's DECISION at gate-01")
    wait_until(lambda: wash.got, 10, what="the daemon's DECISION at wash-3")
    assert daemon.got == [("tapkiosk/v1/gate-01/up", b"gate tap"), ("tapkiosk/v1/gate-01/status", b"online"),
                          ("tapkiosk/v1/wash-3/up", b"own")]
    assert gate.got == [("tapkiosk/v1/gate-01/down", b"decision")]
    assert wash.got == [("tapkiosk/v1/wash-3/down", b"wash decision")]


def test_reader_cannot_take_the_daemons_client_id(site_broker):
    daemon = site_broker(DAEMON_USER)
    assert daemon.subscribe("tapkiosk/v1/+/up") < 128
    intruder = site_broker("wash-3", client_id=DAEMON_USER)
    assert intruder.accepted
    # Had the broker taken the client id, the daemon would have been disconnected at the
    # intruder's CONNECT; its later publish still reaches the daemon, on the first connection.
    intruder.publish("tapkiosk/v1/wash-3/up", b"after")
    wait_until(lambda: daemon.got, 10, what="a TAP at the daemon")
    assert daemon.disconnects == 0 and daemon.connack == [0]


def test_unknown_users_and_anonymous_clients_get_nothing(site_broker, tmp_path):
    stranger = site_broker("stranger")  # in the password file, but no registered device
    assert stranger.accepted
    stranger.subscribe("#")
    daemon = site_broker(DAEMON_USER)
    assert daemon.subscribe("tapkiosk/v1/+/up") < 128
    stranger.publish("tapkiosk/v1/wash-3/up", b"forged")
    wash = site_broker("wash-3")
    assert wash.subscribe("tapkiosk/v1/wash-3/down") < 128
    wash.publish("tapkiosk/v1/wash-3/up", b"own")
    daemon.publish("tapkiosk/v1/wash-3/down", b"decision")
    wait_until(lambda: wash.got and daemon.got, 10, what="the TAP at the daemon and the DECISION at wash-3")
    assert stranger.got == [] and daemon.got == [("tapkiosk/v1/wash-3/up", b"own")]
    wrong = site_broker("wash-3", password="guess")
    assert not wrong.accepted


def test_provisioned_reader_and_daemon_log_in_and_a_tap_goes_through(tmp_path):
    """issue #20 item 5: the logins fit together. A config.json as `flash provision` writes it
    (user = device id, --mqtt-password), the daemon as daemon.toml names it, the shipped broker
    configuration with the generated ACL: the real firmware's tap is granted by the real daemon."""
    from sim.cards import UidCard
    from firmware_rig import CARD, Daemon, make_site, taps

    if micropython_path() is None:
        pytest.skip("needs the MicroPython unix port")
    db_path = make_site(tmp_path, "wash-1", "wash")
    passwords = {DAEMON_USER: "daemon-pw", "wash-1": "wash-1-pw"}
    proc, port = start_site_broker(tmp_path, open_db(db_path), passwords)
    daemon = Daemon(tmp_path, db_path, "--mqtt", f"127.0.0.1:{port}", "--mqtt-user", DAEMON_USER,
                    "--mqtt-password", passwords[DAEMON_USER], "--mqtt-client-id", DAEMON_USER)
    emu = PN532Emulator()
    board = None
    try:
        daemon.start()
        cfg = build_config({"device_id": "wash-1", "kind": "wash", "program": 1, "link": "mqtt",
                            "wifi_ssid": "shop", "wifi_password": "longenough",
                            "broker": f"192.0.2.10:{port}", "mqtt_password": passwords["wash-1"]},
                           key=bytes(range(32)))
        # The simulated board runs on this machine: its broker is on loopback (a real board's
        # never is), and its PN532 and pins are the simulator's.
        sim = make_config("wash-1", "wash", bytes(range(32)), link="mqtt", broker=f"127.0.0.1:{port}")
        cfg.update(reader=sim["reader"], feedback=sim["feedback"], serial=sim["serial"])
        cfg["mqtt"]["broker"] = "127.0.0.1"
        assert cfg["mqtt"]["user"] == "wash-1" and cfg["service"] == 1
        board = SimBoard(tmp_path / "board", cfg, pn532_tcp=emu.serve_tcp(), pn532_bus=emu.serve_bus())
        board.start()
        assert board.wait_for("online", 30), "\n".join(board.output()) + daemon.err.read_text()
        emu.place(UidCard(bytes.fromhex(CARD)))
        rows = wait_until(lambda: taps(db_path, "wash-1"), 20, what="the tap in the ledger")
        emu.remove()
        assert [(r[1], r[2]) for r in rows] == [(CARD, "grant")]
    finally:
        if board is not None:
            board.kill()
        daemon.stop()
        emu.close()
        proc.kill()
        proc.wait(5)


def test_sim_readers_log_in_as_their_device_id(tmp_path):
    """`tapkiosk sim run --mqtt ... --mqtt-password PW`: simulated readers can use the site's broker."""
    r = VirtualReader(tmp_path / "b", "wash-3", "wash", bytes(32), mqtt="127.0.0.1:1883", service=1,
                      mqtt_password="pw")
    try:
        mqtt_cfg = json.loads((tmp_path / "b" / "config.json").read_text())["mqtt"]
    finally:
        r.close()
    assert (mqtt_cfg["user"], mqtt_cfg["password"]) == ("wash-3", "pw")


def test_cli_writes_the_acl_on_device_add_and_on_its_own(tmp_path, capsys):
    from host.cli import main as cli_main
    db, acl = str(tmp_path / "site.db"), tmp_path / "tapkiosk.acl"
    assert cli_main(["--db", db, "init"]) == 0
    assert cli_main(["--db", db, "device", "add", "wash-1", "wash", "--broker-acl", str(acl)]) == 0
    assert f"wrote {acl}: 1 device(s)" in capsys.readouterr().out
    assert "tapkiosk/v1/wash-1/up" in acl.read_text()
    assert cli_main(["--db", db, "device", "add", "gate-2", "gate"]) == 0
    assert "gate-2" not in acl.read_text()          # only when asked
    capsys.readouterr()
    assert cli_main(["--db", db, "--json", "broker-acl", str(acl)]) == 0
    assert json.loads(capsys.readouterr().out)["devices"] == ["gate-2", "wash-1"]
    assert "tapkiosk/v1/gate-2/up" in acl.read_text()
    # A broker ACL that cannot be written refuses the device before registering it.
    assert cli_main(["--db", db, "device", "add", "gate-3", "gate", "--broker-acl",
                     str(tmp_path / "no" / "such.acl")]) == 2
    assert "not a writable folder" in capsys.readouterr().err
    assert cli_main(["--db", db, "device", "key", "gate-3", "--show"]) == 2
