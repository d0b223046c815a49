# Runs on CPython (host, technician laptop): the mosquitto ACL file of a site, from its registered devices.
"""Broker access list for the site's MQTT readers.

Every reader logs in to mosquitto as its device id (``tools/flash.py`` writes that user into
``config.json``); the daemon logs in as :data:`DAEMON_USER`. The ACL written here gives

- each registered device: publish on ``tapkiosk/v1/<id>/up`` and ``.../status`` (its retained
  online flag and last will), subscribe to ``tapkiosk/v1/<id>/down``; nothing else;
- the daemon: subscribe to every reader's ``up`` and ``status``, publish on every ``down``,
  and publish the site's events on ``tapkiosk/v1/events/<kind>`` (``host.web.events``);
- any other login (a password-file user that is no registered device): nothing.

With ``use_username_as_clientid true`` in ``deploy/mosquitto.conf`` a reader cannot take the
daemon's client id either. docs/deploy.md says what a stolen reader login can still do.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from host.errors import Conflict, InputError

#: The daemon's broker login (``mqtt_user`` in deploy/daemon.toml, a ``mosquitto_passwd`` user).
DAEMON_USER = "tapkiosk-daemon"
PREFIX = "tapkiosk/v1/"
# The devices table's CHECK rule: no space, '+', '#' or '/' that would widen a topic.
_DEVICE_ID = re.compile(r"[A-Za-z0-9_.-]{1,16}")
#: The ACL holds no secret, but mosquitto only needs to read it: root:mosquitto 0640 on a site.
ACL_MODE = 0o640


def acl_text(device_ids: Iterable[str], daemon_user: str = DAEMON_USER) -> str:
    """The ACL file's content for these devices (sorted, one block per device).

    Raises:
        InputError: a device id that is not one (it could widen a topic pattern).
        Conflict: a device id equal to the daemon's user (that reader would get the daemon's rights).
    """
    ids = sorted(set(device_ids))
    for dev in ids:
        if not isinstance(dev, str) or not _DEVICE_ID.fullmatch(dev):
            raise InputError(f"bad device id {dev!r} for the broker ACL")
        if dev == daemon_user:
            raise Conflict(f"device id {dev!r} is the daemon's broker user: rename the device")
    lines = [
        "# mosquitto ACL of a tapkiosk site: written by tapkiosk from the registered devices.",
        "# Do not edit: write it again (`python -m host.site.broker_acl --db SITE.db FILE`, or",
        "# `flash.py provision --broker-acl FILE`), then reload mosquitto. Unknown users get nothing.",
        "",
        f"user {daemon_user}",
        f"topic read {PREFIX}+/up",
        f"topic read {PREFIX}+/status",
        f"topic write {PREFIX}+/down",
        f"topic write {PREFIX}events/+",
    ]
    for dev in ids:
        lines += ["", f"user {dev}",
                  f"topic write {PREFIX}{dev}/up",
                  f"topic write {PREFIX}{dev}/status",
                  f"topic read {PREFIX}{dev}/down"]
    return "\n".join(lines) + "\n"


def registered_devices(db) -> list[str]:
    """Every device id in the site database, sorted."""
    return [row[0] for row in db.execute("SELECT device_id FROM devices ORDER BY device_id")]


def write_acl(db, path: str | os.PathLike, daemon_user: str = DAEMON_USER) -> list[str]:
    """Write the ACL for every registered device to ``path``, atomically (a reloading broker
    never reads half a file), mode :data:`ACL_MODE`, keeping the group of an existing file.
    Returns the device ids written.

    Raises:
        InputError: the folder does not exist or cannot be written.
        Conflict: a device id equal to the daemon's user.
    """
    ids = registered_devices(db)
    text = acl_text(ids, daemon_user)
    target = Path(path)
    try:
        old = target.stat()
    except FileNotFoundError:
        old = None
    except OSError as e:
        raise InputError(f"cannot write the broker ACL {target}: {e.strerror}") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", dir=target.parent)
    except OSError as e:
        raise InputError(f"cannot write the broker ACL {target}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(text)
        os.chmod(tmp, ACL_MODE)
        if old is not None:
            try:
                os.chown(tmp, old.st_uid, old.st_gid)
            except PermissionError:
                pass  # not root: the file stays ours, with our group
        os.replace(tmp, target)
    except OSError as e:
        raise InputError(f"cannot write the broker ACL {target}: {e.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ids


def main(argv: list[str] | None = None) -> int:
    """``python -m host.site.broker_acl --db SITE.db ACL_FILE``: write the ACL, print one line;
    exit 2 on bad input (missing database, unwritable file), 1 on a conflict."""
    import argparse
    import sys

    from host.errors import HostError
    from host.store.db import open_db

    p = argparse.ArgumentParser(prog="tapkiosk broker-acl", description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True)
    p.add_argument("path", help="the ACL file mosquitto reads (acl_file in its configuration)")
    args = p.parse_args(argv)
    try:
        if not os.path.isfile(args.db):
            raise InputError(f"database {args.db} does not exist")
        ids = write_acl(open_db(args.db), args.path)
    except HostError as e:
        print(f"tapkiosk broker-acl: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, InputError) else 1
    print(f"wrote {args.path}: {len(ids)} device(s); reload mosquitto: systemctl reload mosquitto")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
