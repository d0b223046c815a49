# Runs on CPython (host): the SQLite store — connection, pragmas, schema migrations, transactions.
"""SQLite store for tapkiosk.

``open_db()`` opens (or creates) the site database with WAL, ``synchronous=FULL``, foreign
keys and a busy timeout. A new database gets the numbered schema migrations; an existing one
is migrated only by ``open_db(..., upgrade=True)`` (``tapkiosk init`` / ``upgrade``), and
refused with ``SchemaOutdated`` otherwise. The connection is in
autocommit mode (``isolation_level=None``): every money write opens its own explicit
``BEGIN IMMEDIATE`` transaction (see ``transaction()``), never an implicit one.

The schema is documented in ``host/README.md``.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import sqlite_utils

from host.errors import InputError
from host.store.dialect import learn_schema, translate_ddl

T = TypeVar("T")

#: Busy timeout in milliseconds: a second writer waits this long for the lock.
BUSY_TIMEOUT_MS = 10_000
#: Most runs of one transaction that PostgreSQL rolls back on a conflict (``retrying``).
RETRY_ATTEMPTS = 30

_APPEND_ONLY = ("ledger", "payments", "taps", "tier_changes")

#: SQL condition on ``board_mac``: six lowercase hex pairs joined by colons.
_MAC_GLOB_SQL = "board_mac GLOB '" + ":".join(["[0-9a-f][0-9a-f]"] * 6) + "'"

# Day marks (migration 23, host/store/day_marks.py): for each UTC day (ts / 86400) that has
# a tap or a ledger row, a lower bound of the ids of that day's taps and of its ledger rows
# (the next id of each table when the day's first row was written). ``stepped`` = 1 once a
# row of an earlier day was written after the mark (host clock stepped back, a chain join
# copying old rows): the mark is then no upper bound of earlier days' ids. Kept by triggers,
# so every writer (engine, admin, voids, join, a test's raw INSERT) keeps them; a trigger
# does nothing while the row's day is the newest mark's, so a day's first row pays the page.
_DAY_MARKS_SQL = """
CREATE TABLE day_marks (
    day INTEGER PRIMARY KEY,
    tap_id INTEGER NOT NULL,
    ledger_id INTEGER NOT NULL,
    stepped INTEGER NOT NULL DEFAULT 0 CHECK (stepped IN (0, 1))
);
INSERT INTO day_marks (day, tap_id, ledger_id, stepped)
    SELECT r.day, coalesce(min(r.tap_id), (SELECT coalesce(max(id), 0) + 1 FROM taps)),
        coalesce(min(r.ledger_id), (SELECT coalesce(max(id), 0) + 1 FROM ledger)), 0
    FROM (SELECT ts / 86400 AS day, id AS tap_id, NULL AS ledger_id FROM taps
          UNION ALL SELECT ts / 86400 AS day, NULL AS tap_id, id AS ledger_id FROM ledger) r
    GROUP BY r.day;
UPDATE day_marks SET stepped = 1 WHERE day IN (
    SELECT m.day FROM day_marks m JOIN (SELECT id, min(ts) OVER (ORDER BY id DESC) AS later
        FROM taps) s ON s.id = m.tap_id WHERE s.later < m.day * 86400
    UNION SELECT m.day FROM day_marks m JOIN (SELECT id, min(ts) OVER (ORDER BY id DESC) AS
        later FROM ledger) s ON s.id = m.ledger_id WHERE s.later < m.day * 86400);
DROP INDEX IF EXISTS taps_ts;
DROP INDEX IF EXISTS ledger_ts;
"""

_DAY_MARK_TRIGGERS_SQLITE = "".join(f"""
CREATE TRIGGER {t}_day_mark AFTER INSERT ON {t}
WHEN NEW.ts / 86400 IS NOT (SELECT max(day) FROM day_marks)
BEGIN
    INSERT OR IGNORE INTO day_marks (day, tap_id, ledger_id) VALUES (NEW.ts / 86400, {tap},
        {led});
    UPDATE day_marks SET stepped = 1 WHERE day > NEW.ts / 86400 AND stepped = 0;
END;
""" for t, tap, led in (
    ("taps", "NEW.id", "(SELECT coalesce(max(id), 0) + 1 FROM ledger)"),
    ("ledger", "(SELECT coalesce(max(id), 0) + 1 FROM taps)", "NEW.id")))

_DAY_MARK_TRIGGERS_PG = "".join(f"""
CREATE OR REPLACE FUNCTION {t}_day_mark_fn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.ts / 86400 IS DISTINCT FROM (SELECT max(day) FROM day_marks) THEN
        INSERT INTO day_marks (day, tap_id, ledger_id) VALUES (NEW.ts / 86400, {tap}, {led})
            ON CONFLICT DO NOTHING;
        UPDATE day_marks SET stepped = 1 WHERE day > NEW.ts / 86400 AND stepped = 0;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER {t}_day_mark AFTER INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_day_mark_fn();
""" for t, tap, led in (
    ("taps", "NEW.id", "(SELECT coalesce(max(id), 0) + 1 FROM ledger)"),
    ("ledger", "(SELECT coalesce(max(id), 0) + 1 FROM taps)", "NEW.id")))

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
    # Frames the daemon refused, per device and cause, and the device's last error, so a
    # report can show why a reader is not working (written by host/store/site_state.py).
    (8, "devices: refusal counts by cause and the last error", """
CREATE TABLE device_refusals (
    device_id TEXT NOT NULL REFERENCES devices(device_id),
    cause TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0 CHECK (count >= 0),
    last_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, cause)
);
ALTER TABLE devices ADD COLUMN last_error TEXT;
ALTER TABLE devices ADD COLUMN last_error_at INTEGER;
"""),
    # Staff accounts of the web console (host/store/staff.py) and the append-only audit log
    # of every staff and CLI write (host/store/audit.py), written in the same transaction as
    # the change it records; triggers refuse any UPDATE or DELETE of a log row.
    (9, "staff accounts and the append-only audit log", """
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
    # Member personal data encrypted at rest (issue #15, host/privacy/): ``personal`` holds
    # name, phone, birthday and note sealed under the site data key (kept outside the
    # database), ``phone_index`` the keyed blind index of the phone (one member per phone),
    # ``birth_month`` the only part of a birthday the rules read, in clear. ``name`` and
    # ``phone`` keep only their masks (李*, 138****8000); ``birthday`` is emptied by
    # ``tapkiosk upgrade``, which seals the rows an older version left in plain text.
    (10, "members: personal data sealed, phone blind index, consent, erasure", """
ALTER TABLE members ADD COLUMN personal BLOB;
ALTER TABLE members ADD COLUMN personal_version INTEGER;
ALTER TABLE members ADD COLUMN phone_index BLOB;
ALTER TABLE members ADD COLUMN birth_month INTEGER
    CHECK (birth_month IS NULL OR birth_month BETWEEN 1 AND 12);
ALTER TABLE members ADD COLUMN consent_terms TEXT;
ALTER TABLE members ADD COLUMN consent_at INTEGER;
ALTER TABLE members ADD COLUMN erased_at INTEGER;
UPDATE members SET birth_month = CAST(substr(birthday, 1, 2) AS INTEGER)
    WHERE birthday IS NOT NULL;
CREATE UNIQUE INDEX members_phone_index ON members(phone_index) WHERE phone_index IS NOT NULL;
CREATE INDEX members_personal_version ON members(personal_version)
    WHERE personal_version IS NOT NULL;
CREATE TABLE data_keys (
    version INTEGER PRIMARY KEY CHECK (version BETWEEN 1 AND 255),
    check_value BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER
);
"""),
    # Membership programme (issue 16): a cancelled pass keeps its row (cancelled_at set, ends_at
    # moved to the cancel); site settings hold the site's policy file path.
    (11, "passes: cancelled_at; site_settings (policy path)", """
ALTER TABLE passes ADD COLUMN cancelled_at INTEGER;
CREATE TABLE site_settings (
    key TEXT PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 64),
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
"""),
    # Coupons (host/ledger/coupons.py): issued coupons and their redemptions, both append-only;
    # a coupon is used while it has more 'redeem' than 'unredeem' events. (member, source,
    # source_ref) makes each rule issue at most once.
    (12, "coupons and coupon events", """
CREATE TABLE coupons (
    id INTEGER PRIMARY KEY,
    member_id INTEGER NOT NULL REFERENCES members(id),
    template TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('amount_off', 'percent_off', 'free_service',
                                       'gift_item')),
    value INTEGER NOT NULL DEFAULT 0 CHECK (value >= 0),
    min_spend_fen INTEGER NOT NULL DEFAULT 0 CHECK (min_spend_fen >= 0),
    covers TEXT NOT NULL DEFAULT '[]',
    item TEXT NOT NULL DEFAULT '',
    valid_from INTEGER NOT NULL,
    valid_until INTEGER NOT NULL,
    source TEXT NOT NULL,
    source_ref TEXT,
    issued_at INTEGER NOT NULL,
    op_key TEXT,
    UNIQUE (member_id, source, source_ref)
);
CREATE INDEX coupons_member ON coupons(member_id, valid_until);
CREATE TABLE coupon_events (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    coupon_id INTEGER NOT NULL REFERENCES coupons(id),
    event TEXT NOT NULL CHECK (event IN ('redeem', 'unredeem')),
    tap_id INTEGER,
    saved_fen INTEGER NOT NULL DEFAULT 0 CHECK (saved_fen >= 0),
    note TEXT,
    op_key TEXT
);
CREATE INDEX coupon_events_coupon ON coupon_events(coupon_id);
CREATE INDEX coupon_events_tap ON coupon_events(tap_id) WHERE tap_id IS NOT NULL;
CREATE TRIGGER coupons_no_update BEFORE UPDATE ON coupons
BEGIN SELECT RAISE(ABORT, 'coupons is append-only'); END;
CREATE TRIGGER coupons_no_delete BEFORE DELETE ON coupons
BEGIN SELECT RAISE(ABORT, 'coupons is append-only'); END;
CREATE TRIGGER coupon_events_no_update BEFORE UPDATE ON coupon_events
BEGIN SELECT RAISE(ABORT, 'coupon_events is append-only'); END;
CREATE TRIGGER coupon_events_no_delete BEFORE DELETE ON coupon_events
BEGIN SELECT RAISE(ABORT, 'coupon_events is append-only'); END;
"""),
    # Member messages (host/messages/): how to reach a member (and their opt-out), and the
    # outbox the sender drains with retries; (member_id, dedup) makes each message once.
    (13, "member contacts and the message outbox", """
CREATE TABLE member_contacts (
    member_id INTEGER PRIMARY KEY REFERENCES members(id),
    email TEXT,
    opt_out INTEGER NOT NULL DEFAULT 0 CHECK (opt_out IN (0, 1)),
    updated_at INTEGER NOT NULL
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    member_id INTEGER NOT NULL REFERENCES members(id),
    kind TEXT NOT NULL,
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    dedup TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'skipped')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    sent_at INTEGER,
    UNIQUE (member_id, dedup)
);
CREATE INDEX messages_due ON messages(status, next_attempt_at);
"""),
    # Points catalogue (host/admin/catalogue.py): what points buy; stock is the sum of the
    # append-only moves (restock +, redemption -, a reversal gives it back).
    (14, "points catalogue and stock moves", """
CREATE TABLE catalogue_items (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
    points INTEGER NOT NULL CHECK (points > 0),
    limited INTEGER NOT NULL DEFAULT 1 CHECK (limited IN (0, 1)),
    active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at INTEGER NOT NULL
);
CREATE TABLE catalogue_moves (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    item_id INTEGER NOT NULL REFERENCES catalogue_items(id),
    delta INTEGER NOT NULL CHECK (delta <> 0),
    member_id INTEGER REFERENCES members(id),
    ledger_id INTEGER REFERENCES ledger(id),
    note TEXT,
    op_key TEXT
);
CREATE INDEX catalogue_moves_item ON catalogue_moves(item_id);
CREATE TRIGGER catalogue_moves_no_update BEFORE UPDATE ON catalogue_moves
BEGIN SELECT RAISE(ABORT, 'catalogue_moves is append-only'); END;
CREATE TRIGGER catalogue_moves_no_delete BEFORE DELETE ON catalogue_moves
BEGIN SELECT RAISE(ABORT, 'catalogue_moves is append-only'); END;
"""),
    # Sales armed on a kiosk or wash reader through the API (host/rules/sales.py): the engine
    # reads the armed row in the transaction of the tap that pays it. At most one armed sale
    # per reader (the partial unique index); a settled sale keeps its tap and result.
    (15, "sales: amounts and product lists armed on a reader, paid by its next tap", """
CREATE TABLE sales (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices(device_id),
    amount_fen INTEGER NOT NULL CHECK (amount_fen > 0),
    service INTEGER NOT NULL DEFAULT 0 CHECK (service BETWEEN 0 AND 65535),
    items TEXT NOT NULL DEFAULT '[]',
    text TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL CHECK (state IN ('armed', 'paid', 'cancelled', 'expired', 'denied')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    settled_at INTEGER,
    tap_id INTEGER,
    reason TEXT,
    result TEXT,
    actor TEXT
);
CREATE UNIQUE INDEX sales_armed ON sales(device_id) WHERE state = 'armed';
"""),
    # Fewer pages per tap commit (issue 19): ledger_lot was read only by verify(), which
    # scans the whole ledger anyway; lots_expiry was rewritten by every earn and spend
    # (``remaining`` is in its WHERE). A member's sweep now seeks the lots UNIQUE index
    # (member_id first); the site-wide sweep (an operator command) scans the lots table.
    (16, "tap commit: drop the ledger lot and lot expiry indexes", """
DROP INDEX IF EXISTS ledger_lot;
DROP INDEX IF EXISTS lots_expiry;
"""),
    # A new device key starts a new sequence epoch (the firmware counts from boot 1 again):
    # the daemon stores seq_base + the wire seq, so the new epoch's taps, events and voids
    # never collide with the old ones under UNIQUE(device_id, seq) (host/store/devices.py).
    (17, "devices: seq_base, the stored-seq offset of the current device key", """
ALTER TABLE devices ADD COLUMN seq_base INTEGER NOT NULL DEFAULT 0 CHECK (seq_base >= 0);
"""),
    # Fleet: what each reader last reported (STATUS), the app bundles sent over the air and
    # one row per (rollout, reader) update job (host/store/fleet.py, host/site/update.py).
    (18, "fleet: reader status, app bundles, over-the-air update jobs", """
CREATE TABLE fleet_status (
    device_id TEXT PRIMARY KEY REFERENCES devices(device_id),
    app TEXT NOT NULL,
    mpy TEXT NOT NULL,
    uptime_s INTEGER NOT NULL,
    heap_free INTEGER NOT NULL,
    reset INTEGER NOT NULL,
    link TEXT NOT NULL,
    outbox INTEGER NOT NULL,
    trial INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE fleet_bundles (
    sha256 TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    size INTEGER NOT NULL,
    blob BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE fleet_updates (
    id INTEGER PRIMARY KEY,
    rollout TEXT NOT NULL,
    device_id TEXT NOT NULL REFERENCES devices(device_id),
    bundle TEXT NOT NULL REFERENCES fleet_bundles(sha256),
    wave INTEGER NOT NULL CHECK (wave IN (1, 2)),
    state TEXT NOT NULL CHECK (state IN ('waiting', 'pending', 'sending', 'staged', 'healthy',
                                         'rolled_back', 'failed', 'cancelled')),
    have INTEGER NOT NULL DEFAULT 0,
    chunks INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (rollout, device_id)
);
CREATE INDEX fleet_updates_state ON fleet_updates(state);
"""),
    # Paying part of a sale with points (issue 16, host/rules/pay_points.py): what the sale
    # asks for (0 none, -1 as many as the rules allow, N points) and, per tap that paid with
    # points, the points and the fen they paid (the daily report's points column; verify
    # checks the points against the tap's ledger rows). Append-only.
    (19, "points payment: the points request of a sale, the points each tap paid with", """
ALTER TABLE sales ADD COLUMN points INTEGER NOT NULL DEFAULT 0 CHECK (points >= -1);
CREATE TABLE tap_points (
    tap_id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    member_id INTEGER NOT NULL REFERENCES members(id),
    points INTEGER NOT NULL CHECK (points > 0),
    fen INTEGER NOT NULL CHECK (fen > 0)
);
CREATE INDEX tap_points_ts ON tap_points(ts);
CREATE TRIGGER tap_points_no_update BEFORE UPDATE ON tap_points
BEGIN SELECT RAISE(ABORT, 'tap_points is append-only'); END;
CREATE TRIGGER tap_points_no_delete BEFORE DELETE ON tap_points
BEGIN SELECT RAISE(ABORT, 'tap_points is append-only'); END;
"""),
    # A chain (issue 17, host/store/stores.py): stores, and the store of each reader and of
    # each staff account. NULL = the site's only store (a device) or every store (staff),
    # so a single-store site changes nothing. Taps and ledger rows belong to a store
    # through their device.
    (20, "chain: stores; devices and staff belong to a store", """
CREATE TABLE stores (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 32),
    created_at INTEGER NOT NULL
);
ALTER TABLE devices ADD COLUMN store_id INTEGER REFERENCES stores(id);
ALTER TABLE staff ADD COLUMN store_id INTEGER REFERENCES stores(id);
CREATE INDEX devices_store ON devices(store_id);
"""),
    # WAN outage at a store (host/site/outage.py): a tap its daemon granted from the local
    # journal that the chain's database then refused on replay (balance spent elsewhere
    # meanwhile, card blocked...), kept for `tapkiosk report offline`, never dropped.
    # UNIQUE(device_id, seq): a replay after a crash records it once. Append-only.
    (21, "chain: offline taps the central database refused on replay", """
CREATE TABLE offline_unapplied (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    uid TEXT NOT NULL,
    member_id INTEGER,
    tapped_at INTEGER NOT NULL,
    granted_fen INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL,
    text TEXT NOT NULL DEFAULT '',
    recorded_at INTEGER NOT NULL,
    UNIQUE (device_id, seq)
);
CREATE TRIGGER offline_unapplied_no_update BEFORE UPDATE ON offline_unapplied
BEGIN SELECT RAISE(ABORT, 'offline_unapplied is append-only'); END;
CREATE TRIGGER offline_unapplied_no_delete BEFORE DELETE ON offline_unapplied
BEGIN SELECT RAISE(ABORT, 'offline_unapplied is append-only'); END;
"""),
    # A chain's counter cash by store (issue 17, host/admin/core.py ``counter_store``): the
    # store whose counter took a top-up, pass sale or refund (the write's --store, else the
    # store of the staff account making it); NULL: none named, chain-wide only.
    (22, "chain: payments belong to the store whose counter took them", """
ALTER TABLE payments ADD COLUMN store_id INTEGER REFERENCES stores(id);
CREATE INDEX payments_store ON payments(store_id, ts);
"""),
    # Fewer pages per tap commit (issue 19): period reports find a period's taps and ledger
    # rows by id range (host/store/day_marks.py) instead of the ts indexes every tap wrote.
    (23, "day marks: first tap and ledger id of each day; drop taps_ts and ledger_ts",
     _DAY_MARKS_SQL + _DAY_MARK_TRIGGERS_SQLITE),
    # Fewer pages per tap commit (issue 19): a tap that charged stored value is found by
    # member through its own principal/bonus ledger rows (``ledger_member``, which the tap
    # writes anyway; verify() checks that those rows sum to its charged_fen), one on a pass
    # through ``taps_pass`` and the member's passes, so only the other taps stay in a
    # by-member index of taps (host/store/member_taps.py).
    (24, "tap commit: taps by member indexed only for taps without a charge or a pass", """
DROP INDEX IF EXISTS taps_member;
CREATE INDEX taps_member_free ON taps(member_id, ts) WHERE charged_fen = 0 AND pass_id IS NULL;
"""),
]

#: PostgreSQL text of the migrations whose SQLite triggers translate_ddl cannot carry.
PG_MIGRATIONS: dict[int, str] = {
    23: translate_ddl(_DAY_MARKS_SQL) + _DAY_MARK_TRIGGERS_PG,
}

def default_db_path() -> str:
    """``$TAPKIOSK_DB``, else ``$XDG_DATA_HOME/tapkiosk/site.db`` (``~/.local/share``)."""
    env = os.environ.get("TAPKIOSK_DB")
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                           "share")
    return os.path.join(base, "tapkiosk", "site.db")


class SchemaOutdated(InputError):
    """The database is at an older schema than this code: run ``tapkiosk upgrade``."""


def is_postgres(path: str | os.PathLike | None) -> bool:
    """Whether ``path`` names a PostgreSQL database (``postgresql://...``), not a file."""
    return isinstance(path, str) and path.startswith(("postgresql://", "postgres://"))


def open_pg(url: str, *, readonly: bool = False, lazy: bool = False) -> Any:
    """A ``PgDatabase`` on ``url`` (schema not checked: ``open_db`` does that); ``lazy``: an
    unreachable server is not an error (the first statement that reaches it connects)."""
    from host.store import pg
    for _version, _name, sql in MIGRATIONS:
        learn_schema(sql)
    try:
        return pg.PgDatabase(url, readonly=readonly, lazy=lazy)
    except ImportError:
        raise InputError("PostgreSQL needs psycopg: pip install 'psycopg[binary]'") from None
    except sqlite3.Error as e:
        raise InputError(f"cannot open database {safe_url(url)}: {e}") from None
    except Exception as e:  # noqa: BLE001 - psycopg's connection errors
        raise InputError(f"cannot open database {safe_url(url)}: {e}") from None


def safe_url(url: str) -> str:
    """``url`` without its password (in the user part or as a ``password=`` parameter)."""
    url = re.sub(r"([?&]password=)[^&]*", r"\1***", url)
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def open_db(path: str | os.PathLike | None, *, upgrade: bool = False,
            unreachable_ok: bool = False) -> sqlite_utils.Database:
    """Open the site database at ``path`` (None or ``":memory:"`` = in memory).

    Applies the pragmas (WAL, ``synchronous=FULL``, ``foreign_keys=ON``, busy timeout).
    A new, empty database gets the whole schema. An existing one with migrations pending is
    migrated only with ``upgrade=True`` (``tapkiosk init`` / ``tapkiosk upgrade``, which back
    it up first); otherwise SchemaOutdated, and nothing is written. Creates parent folders of
    a file path. The returned database's connection is in autocommit mode; use
    ``transaction()`` for writes. ``unreachable_ok`` (a store's daemon, PostgreSQL only):
    a server that cannot be reached is not an error; the schema is checked when it is.
    """
    if is_postgres(path):
        db = open_pg(path, lazy=unreachable_ok)
        if not db.conn.connected:
            db.conn.on_connect = lambda: _check_schema(db, safe_url(path), upgrade)
            return db
        return _check_schema(db, safe_url(path), upgrade)
    if path is None or str(path) == ":memory:":
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    else:
        p = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(p))
        try:
            os.makedirs(parent, exist_ok=True)
            # A new database holds the device keys and the site key: owner and group (the
            # site's operators, docs/deploy.md) read and write, others nothing (0660 before
            # the umask). SQLite gives site.db-wal and site.db-shm the database file's mode.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660))
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
    # Erased personal data is overwritten, not left in free pages (issue #15).
    conn.execute("PRAGMA secure_delete = ON")
    return _check_schema(sqlite_utils.Database(conn), path, upgrade)


def _check_schema(db: sqlite_utils.Database, path: Any, upgrade: bool) -> sqlite_utils.Database:
    """Migrate a new database (or any with ``upgrade``); SchemaOutdated for an old one."""
    if upgrade or is_empty(db):
        migrate(db)
        return db
    pending = pending_migrations(db)
    if pending:
        version = schema_version(db)
        db.conn.close()
        raise SchemaOutdated(
            f"database {path} is at schema {version} and lacks migration(s) "
            f"{', '.join(map(str, pending))} of this tapkiosk: run 'tapkiosk --db {path} "
            "upgrade' (it backs the database up first)")
    return db


def is_empty(db: sqlite_utils.Database) -> bool:
    """True for a database with no table at all (a new file: nothing to lose by migrating)."""
    if isinstance(db, _pg_class()):
        return not [t for t in db.table_names() if t != "schema_migrations"]
    return db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                      "AND name != 'schema_migrations'").fetchone()[0] == 0


def pending_migrations(db: sqlite_utils.Database) -> list[int]:
    """Versions of the migrations not applied to ``db`` yet."""
    done = (set(r[0] for r in db.execute("SELECT version FROM schema_migrations"))
            if db["schema_migrations"].exists() else set())
    return [v for v, _, _ in MIGRATIONS if v not in done]


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
    if isinstance(db, _pg_class()):
        return _migrate_pg(db)
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


#: What SQLite has and PostgreSQL lacks: sum() of a condition (true counts 1), as in
#: ``sum(verdict = 'grant')``.
_PG_FUNCTIONS = """
CREATE OR REPLACE FUNCTION tapkiosk_sum_bool(bigint, boolean) RETURNS bigint
    LANGUAGE sql IMMUTABLE AS
    'SELECT CASE WHEN $2 IS NULL THEN $1 ELSE coalesce($1, 0) + $2::int END';
DO $$ BEGIN
    CREATE AGGREGATE sum(boolean) (SFUNC = tapkiosk_sum_bool, STYPE = bigint);
EXCEPTION WHEN duplicate_function THEN NULL;
END $$;
"""


def _migrate_pg(db: Any) -> int:
    """``migrate`` on PostgreSQL: the same versions, DDL translated (host/store/dialect.py),
    each in its own transaction; concurrent migrators take turns on a session advisory lock
    (taken before any snapshot, so the second one sees what the first applied)."""
    conn = db.conn
    conn.execute("SELECT pg_advisory_lock(1952539753)")   # 'tapk'
    try:
        conn.execute_script(translate_ddl(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL, applied_at INTEGER NOT NULL)") + ";\n" + _PG_FUNCTIONS)
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            conn.execute("BEGIN")
            try:
                conn.execute_script(PG_MIGRATIONS.get(version) or translate_ddl(sql))
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)",
                             (version, name, int(time.time())))
                conn.execute("COMMIT")
            except BaseException:
                conn.rollback()
                raise
    finally:
        conn.execute("SELECT pg_advisory_unlock(1952539753)")
    return schema_version(db)


def _pg_class() -> type:
    """The PostgreSQL database class (imported only when a PostgreSQL database is open)."""
    import sys
    mod = sys.modules.get("host.store.pg")
    return mod.PgDatabase if mod is not None else type(None)


#: Transactions run again by ``retrying`` in this process, by SQLSTATE (40001 serialization
#: failure, 40P01 deadlock, 23505 a tap another daemon stored first: host/store/pg.py): the
#: daemon's ``tapkiosk_store_retries`` metric, bench/chain.py.
RETRIES: dict[str, int] = {"40001": 0, "40P01": 0, "23505": 0}


def retrying(fn: Callable[[], T], *, attempts: int = RETRY_ATTEMPTS) -> T:
    """``fn()``, run again (up to ``attempts`` times in all, after a random backoff of at
    most 50 ms) when it raises ``Retryable`` (PostgreSQL: a serialization failure, deadlock
    or raced unique key, host/store/pg.py), which rolled its whole transaction back. SQLite
    never raises it: ``fn()`` runs once.

    Two writers spending one member's balance at once: one of the two is rolled back, about
    evenly; with two daemons in a closed loop a transaction can lose several times in a row,
    hence the many attempts (a loser's chance to lose them all is about 2**-attempts)."""
    for attempt in range(attempts):
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if type(e).__name__ != "Retryable" or attempt == attempts - 1:
                raise
            state = getattr(e, "sqlstate", "40001")
            RETRIES[state] = RETRIES.get(state, 0) + 1
            time.sleep(random.uniform(0, min(0.05, 0.001 * 2 ** attempt)))
    raise AssertionError("unreachable")


def begin_taps(conn: Any) -> None:
    """BEGIN the transaction of a batch of taps (``Engine.decide_many``): ``BEGIN IMMEDIATE``
    on SQLite, like every write; on PostgreSQL READ COMMITTED with the card and member rows
    of each tap locked as they are read (host/store/pg.py)."""
    begin = getattr(conn, "begin_taps", None)
    if begin is None:
        conn.execute("BEGIN IMMEDIATE")
    else:
        begin()


def lock_card(conn: Any, uid: str) -> None:
    """In a batch of taps, lock card ``uid`` and its member before the tap reads them: on
    PostgreSQL (READ COMMITTED) another daemon's tap of that member waits for this COMMIT;
    on SQLite nothing to do (``BEGIN IMMEDIATE`` holds the whole store)."""
    lock = getattr(conn, "lock_card", None)
    if lock is not None:
        lock(uid)


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
