# Runs on CPython (host): `tapkiosk doctor` — the site checked against daemon.toml, one line per check.
"""``tapkiosk doctor [--config /etc/tapkiosk/daemon.toml] [daemon flags]`` — is this site PC
ready to serve its readers?

It reads the daemon's configuration (``host.site.config.load_config``: the same file and flags
as ``tapkiosk daemon``) and prints one line per check, ``OK``, ``FAIL`` (with what to fix) or
``SKIP`` (with why):

* each configured serial port exists and can be opened for reading and writing;
* the broker accepts the daemon's login (``mqtt``, ``mqtt_user``, ``mqtt_password``; a bare
  MQTT CONNECT, answered by CONNACK, then the connection is dropped without taking any message:
  the broker may hand the daemon's session over for that moment, and the daemon reconnects);
* the database opens, is at this version's schema and takes the write lock;
* each registered reader was seen within ``offline_after_s`` and is online;
* the readers' clocks agree with this PC's (the device time of each reader's newest online tap
  against the time it was stored);
* no tap granted during a WAN outage was refused when replayed in the last week (a chain
  store, ``tapkiosk report offline``).

Exit 0 when nothing failed, 1 when a check failed, 2 for a bad configuration.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import ssl
import sys
import time
from typing import Callable, NamedTuple

from host.errors import HostError
from host.site.config import DaemonConfig, load_config

#: Global ``tapkiosk`` options this command takes (``tapkiosk --db X doctor``).
GLOBAL_OPTIONS = ("--db", "--policy")
#: A reader clock further off than this from the PC's fails the clock check.
CLOCK_SKEW_S = 120
_TIMEOUT_S = 5.0
_CONNACK = {1: "protocol version refused", 2: "client id refused", 3: "broker unavailable",
            4: "bad user name or password", 5: "not authorised"}


class Check(NamedTuple):
    """One result line: status OK, FAIL or SKIP; what was checked; what it found or to fix."""

    status: str
    what: str
    note: str = ""

    def line(self) -> str:
        return f"{self.status:<4} {self.what}" + (f": {self.note}" if self.note else "")


def serial_ports(c: DaemonConfig) -> list[Check]:
    """Each ``serial`` entry: a device path that exists and opens read-write, or a
    ``socket://HOST:PORT`` that accepts a connection (other URLs are skipped)."""
    out = []
    for port in c.serial:
        what = f"serial {port}"
        if port.startswith("socket://"):
            host, _, num = port[len("socket://"):].rpartition(":")
            try:
                socket.create_connection((host, int(num)), timeout=_TIMEOUT_S).close()
                out.append(Check("OK", what))
            except (OSError, ValueError) as e:
                out.append(Check("FAIL", what, f"cannot connect ({e}): is the serial server "
                                 "running? fix serial in daemon.toml"))
        elif "://" in port:
            out.append(Check("SKIP", what, "a network port; the daemon checks it at start"))
        elif not os.path.exists(port):
            out.append(Check("FAIL", what, "no such port: plug the reader's USB-serial "
                             "adapter in (ls /dev/serial/by-id) or fix serial in daemon.toml"))
        elif not os.access(port, os.R_OK | os.W_OK):
            out.append(Check("FAIL", what, "no permission: add the daemon's user to the "
                             "dialout group (usermod -aG dialout tapkiosk)"))
        else:
            out.append(Check("OK", what))
    return out


def _connect_packet(client_id: str, user: str | None, password: str | None) -> bytes:
    """An MQTT 3.1.1 CONNECT (clean session off: a persistent session is never wiped)."""
    def field(s: str) -> bytes:
        b = s.encode()
        return len(b).to_bytes(2, "big") + b
    flags = (0x80 if user else 0) | (0x40 if user and password is not None else 0)
    body = field("MQTT") + bytes([4, flags]) + (30).to_bytes(2, "big") + field(client_id)
    if user:
        body += field(user) + (field(password) if password is not None else b"")
    size, n = b"", len(body)
    while True:
        n, digit = n >> 7, n & 0x7F
        size += bytes([digit | (0x80 if n else 0)])
        if not n:
            return b"\x10" + size + body


def broker_login(c: DaemonConfig) -> list[Check]:
    """The broker answers CONNECT with the daemon's credentials with CONNACK 0."""
    if not c.mqtt:
        return []
    what = f"broker {c.mqtt_host}:{c.mqtt_port} login as {c.mqtt_user or '(anonymous)'}"
    try:
        sock = socket.create_connection((c.mqtt_host, c.mqtt_port), timeout=_TIMEOUT_S)
    except OSError as e:
        return [Check("FAIL", what, f"cannot connect ({e}): is mosquitto running "
                      "(systemctl status mosquitto)? fix mqtt in daemon.toml")]
    try:
        if c.mqtt_tls:
            ctx = ssl.create_default_context(cafile=c.mqtt_ca)
            sock = ctx.wrap_socket(sock, server_hostname=c.mqtt_host)
        sock.sendall(_connect_packet(c.mqtt_client_id, c.mqtt_user, c.mqtt_password))
        ack = b""
        while len(ack) < 4:
            chunk = sock.recv(4 - len(ack))
            if not chunk:
                break
            ack += chunk
    except (OSError, ssl.SSLError) as e:
        return [Check("FAIL", what, f"no answer ({e}): check mqtt_tls and mqtt_ca")]
    finally:
        sock.close()
    if len(ack) < 4 or ack[0] != 0x20:
        return [Check("FAIL", what, "the broker closed the connection: check the broker's log")]
    if ack[3] != 0:
        why = _CONNACK.get(ack[3], f"refused ({ack[3]})")
        return [Check("FAIL", what, f"{why}: fix mqtt_user/mqtt_password in daemon.toml or "
                      "the broker's password file (mosquitto_passwd)")]
    return [Check("OK", what)]


def database(c: DaemonConfig) -> tuple[list[Check], object | None]:
    """The database opens at this version's schema and takes the write lock; returns the open
    database for the reader checks (None when it failed)."""
    from host.store.db import safe_url, is_postgres, open_db, schema_version
    pg = is_postgres(c.db)
    shown = safe_url(c.db) if pg else c.db
    what = f"database {shown}"
    if not pg and not os.path.exists(c.db):
        return [Check("FAIL", what, f"missing: tapkiosk --db {c.db} init")], None
    try:
        db = open_db(c.db)
    except HostError as e:     # also a PostgreSQL server that does not answer
        return [Check("FAIL", what, safe_url(str(e)))], None
    try:
        db.conn.execute("PRAGMA busy_timeout = 2000")
        db.conn.execute("BEGIN IMMEDIATE")
        db.conn.execute("ROLLBACK")
    except sqlite3.Error as e:
        return [Check("FAIL", what, f"not writable ({e}): the daemon's user must be in the "
                      "tapkiosk group and the files 0660 (docs/deploy.md)")], db
    return [Check("OK", what, f"schema {schema_version(db)}, writable")], db


def readers(c: DaemonConfig, db, now: float) -> list[Check]:  # noqa: ANN001 - sqlite_utils
    """Each registered reader was seen within ``offline_after_s`` and is online."""
    from host.store.devices import list_devices
    out = []
    devices = list_devices(db)
    if not devices:
        return [Check("FAIL", "readers", "none registered: provision them (docs/technicians.md)")]
    for d in devices:
        what = f"reader {d['device_id']} ({d['kind']})"
        seen = d["last_seen"] or 0
        if not seen:
            out.append(Check("FAIL", what, "never seen: check its link and that it was "
                             "provisioned against this database"))
        elif now - seen > c.offline_after_s or not d["online"]:
            out.append(Check("FAIL", what, f"last seen {int(now - seen)} s ago: power, cable "
                             "or Wi-Fi (docs/technicians.md, 'The reader is offline')"))
        else:
            out.append(Check("OK", what, f"online, seen {int(now - seen)} s ago, fw {d['fw']}"))
    return out


def clocks(db, now: float) -> list[Check]:  # noqa: ANN001 - sqlite_utils
    """Each reader's newest online tap: its device time against when it was stored."""
    rows = db.execute(
        "SELECT device_id, ts, device_time FROM taps t WHERE offline = 0 AND device_time > 0 "
        "AND id = (SELECT max(id) FROM taps WHERE device_id = t.device_id AND offline = 0 AND "
        "device_time > 0) ORDER BY device_id").fetchall()
    if not rows:
        return [Check("SKIP", "clocks", "no reader has reported its time yet (no tap with a "
                      "device time)")]
    out = []
    for dev, ts, device_time in rows:
        skew = int(ts) - int(device_time)
        what = f"clock of {dev}"
        if abs(skew) > CLOCK_SKEW_S:
            out.append(Check("FAIL", what, f"{skew:+d} s from this PC at its last tap: check "
                             "this PC's time (timedatectl) and restart the reader"))
        else:
            out.append(Check("OK", what, f"{skew:+d} s"))
    return out


#: Offline taps refused on replay within this many seconds fail the check.
OFFLINE_RECENT_S = 7 * 86400


def offline_replays(db, now: float) -> list[Check]:  # noqa: ANN001 - sqlite_utils
    """Taps a store granted during a WAN outage that the chain's database refused on replay
    (``offline_unapplied``): a FAIL while any is from the last week. No line when there was
    never one."""
    total, recent = db.execute("SELECT count(*), coalesce(sum(CASE WHEN recorded_at >= ? THEN 1 "
                               "ELSE 0 END), 0) FROM offline_unapplied",
                               (int(now) - OFFLINE_RECENT_S,)).fetchone()
    if not total:
        return []
    what = "offline taps refused on replay"
    note = f"{recent} this week, {total} in all: see tapkiosk report offline"
    return [Check("FAIL" if recent else "OK", what, note)]


def run(c: DaemonConfig, say: Callable[[str], None], now: float | None = None) -> int:
    """Every check, one line each through ``say``; 1 when one failed."""
    now = time.time() if now is None else now
    results = serial_ports(c) + broker_login(c)
    checks, db = database(c)
    results += checks
    if db is not None:
        try:
            results += readers(c, db, now) + clocks(db, now) + offline_replays(db, now)
        finally:
            db.conn.close()
    for r in results:
        say(r.line())
    failed = sum(r.status == "FAIL" for r in results)
    say(f"{failed} check(s) failed" if failed else "all checks passed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tapkiosk doctor``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(argv)
    except HostError as e:
        print(f"tapkiosk doctor: error: {e}", file=sys.stderr)
        return e.exit_code
    return run(config, print)


if __name__ == "__main__":
    sys.exit(main())
