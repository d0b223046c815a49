# Runs on CPython (host): registered readers — ids, kinds, settings, keys, board binding.
"""Devices (readers) in the site database: registration and keys (``register_device``,
``device_key``), board binding by MAC, per-kind settings with their defaults, and the
daemon-owned fields (``touch_device``).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

import sqlite_utils

from host.errors import Conflict, InputError, NotFound
from host.store.db import transaction

DEVICE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,16}")
_MAC_HEX_RE = re.compile(r"[0-9a-f]{12}")
_HOURS_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])")
KINDS = ("gate", "wash", "kiosk")

# Settings a device may carry, by kind, with their defaults.
_SETTINGS_DEFAULTS: dict[str, dict[str, Any]] = {
    "gate": {"name": "", "direction": "both", "anti_passback": True,
             "duplicate_window_s": 5, "hours": "00:00-24:00"},
    "wash": {"name": "", "duplicate_window_s": 5, "hours": "00:00-24:00"},
    # fixed_price: with no sale armed, a tap pays the amount the reader sends (a simple vending
    # point); false: such a tap is refused "no_sale" (host/rules/sales.py).
    "kiosk": {"name": "", "duplicate_window_s": 0, "hours": "00:00-24:00", "fixed_price": True},
}
#: Settings given as on/off by an operator, stored as booleans.
_SWITCHES = ("anti_passback", "fixed_price")
_TOUCHABLE = ("last_seq", "resend_floor", "last_seen", "online", "fw", "down_seq")


def check_device_id(device_id: str) -> str:
    """Return ``device_id`` if it is 1-16 chars of ``[A-Za-z0-9_.-]``, else raise InputError."""
    if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
        raise InputError(f"bad device id {device_id!r}: use 1-16 characters of A-Z a-z 0-9 _ . -")
    return device_id


def parse_hours(text: str) -> tuple[int, int]:
    """Parse ``"06:00-23:00"`` into minutes since midnight (start, end); end may be < start
    (open overnight). ``"00:00-24:00"`` is always open. Raises InputError."""
    m = _HOURS_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise InputError(f"bad opening hours {text!r}: use HH:MM-HH:MM, e.g. 06:00-23:00")
    start = int(m.group(1)) * 60 + int(m.group(2))
    end = int(m.group(3)) * 60 + int(m.group(4))
    if end > 24 * 60 or start == end:
        raise InputError(f"bad opening hours {text!r}: end must differ from start, max 24:00")
    return start, end


def validate_settings(kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Merge ``settings`` over the defaults of ``kind`` and validate every value.

    Raises InputError naming the bad setting.
    """
    if kind not in KINDS:
        raise InputError(f"bad device kind {kind!r}: use one of {', '.join(KINDS)}")
    merged = dict(_SETTINGS_DEFAULTS[kind])
    for k, v in settings.items():
        if k not in merged:
            raise InputError(f"device setting {k!r} is not valid for a {kind} "
                             f"(valid: {', '.join(sorted(merged))})")
        merged[k] = v
    if kind == "gate":
        if merged["direction"] not in ("in", "out", "both"):
            raise InputError(f"device setting direction must be in|out|both, "
                             f"got {merged['direction']!r}")
        if not isinstance(merged["anti_passback"], bool):
            raise InputError("device setting anti_passback must be true or false")
    if not isinstance(merged.get("fixed_price", True), bool):
        raise InputError("device setting fixed_price must be true or false")
    dw = merged["duplicate_window_s"]
    if isinstance(dw, bool) or not isinstance(dw, int) or not 0 <= dw <= 3600:
        raise InputError(f"device setting duplicate_window_s must be an integer 0..3600, got {dw!r}")
    parse_hours(merged["hours"])
    if not isinstance(merged["name"], str) or len(merged["name"]) > 64:
        raise InputError("device setting name must be text of at most 64 characters")
    return merged


def normalise_mac(mac: str) -> str:
    """``mac`` (``24:6F:28:AA:BB:CC``, ``24-6f-28-aa-bb-cc`` or ``246f28aabbcc``) as six
    lowercase hex pairs joined by colons. Raises InputError for anything else."""
    digits = mac.replace(":", "").replace("-", "").lower() if isinstance(mac, str) else ""
    if len(digits) != 12 or not _MAC_HEX_RE.fullmatch(digits):
        raise InputError(f"bad board MAC {mac!r}: use six hex pairs such as 24:6f:28:aa:bb:cc")
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def bound_conflict(device_id: str, bound_mac: str) -> Conflict:
    """The Conflict for provisioning ``device_id`` on a board other than ``bound_mac``."""
    return Conflict(f"device {device_id} is bound to board {bound_mac}; use --rebind to move it "
                    "to this board (the old board stops working)")


def register_device(db: sqlite_utils.Database, device_id: str, kind: str, *,
                    key: bytes | None = None, rotate: bool = False,
                    board_mac: str | None = None, rebind: bool = False, **settings: Any) -> bytes:
    """Create or confirm a device and return its 32-byte key.

    New device: stored with ``key`` or a fresh ``secrets.token_bytes(32)``. Existing device
    with the same kind and (given) key: returned unchanged, settings updated if given
    (idempotent). Existing with a different key and ``rotate=False``: Conflict.
    ``rotate=True``: the given key (or a fresh one) replaces the old one.

    Board binding (``devices.board_mac``, set by the flash tool from the ESP32's MAC):

    * ``board_mac`` given, device unbound (new, or added without one): bound to it;
    * same MAC as bound: nothing changes (re-provisioning a board is idempotent);
    * another MAC: Conflict, unless ``rebind``, which moves the device to the new board and
      rotates its key (the given one, or a fresh one) so the old board is locked out;
    * ``board_mac`` None with ``rebind`` on a bound device: unbound and key rotated (a
      factory image for a replacement board, bound at its first provision or update);
    * ``board_mac`` None without ``rebind``: the binding is left as it is.

    A board holds one device: binding a MAC unbinds any other device bound to it (that
    device's config on the board was just replaced).
    """
    check_device_id(device_id)
    if key is not None and (not isinstance(key, (bytes, bytearray)) or len(key) != 32):
        raise InputError("device key must be exactly 32 bytes")
    mac = normalise_mac(board_mac) if board_mac is not None else None
    merged = validate_settings(kind, settings)
    with transaction(db) as conn:
        row = conn.execute("SELECT kind, key, settings, board_mac FROM devices "
                           "WHERE device_id = ?", (device_id,)).fetchone()
        if mac is not None:
            conn.execute("UPDATE devices SET board_mac = NULL WHERE board_mac = ? "
                         "AND device_id != ?", (mac, device_id))
        if row is None:
            new_key = bytes(key) if key is not None else secrets.token_bytes(32)
            conn.execute("INSERT INTO devices (device_id, kind, key, settings, created_at, "
                         "board_mac) VALUES (?, ?, ?, ?, ?, ?)",
                         (device_id, kind, new_key, json.dumps(merged, sort_keys=True), int(time.time()),
                          mac))
            return new_key
        old_kind, old_key, old_settings, old_mac = row
        if old_kind != kind:
            raise Conflict(f"device {device_id} is registered as a {old_kind}, not a {kind}")
        moving = old_mac is not None and mac != old_mac and (mac is not None or rebind)
        if moving and not rebind:
            raise bound_conflict(device_id, old_mac)
        if rotate or moving:
            new_key = bytes(key) if key is not None else secrets.token_bytes(32)
            if moving and new_key == old_key:
                raise Conflict(f"device {device_id}: rebinding needs a new key, got the old one")
        elif key is not None and bytes(key) != old_key:
            raise Conflict(f"device {device_id} is registered with another key "
                           "(use rotate to replace it)")
        else:
            new_key = old_key
        if mac != old_mac and (mac is not None or moving):
            conn.execute("UPDATE devices SET board_mac = ? WHERE device_id = ?",
                         (mac, device_id))
        if settings:
            _save_settings(conn, device_id, kind, old_settings, settings)
        if new_key != old_key:
            new_epoch(conn, device_id, new_key)
        return new_key


def parse_settings(kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """Settings as an operator gives them (CLI options, a console form): ``on``/``off`` for
    the switches, the duplicate window as digits; None = not given. Returns the
    given settings typed, checked by :func:`validate_settings` (InputError naming the
    setting); nothing is stored."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name in _SWITCHES and isinstance(value, str):
            if value not in ("on", "off"):
                raise InputError(f"device setting {name} must be on or off, got {value!r}")
            value = value == "on"
        elif name == "duplicate_window_s" and isinstance(value, str) \
                and re.fullmatch(r"[0-9]{1,6}", value.strip()):
            value = int(value)
        out[name] = value
    validate_settings(kind, out)
    return out


def _save_settings(conn: Any, device_id: str, kind: str, stored: str,
                   settings: dict[str, Any]) -> dict[str, Any]:
    merged = validate_settings(kind, {**json.loads(stored), **settings})
    conn.execute("UPDATE devices SET settings = ? WHERE device_id = ?",
                 (json.dumps(merged, sort_keys=True), device_id))
    return merged


def update_settings(conn: Any, device_id: str, settings: dict[str, Any]
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Change some settings of a registered device inside the caller's transaction; returns
    the settings (before, after). NotFound, or InputError naming a bad setting."""
    row = conn.execute("SELECT kind, settings FROM devices WHERE device_id = ?",
                       (check_device_id(device_id),)).fetchone()
    if row is None:
        raise NotFound(f"unknown device {device_id!r}")
    kind, stored = row
    before = {**_SETTINGS_DEFAULTS[kind], **json.loads(stored)}
    return before, _save_settings(conn, device_id, kind, stored, settings)


def rotate_key(conn: Any, device_id: str) -> bytes:
    """A fresh 32-byte key and a new sequence epoch for ``device_id`` inside the caller's
    transaction (``device key --rotate``: the board binding stays); returns the key.
    NotFound for an unknown device."""
    if conn.execute("SELECT 1 FROM devices WHERE device_id = ?",
                    (check_device_id(device_id),)).fetchone() is None:
        raise NotFound(f"unknown device {device_id!r}")
    key = secrets.token_bytes(32)
    new_epoch(conn, device_id, key)
    return key


def new_epoch(conn: Any, device_id: str, key: bytes) -> int:
    """Store ``key`` for ``device_id`` and start a new sequence epoch, inside the caller's
    transaction; returns the new ``seq_base``.

    The firmware counts its boot number from 1 again under a new key (protocol/README.md
    "Sequence numbers"), so the highest accepted seq, the resend floor and the host's down
    seq start again from 0, and ``seq_base`` moves above every seq stored for the device:
    the daemon stores ``seq_base + wire seq``, so the new epoch's taps never meet the old
    ones under ``UNIQUE(device_id, seq)``. An old frame cannot replay: it carries the old
    key's MAC.
    """
    top = conn.execute(
        "SELECT max(seq_base + last_seq,"
        " (SELECT coalesce(max(seq), 0) FROM taps WHERE device_id = ?1),"
        " (SELECT coalesce(max(seq), 0) FROM device_events WHERE device_id = ?1),"
        " (SELECT coalesce(max(void_seq), 0) FROM tap_voids WHERE device_id = ?1))"
        " FROM devices WHERE device_id = ?1", (device_id,)).fetchone()[0]
    base = ((top >> 16) + 1) << 16
    conn.execute("UPDATE devices SET key = ?, seq_base = ?, last_seq = 0, resend_floor = 0, "
                 "down_seq = 0 WHERE device_id = ?", (key, base, device_id))
    return base


def replace_device(db: sqlite_utils.Database, device_id: str) -> bytes:
    """A replacement (or wiped and re-flashed) board for ``device_id``: a fresh key and a new
    sequence epoch (``new_epoch``), unbound from the old board (the new one is bound at its
    first provision), in one transaction. Returns the new key; raises NotFound."""
    check_device_id(device_id)
    key = secrets.token_bytes(32)
    with transaction(db) as conn:
        if conn.execute("SELECT 1 FROM devices WHERE device_id = ?",
                        (device_id,)).fetchone() is None:
            raise NotFound(f"unknown device {device_id!r}")
        conn.execute("UPDATE devices SET board_mac = NULL WHERE device_id = ?", (device_id,))
        new_epoch(conn, device_id, key)
    return key


def device_key(db: sqlite_utils.Database, device_id: str) -> bytes:
    """The 32-byte key of ``device_id``; raises NotFound."""
    row = db.execute("SELECT key FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    if row is None:
        raise NotFound(f"unknown device {device_id!r}")
    return bytes(row[0])


def get_device(db: sqlite_utils.Database, device_id: str) -> dict[str, Any]:
    """The device as a dict: device_id, kind, settings (also flattened at top level:
    direction, anti_passback, duplicate_window_s, hours, name), last_seq, resend_floor,
    last_seen, online, fw, down_seq, seq_base, created_at, store_id and store (its name, ""
    when the device is in no store). The key is not included. Raises NotFound."""
    try:
        row = db.table("devices").get(device_id)
    except sqlite_utils.db.NotFoundError:
        raise NotFound(f"unknown device {device_id!r}") from None
    row.pop("key", None)
    store = db.execute("SELECT name FROM stores WHERE id = ?", (row["store_id"],)).fetchone()
    row["store"] = store[0] if store is not None else ""
    settings = {**_SETTINGS_DEFAULTS[row["kind"]], **json.loads(row["settings"])}
    row["settings"] = settings
    for k, v in settings.items():
        row.setdefault(k, v)
    return row


def list_devices(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every device as ``get_device()`` returns it, ordered by id."""
    ids = [r[0] for r in db.execute("SELECT device_id FROM devices ORDER BY device_id")]
    return [get_device(db, d) for d in ids]


def touch_device(db: sqlite_utils.Database, device_id: str, **fields: Any) -> None:
    """Update the daemon-owned device fields (last_seq, resend_floor, last_seen, online, fw,
    down_seq) in one short transaction. ``last_seq`` never moves backwards. Raises NotFound
    or InputError for an unknown field."""
    bad = sorted(set(fields) - set(_TOUCHABLE))
    if bad:
        raise InputError(f"touch_device: unknown field {bad[0]!r} (valid: {', '.join(_TOUCHABLE)})")
    if not fields:
        return
    sets, args = [], []
    for k, v in fields.items():
        if k == "last_seq":
            sets.append("last_seq = max(last_seq, ?)")
        elif k == "online":
            v = 1 if v else 0
            sets.append("online = ?")
        else:
            sets.append(f"{k} = ?")
        args.append(v)
    own = not db.conn.in_transaction
    if own:
        db.conn.execute("BEGIN IMMEDIATE")
    try:
        cur = db.conn.execute(f"UPDATE devices SET {', '.join(sets)} WHERE device_id = ?",
                              (*args, device_id))
        if cur.rowcount == 0:
            raise NotFound(f"unknown device {device_id!r}")
    except BaseException:
        if own and db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    if own:
        db.conn.execute("COMMIT")
