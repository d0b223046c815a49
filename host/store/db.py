# Runs on CPython (host): the SQLite store — connection, pragmas, schema migrations, devices.
"""SQLite store for tapkiosk.

``open_db()`` opens (or creates) the site database with WAL, ``synchronous=FULL``, foreign
keys and a busy timeout, and applies the numbered schema migrations. The connection is in
autocommit mode (``isolation_level=None``): every money write opens its own explicit
``BEGIN IMMEDIATE`` transaction (see ``transaction()``), never an implicit one.

The schema is documented in ``host/README.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import sqlite_utils

from host.errors import Conflict, InputError, NotFound

#: Busy timeout in milliseconds: a second writer waits this long for the lock.
BUSY_TIMEOUT_MS = 10_000

_APPEND_ONLY = ("ledger", "payments", "taps", "tier_changes")

#: SQL condition on ``board_mac``: six lowercase hex pairs joined by colons.
_MAC_GLOB_SQL = "board_mac GLOB '" + ":".join(["[0-9a-f][0-9a-f]"] * 6) + "'"

# Each migration is (version, name, SQL). Append only: never edit a shipped migration.
MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "initial schema", """
CREATE TABLE members (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    phone TEXT,
    birthday TEXT CHECK (birthday IS NULL OR birthday GLOB '[0-1][0-9]-[0-3][0-9]'),
    tier TEXT NOT NULL,
    tier_manual INTEGER NOT NULL DEFAULT 0 CHECK (tier_manual IN (0, 1)),
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    referrer_id INTEGER REFERENCES members(id),
    referral_paid INTEGER NOT NULL DEFAULT 0 CHECK (referral_paid IN (0, 1)),
    principal_fen INTEGER NOT NULL DEFAULT 0 CHECK (principal_fen >= 0),
    bonus_fen INTEGER NOT NULL DEFAULT 0 CHECK (bonus_fen >= 0),
    points INTEGER NOT NULL DEFAULT 0 CHECK (points >= 0),
    qualifying INTEGER NOT NULL DEFAULT 0 CHECK (qualifying >= 0),
    created_at INTEGER NOT NULL,
    last_active_at INTEGER
);
CREATE TABLE cards (
    uid TEXT PRIMARY KEY CHECK (length(uid) BETWEEN 8 AND 20 AND uid NOT GLOB '*[^0-9A-F]*'),
    member_id INTEGER NOT NULL REFERENCES members(id),
    status TEXT NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'blocked', 'lost', 'expired')),
    expires_at INTEGER NOT NULL DEFAULT 0,
    replaced_by TEXT REFERENCES cards(uid),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX cards_member ON cards(member_id);
CREATE TABLE devices (
    device_id TEXT PRIMARY KEY CHECK (length(device_id) BETWEEN 1 AND 16
        AND device_id NOT GLOB '*[^A-Za-z0-9_.-]*'),
    kind TEXT NOT NULL CHECK (kind IN ('gate', 'wash', 'kiosk')),
    key BLOB NOT NULL CHECK (length(key) = 32),
    settings TEXT NOT NULL DEFAULT '{}',
    last_seq INTEGER NOT NULL DEFAULT 0,
    resend_floor INTEGER NOT NULL DEFAULT 0,
    last_seen INTEGER,
    online INTEGER NOT NULL DEFAULT 0 CHECK (online IN (0, 1)),
    fw TEXT,
    down_seq INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE passes (
    id INTEGER PRIMARY KEY,
    member_id INTEGER NOT NULL REFERENCES members(id),
    plan TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('time', 'punch', 'discount')),
    covers TEXT NOT NULL,
    starts_at INTEGER NOT NULL,
    ends_at INTEGER NOT NULL DEFAULT 0,
    uses_left INTEGER CHECK (uses_left IS NULL OR uses_left >= 0),
    daily_cap INTEGER NOT NULL DEFAULT 0,
    discount_pct INTEGER NOT NULL DEFAULT 100,
    price_fen INTEGER NOT NULL CHECK (price_fen >= 0),
    created_at INTEGER NOT NULL
);
CREATE INDEX passes_member ON passes(member_id, kind, created_at);
CREATE TABLE lots (
    id INTEGER PRIMARY KEY,
    member_id INTEGER NOT NULL REFERENCES members(id),
    currency TEXT NOT NULL CHECK (currency IN ('bonus', 'points')),
    expires_at INTEGER NOT NULL DEFAULT 0,
    amount INTEGER NOT NULL CHECK (amount >= 0),
    remaining INTEGER NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    UNIQUE (member_id, currency, expires_at)
);
CREATE INDEX lots_expiry ON lots(expires_at) WHERE expires_at > 0 AND remaining > 0;
CREATE TABLE ledger (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    member_id INTEGER NOT NULL REFERENCES members(id),
    currency TEXT NOT NULL
        CHECK (currency IN ('principal', 'bonus', 'points', 'qualifying', 'uses')),
    delta INTEGER NOT NULL CHECK (delta <> 0),
    kind TEXT NOT NULL,
    lot_id INTEGER REFERENCES lots(id),
    pass_id INTEGER REFERENCES passes(id),
    tap_id INTEGER,
    op_key TEXT,
    reverses INTEGER REFERENCES ledger(id),
    note TEXT
);
CREATE INDEX ledger_member ON ledger(member_id, currency, ts);
CREATE INDEX ledger_ts ON ledger(ts);
CREATE INDEX ledger_pass ON ledger(pass_id) WHERE pass_id IS NOT NULL;
CREATE INDEX ledger_lot ON ledger(lot_id) WHERE lot_id IS NOT NULL;
CREATE TABLE payments (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    member_id INTEGER NOT NULL REFERENCES members(id),
    kind TEXT NOT NULL CHECK (kind IN ('topup', 'refund', 'pass_sale')),
    amount_fen INTEGER NOT NULL,
    pass_id INTEGER REFERENCES passes(id),
    op_key TEXT
);
CREATE INDEX payments_ts ON payments(ts);
CREATE TABLE taps (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    uid TEXT NOT NULL,
    member_id INTEGER,
    kind TEXT,
    service INTEGER NOT NULL DEFAULT 0,
    amount_fen INTEGER NOT NULL DEFAULT 0,
    charged_fen INTEGER NOT NULL DEFAULT 0,
    points_earned INTEGER NOT NULL DEFAULT 0,
    direction TEXT,
    offline INTEGER NOT NULL DEFAULT 0,
    device_time INTEGER NOT NULL DEFAULT 0,
    pass_id INTEGER,
    verdict TEXT NOT NULL CHECK (verdict IN ('grant', 'deny')),
    reason TEXT NOT NULL,
    relay_ms INTEGER NOT NULL,
    pattern INTEGER NOT NULL,
    text TEXT NOT NULL,
    balance_fen INTEGER NOT NULL,
    points INTEGER NOT NULL,
    uses_left INTEGER NOT NULL,
    reply BLOB NOT NULL DEFAULT x'',
    latency_ms REAL,
    UNIQUE (device_id, seq)
);
CREATE INDEX taps_ts ON taps(ts);
CREATE INDEX taps_member ON taps(member_id, ts);
CREATE INDEX taps_uid ON taps(uid, device_id, ts);
CREATE INDEX taps_pass ON taps(pass_id, ts) WHERE pass_id IS NOT NULL;
CREATE TABLE presence (
    member_id INTEGER PRIMARY KEY REFERENCES members(id),
    inside INTEGER NOT NULL CHECK (inside IN (0, 1)),
    device_id TEXT,
    ts INTEGER NOT NULL
);
CREATE TABLE tier_changes (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    member_id INTEGER NOT NULL REFERENCES members(id),
    old_tier TEXT,
    new_tier TEXT NOT NULL,
    manual INTEGER NOT NULL CHECK (manual IN (0, 1)),
    reason TEXT NOT NULL,
    op_key TEXT
);
CREATE TABLE ops (
    key TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    args TEXT NOT NULL,
    result TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
""" + "".join(
        f"""
CREATE TRIGGER {t}_no_update BEFORE UPDATE ON {t}
BEGIN SELECT RAISE(ABORT, '{t} is append-only: write a reversing entry'); END;
CREATE TRIGGER {t}_no_delete BEFORE DELETE ON {t}
BEGIN SELECT RAISE(ABORT, '{t} is append-only: write a reversing entry'); END;
""" for t in _APPEND_ONLY)),
    (2, "duplicate-tap check by member: drop the uid index of taps", """
DROP INDEX taps_uid;
"""),
    # IF NOT EXISTS: daemons before this migration created these tables themselves.
    (3, "daemon tables: device events and pushed device config", """
CREATE TABLE IF NOT EXISTS device_events (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    code INTEGER NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    text TEXT NOT NULL,
    UNIQUE (device_id, seq)
);
CREATE INDEX IF NOT EXISTS device_events_ts ON device_events(ts);
CREATE TABLE IF NOT EXISTS device_config (
    device_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0
);
"""),
    # Secure cards (issue #7, host/SECURE.md): site master keys (append-only, one per
    # version), per-card SUN state, and what the secure-card check said about each tap.
    (4, "secure cards: site keys, card sun state, tap security note", """
CREATE TABLE site_keys (
    version INTEGER PRIMARY KEY CHECK (version BETWEEN 1 AND 255),
    key BLOB NOT NULL CHECK (length(key) = 16),
    created_at INTEGER NOT NULL
);
CREATE TRIGGER site_keys_no_update BEFORE UPDATE ON site_keys
BEGIN SELECT RAISE(ABORT, 'site_keys is append-only: rotate to a new version'); END;
CREATE TRIGGER site_keys_no_delete BEFORE DELETE ON site_keys
BEGIN SELECT RAISE(ABORT, 'site_keys is append-only: rotate to a new version'); END;
ALTER TABLE cards ADD COLUMN key_version INTEGER REFERENCES site_keys(version);
ALTER TABLE cards ADD COLUMN secure INTEGER NOT NULL DEFAULT 0 CHECK (secure IN (0, 1)
    AND (secure = 0 OR (length(uid) = 14 AND key_version IS NOT NULL)));
ALTER TABLE cards ADD COLUMN sun_counter INTEGER NOT NULL DEFAULT 0
    CHECK (sun_counter BETWEEN 0 AND 16777215);
ALTER TABLE taps ADD COLUMN security TEXT;
"""),
    # VOID (host/rules/voids.py): one row per tap a device gave up on, with the reply it got.
    (5, "voids: taps a device gave up on, reversed or tombstoned", """
CREATE TABLE tap_voids (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    tap_seq INTEGER NOT NULL,
    void_seq INTEGER,
    tap_id INTEGER NOT NULL REFERENCES taps(id),
    outcome TEXT NOT NULL CHECK (outcome IN ('reversed', 'tombstone')),
    reversed INTEGER NOT NULL DEFAULT 0,
    kept TEXT,
    member_id INTEGER REFERENCES members(id),
    pattern INTEGER NOT NULL,
    text TEXT NOT NULL,
    balance_fen INTEGER NOT NULL,
    points INTEGER NOT NULL,
    uses_left INTEGER NOT NULL,
    reply BLOB NOT NULL DEFAULT x'',
    UNIQUE (device_id, tap_seq)
);
CREATE INDEX tap_voids_tap ON tap_voids(tap_id);
CREATE TRIGGER tap_voids_no_update BEFORE UPDATE ON tap_voids
BEGIN SELECT RAISE(ABORT, 'tap_voids is append-only'); END;
CREATE TRIGGER tap_voids_no_delete BEFORE DELETE ON tap_voids
BEGIN SELECT RAISE(ABORT, 'tap_voids is append-only'); END;
"""),
    # Board binding (tools/flash.py): the ESP32 MAC a device id was provisioned on, so a
    # second board given the same id by mistake is refused instead of getting the same key.
    (6, "devices: board_mac binds a device id to one physical board", f"""
ALTER TABLE devices ADD COLUMN board_mac TEXT CHECK (board_mac IS NULL OR {_MAC_GLOB_SQL});
CREATE UNIQUE INDEX devices_board_mac ON devices(board_mac) WHERE board_mac IS NOT NULL;
"""),
    # HTTP API tokens (host/store/tokens.py, docs/integrators.md): only the sha256 of each
    # secret is kept; a revoked token keeps its row (revoked_at set) so its id is never reused.
    (7, "api tokens: hashed secrets with a scope", """
CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    scope TEXT NOT NULL CHECK (scope IN ('members', 'sales', 'admin')),
    hash TEXT NOT NULL UNIQUE CHECK (length(hash) = 64),
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
"""),
    # Staff accounts of the web console (host/store/staff.py) and the append-only audit log
    # of every staff and CLI write (host/store/audit.py), written in the same transaction as
    # the change it records; triggers refuse any UPDATE or DELETE of a log row.
    (8, "staff accounts and the append-only audit log", """
CREATE TABLE staff (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 32),
    role TEXT NOT NULL CHECK (role IN ('cashier', 'manager', 'technician')),
    pw_hash TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at INTEGER NOT NULL
);
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    member_id INTEGER,
    device_id TEXT,
    before TEXT,
    after TEXT,
    client TEXT,
    op_key TEXT
);
CREATE INDEX audit_log_actor ON audit_log(actor, ts);
CREATE INDEX audit_log_member ON audit_log(member_id, ts);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
"""),
]

DEVICE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,16}")
_MAC_HEX_RE = re.compile(r"[0-9a-f]{12}")
_HOURS_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])")
KINDS = ("gate", "wash", "kiosk")

# Settings a device may carry, by kind, with their defaults.
_SETTINGS_DEFAULTS: dict[str, dict[str, Any]] = {
    "gate": {"name": "", "direction": "both", "anti_passback": True,
             "duplicate_window_s": 5, "hours": "00:00-24:00"},
    "wash": {"name": "", "duplicate_window_s": 5, "hours": "00:00-24:00"},
    "kiosk": {"name": "", "duplicate_window_s": 0, "hours": "00:00-24:00"},
}
_TOUCHABLE = ("last_seq", "resend_floor", "last_seen", "online", "fw", "down_seq")


def default_db_path() -> str:
    """``$TAPKIOSK_DB``, else ``$XDG_DATA_HOME/tapkiosk/site.db`` (``~/.local/share``)."""
    env = os.environ.get("TAPKIOSK_DB")
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                           "share")
    return os.path.join(base, "tapkiosk", "site.db")


def open_db(path: str | os.PathLike | None) -> sqlite_utils.Database:
    """Open the site database at ``path`` (None or ``":memory:"`` = in memory).

    Applies the pragmas (WAL, ``synchronous=FULL``, ``foreign_keys=ON``, busy timeout) and
    every pending migration. Creates parent folders of a file path. The returned database's
    connection is in autocommit mode; use ``transaction()`` for writes.
    """
    if path is None or str(path) == ":memory:":
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    else:
        p = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(p))
        try:
            os.makedirs(parent, exist_ok=True)
            conn = sqlite3.connect(p, isolation_level=None, check_same_thread=False,
                                   timeout=BUSY_TIMEOUT_MS / 1000)
        except (OSError, sqlite3.Error) as e:
            raise InputError(f"cannot open database {p}: {e}") from None
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    try:
        conn.execute("PRAGMA journal_mode = WAL")
    except sqlite3.DatabaseError as e:
        raise InputError(f"cannot open database {path}: {e}") from None
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    db = sqlite_utils.Database(conn)
    migrate(db)
    return db


def schema_version(db: sqlite_utils.Database) -> int:
    """Highest applied migration version (0 for an empty database)."""
    if not db["schema_migrations"].exists():
        return 0
    row = db.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return row[0] or 0


def migrate(db: sqlite_utils.Database) -> int:
    """Apply pending migrations, each in its own ``BEGIN IMMEDIATE`` transaction.

    Safe against two processes opening a fresh database at once: the loser's transaction
    fails and it re-reads the version. Each migration is looked up by its own version, not
    by the highest applied one, so a database that got a later migration first (from a
    development build) still gets the earlier one. Returns the schema version after
    migrating.
    """
    conn = db.conn
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                 " name TEXT NOT NULL, applied_at INTEGER NOT NULL)")

    def applied(version: int) -> bool:
        return conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?",
                            (version,)).fetchone() is not None

    for version, name, sql in MIGRATIONS:
        if applied(version):
            continue
        script = (f"BEGIN IMMEDIATE;\n{sql}\nINSERT INTO schema_migrations VALUES "
                  f"({version}, '{name}', {int(time.time())});\nCOMMIT;")
        try:
            conn.executescript(script)
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if applied(version):
                continue  # another process applied it first
            raise
    return schema_version(db)


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception).

    Takes the write lock up front, so a balance read inside the block cannot be made stale
    by another writer before the debit.
    """
    conn = db.conn
    if conn.in_transaction:
        raise RuntimeError("nested transaction(): use a SAVEPOINT")
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def now_s() -> int:
    """Current unix time in whole seconds."""
    return int(time.time())


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
                         (device_id, kind, new_key, json.dumps(merged, sort_keys=True), now_s(),
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
            stored = json.loads(old_settings)
            stored.update(settings)
            merged = validate_settings(kind, stored)
            conn.execute("UPDATE devices SET settings = ? WHERE device_id = ?",
                         (json.dumps(merged, sort_keys=True), device_id))
        if new_key != old_key:
            conn.execute("UPDATE devices SET key = ? WHERE device_id = ?", (new_key, device_id))
        return new_key


def device_key(db: sqlite_utils.Database, device_id: str) -> bytes:
    """The 32-byte key of ``device_id``; raises NotFound."""
    row = db.execute("SELECT key FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    if row is None:
        raise NotFound(f"unknown device {device_id!r}")
    return bytes(row[0])


def get_device(db: sqlite_utils.Database, device_id: str) -> dict[str, Any]:
    """The device as a dict: device_id, kind, settings (also flattened at top level:
    direction, anti_passback, duplicate_window_s, hours, name), last_seq, resend_floor,
    last_seen, online, fw, down_seq, created_at. The key is not included. Raises NotFound."""
    try:
        row = db.table("devices").get(device_id)
    except sqlite_utils.db.NotFoundError:
        raise NotFound(f"unknown device {device_id!r}") from None
    row.pop("key", None)
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
