# Runs on CPython (host): a store daemon's local SQLite file — the member snapshot and the offline tap journal.
"""The local journal of a store's daemon (issue 17, WAN outage).

One SQLite file on the store PC, apart from the chain's database, holds:

- a **snapshot** of what an outage decision needs (card -> member, status, tier, stored
  value, valid time passes and punch cards with their daily caps and grants of the day,
  gate presence, each reader's kind, store and settings), replaced as a whole by
  :meth:`Journal.refresh` while the chain's database is reachable, with the last journal
  id it already includes (an entry after it is counted on top of the snapshot);
- the **recent online taps** (``snap_recent``): the taps of members this daemon decided
  online after the last refresh (balance after, pass used, gate direction), which the
  snapshot cannot hold yet; the writer keeps them in RAM and writes them here when the
  database drops (:meth:`Journal.keep_recent`), and a refresh clears them. Offline they
  count like journal entries after the snapshot;
- the **readers this daemon served** (``snap_readers``: key, replay state, config version,
  saved whenever one is loaded while the database answers) and the daemon's settings
  (``snap_settings``: where its policy file is), so that a daemon started while the
  database is unreachable can still authenticate its readers and load its policy. The file
  holds reader keys: it is created readable by its owner only;
- the **journal**: every tap decided during an outage, with its decision and reply bytes,
  written durably (``synchronous=FULL``, committed) BEFORE the reply leaves, keyed by the
  original (device, seq) so a retransmission gets the same reply and a replay after a crash
  applies it once. Entries go ``pending`` -> ``applied`` | ``unapplied`` (the chain refused
  it: see ``offline_unapplied``); a tap refused offline is ``denied`` from the start (nothing
  to apply) and is only recorded, as refused, in the chain's taps (``stored`` set then), so
  every tap a reader saw decided is in the chain's database once.

Only the daemon's writer thread uses it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Sequence
from typing import Any, NamedTuple

from host.errors import InputError
from host.rules.offline import Local, OutageDecision, SnapCard, SnapDevice, SnapPass

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snap_cards (uid TEXT PRIMARY KEY, member_id INTEGER NOT NULL,
    status TEXT NOT NULL, expires_at INTEGER, member_status TEXT NOT NULL, tier TEXT NOT NULL,
    balance_fen INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS snap_cards_member ON snap_cards(member_id);
CREATE TABLE IF NOT EXISTS snap_passes (id INTEGER PRIMARY KEY, member_id INTEGER NOT NULL,
    kind TEXT NOT NULL, covers TEXT NOT NULL, starts_at INTEGER NOT NULL,
    ends_at INTEGER NOT NULL, uses_left INTEGER, created_at INTEGER NOT NULL,
    daily_cap INTEGER);
CREATE INDEX IF NOT EXISTS snap_passes_member ON snap_passes(member_id);
CREATE TABLE IF NOT EXISTS snap_devices (device_id TEXT PRIMARY KEY, kind TEXT NOT NULL,
    store TEXT, settings TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS snap_presence (member_id INTEGER PRIMARY KEY,
    inside INTEGER NOT NULL, ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS snap_pass_day (pass_id INTEGER PRIMARY KEY, used INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS snap_recent (device_id TEXT NOT NULL, seq INTEGER NOT NULL,
    member_id INTEGER NOT NULL, kind TEXT NOT NULL, verdict TEXT NOT NULL, pass_id INTEGER,
    uses_left INTEGER NOT NULL, direction TEXT, ts INTEGER NOT NULL,
    balance_fen INTEGER NOT NULL, PRIMARY KEY (device_id, seq));
CREATE INDEX IF NOT EXISTS snap_recent_member ON snap_recent(member_id);
CREATE TABLE IF NOT EXISTS snap_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS snap_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snap_readers (device_id TEXT PRIMARY KEY, kind TEXT NOT NULL,
    key BLOB NOT NULL, highest INTEGER NOT NULL, resend_floor INTEGER NOT NULL,
    down_boot INTEGER NOT NULL, cfg_version INTEGER NOT NULL, cfg_acked INTEGER NOT NULL,
    seq_base INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    outage INTEGER NOT NULL,
    device_id TEXT NOT NULL, seq INTEGER NOT NULL, uid TEXT NOT NULL,
    service INTEGER NOT NULL, amount_fen INTEGER NOT NULL, direction TEXT,
    device_time INTEGER NOT NULL, ts INTEGER NOT NULL,
    member_id INTEGER, kind TEXT NOT NULL, verdict TEXT NOT NULL, reason TEXT NOT NULL,
    text TEXT NOT NULL, charged_fen INTEGER NOT NULL, pass_id INTEGER,
    uses_left INTEGER NOT NULL, balance_fen INTEGER NOT NULL, relay_ms INTEGER NOT NULL,
    pattern INTEGER NOT NULL, reply BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'applied', 'unapplied', 'denied')),
    note TEXT NOT NULL DEFAULT '',
    stored INTEGER NOT NULL DEFAULT 0,
    UNIQUE (device_id, seq)
);
CREATE INDEX IF NOT EXISTS journal_state ON journal(state, id);
"""

#: A member's granted taps after the snapshot: online (``snap_recent``, src 0) then offline
#: (journal entries after ``journal_upto``, src 1); named parameters ``m`` and ``upto``.
_SINCE = ("SELECT kind, pass_id, direction, ts, 0 AS src, rowid AS n FROM snap_recent "
          "WHERE member_id = :m AND verdict = 'grant' UNION ALL SELECT kind, pass_id, "
          "direction, ts, 1, id FROM journal WHERE member_id = :m AND id > :upto AND "
          "verdict = 'grant'")

_ENTRY_COLS = ("id", "outage", "device_id", "seq", "uid", "service", "amount_fen", "direction",
               "device_time", "ts", "member_id", "kind", "verdict", "reason", "text",
               "charged_fen", "pass_id", "uses_left", "balance_fen", "relay_ms", "pattern",
               "reply", "state", "note")


class Entry(NamedTuple):
    """One journaled tap."""

    id: int
    outage: int
    device_id: str
    seq: int
    uid: str
    service: int
    amount_fen: int
    direction: str | None
    device_time: int
    ts: int
    member_id: int | None
    kind: str
    verdict: str
    reason: str
    text: str
    charged_fen: int
    pass_id: int | None
    uses_left: int
    balance_fen: int
    relay_ms: int
    pattern: int
    reply: bytes
    state: str
    note: str


class Journal:
    """The local snapshot and journal file at ``path`` (created when missing)."""

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        try:
            with contextlib.suppress(FileExistsError):   # reader keys: the owner only
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            self.conn = sqlite3.connect(self.path, isolation_level=None,
                                        check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.executescript(_SCHEMA)
            _add_columns(self.conn)
        except (OSError, sqlite3.Error) as e:
            raise InputError(f"cannot open the offline journal {self.path}: {e}") from None

    def close(self) -> None:
        self.conn.close()

    # ----------------------------------------------------------------- snapshot
    def refresh(self, central: Any, ts: int, day_start: int) -> int:
        """Replace the snapshot by what the chain's database ``central`` (a connection or
        Database with ``execute``) holds now, ``day_start`` the unix time of today's local
        midnight; returns the number of cards. Portable SQL."""
        cards = central.execute(
            "SELECT c.uid, c.member_id, c.status, c.expires_at, m.status, m.tier, "
            "m.principal_fen + m.bonus_fen FROM cards c JOIN members m ON m.id = c.member_id"
        ).fetchall()
        passes = central.execute(
            "SELECT id, member_id, kind, covers, starts_at, ends_at, uses_left, created_at, "
            "daily_cap FROM passes WHERE cancelled_at IS NULL AND kind IN ('time', 'punch') "
            "AND (ends_at = 0 OR ends_at > ?)", (ts,)).fetchall()
        devices = central.execute(
            "SELECT d.device_id, d.kind, s.name, d.settings FROM devices d LEFT JOIN stores s "
            "ON s.id = d.store_id").fetchall()
        presence = central.execute("SELECT member_id, inside, ts FROM presence").fetchall()
        # Grants of the day on capped passes, counted as host.rules.payment.used_today does.
        day = central.execute(
            "SELECT t.pass_id, count(*) FROM taps t JOIN passes p ON p.id = t.pass_id "
            "WHERE p.daily_cap > 0 AND t.ts >= ? AND t.verdict = 'grant' AND "
            "coalesce(t.direction, 'in') <> 'out' AND t.id NOT IN "
            "(SELECT tap_id FROM tap_voids) GROUP BY t.pass_id", (day_start,)).fetchall()
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            for table in ("snap_cards", "snap_passes", "snap_devices", "snap_presence",
                          "snap_pass_day", "snap_recent"):
                c.execute(f"DELETE FROM {table}")
            c.executemany("INSERT INTO snap_cards VALUES (?,?,?,?,?,?,?)", cards)
            c.executemany("INSERT INTO snap_passes VALUES (?,?,?,?,?,?,?,?,?)", passes)
            c.executemany("INSERT INTO snap_devices VALUES (?,?,?,?)", devices)
            c.executemany("INSERT INTO snap_presence VALUES (?,?,?)", presence)
            c.executemany("INSERT INTO snap_pass_day VALUES (?,?)", day)
            upto = c.execute("SELECT coalesce(max(id), 0) FROM journal").fetchone()[0]
            for key, value in (("taken_at", ts), ("day_start", day_start),
                               ("journal_upto", upto)):
                c.execute("INSERT INTO snap_meta VALUES (?, ?) ON CONFLICT (key) "
                          "DO UPDATE SET value = excluded.value", (key, value))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return len(cards)

    def taken_at(self) -> int | None:
        """When the snapshot was last refreshed (unix seconds), None if never."""
        return self._meta("taken_at")

    def _meta(self, key: str) -> int | None:
        row = self.conn.execute("SELECT value FROM snap_meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def card(self, uid: str) -> SnapCard | None:
        """The snapshot of card ``uid`` with its member's passes, None when unknown."""
        row = self.conn.execute("SELECT * FROM snap_cards WHERE uid = ?", (uid,)).fetchone()
        if row is None:
            return None
        passes = tuple(SnapPass._make(r) for r in self.conn.execute(
            "SELECT id, kind, covers, starts_at, ends_at, uses_left, daily_cap FROM snap_passes "
            "WHERE member_id = ? ORDER BY created_at, id", (row[1],)))
        fresher = self.conn.execute("SELECT balance_fen FROM snap_recent WHERE member_id = ? "
                                    "ORDER BY rowid DESC LIMIT 1", (row[1],)).fetchone()
        card = SnapCard(*row, passes=passes)
        return card._replace(balance_fen=fresher[0]) if fresher else card

    def keep_recent(self, rows: Sequence[tuple[str, int, int, str, int | None, int,
                                               str | None, int, int]]) -> None:
        """Keep taps decided online since the snapshot, as (device_id, seq, member_id,
        verdict, pass_id, uses_left, tap direction, ts, balance_fen after), in one durable
        transaction; a gate's direction is resolved as the engine does (the reader's fixed
        one, else the tap's). A (device, seq) already kept is kept once."""
        if not rows:
            return
        out = []
        for dev_id, seq, mid, verdict, pid, left, direction, ts, bal in rows:
            dev = self.device(dev_id)
            kind = dev.kind if dev is not None else ""
            if kind == "gate":
                fixed = dev.settings.get("direction", "both")
                direction = fixed if fixed in ("in", "out") else (direction or "in")
            out.append((dev_id, seq, mid, kind, verdict, pid, left, direction, ts, bal))
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.executemany("INSERT OR IGNORE INTO snap_recent VALUES (?,?,?,?,?,?,?,?,?,?)", out)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def device(self, device_id: str) -> SnapDevice | None:
        """(kind, store, settings) of a reader in the snapshot, None when unknown."""
        row = self.conn.execute("SELECT kind, store, settings FROM snap_devices WHERE "
                                "device_id = ?", (device_id,)).fetchone()
        return SnapDevice(row[0], row[1], json.loads(row[2] or "{}")) if row else None

    _READER_COLS = ("kind", "key", "highest", "resend_floor", "down_boot", "cfg_version",
                    "cfg_acked", "seq_base")

    def save_reader(self, device_id: str, row: dict[str, Any]) -> None:
        """Keep what authenticates reader ``device_id`` (a ``load_device`` row)."""
        self.conn.execute("INSERT OR REPLACE INTO snap_readers VALUES (?,?,?,?,?,?,?,?,?)",
                          (device_id, *(row[c] for c in self._READER_COLS)))

    def reader(self, device_id: str) -> dict[str, Any] | None:
        """The saved ``load_device`` row of reader ``device_id``, None when never saved."""
        row = self.conn.execute(f"SELECT {', '.join(self._READER_COLS)} FROM snap_readers "
                                "WHERE device_id = ?", (device_id,)).fetchone()
        if row is None:
            return None
        out = dict(zip(self._READER_COLS, row))
        out["key"] = bytes(out["key"])
        return out

    def set_setting(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO snap_settings VALUES (?, ?)", (key, value))

    def setting(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM snap_settings WHERE key = ?",
                                (key,)).fetchone()
        return row[0] if row else None

    # ----------------------------------------------------------------- journal
    def next_outage(self) -> int:
        """A new outage number (one more than any journaled)."""
        return self.conn.execute("SELECT coalesce(max(outage), 0) + 1 FROM journal"
                                 ).fetchone()[0]

    def spent(self, member_id: int, outage: int) -> tuple[int, dict[int, int]]:
        """What ``member_id`` was granted offline in ``outage``: stored value (fen) and
        punch uses by pass id."""
        fen = self.conn.execute("SELECT coalesce(sum(charged_fen), 0) FROM journal WHERE "
                                "member_id = ? AND outage = ? AND verdict = 'grant'",
                                (member_id, outage)).fetchone()[0]
        uses = dict(self.conn.execute(
            "SELECT pass_id, count(*) FROM journal WHERE member_id = ? AND outage = ? AND "
            "verdict = 'grant' AND uses_left >= 0 AND pass_id IS NOT NULL GROUP BY pass_id",
            (member_id, outage)).fetchall())
        return fen, uses

    def local(self, member_id: int, outage: int, device_id: str, day_start: int) -> Local:
        """What this store knows of ``member_id`` beyond its snapshot card (see
        host.rules.offline.Local): the snapshot's counts plus the taps it decided after it,
        online (``snap_recent``) and offline (journal entries after ``journal_upto``); the
        snapshot's day counts only when taken the same day."""
        spent, uses = self.spent(member_id, outage)
        for pid, n in self.conn.execute(
                "SELECT pass_id, count(*) FROM snap_recent WHERE member_id = ? AND "
                "verdict = 'grant' AND uses_left >= 0 AND pass_id IS NOT NULL GROUP BY pass_id",
                (member_id,)):
            uses[pid] = uses.get(pid, 0) + n
        since = {"m": member_id, "upto": self._meta("journal_upto") or 0,
                 "day": day_start, "dev": device_id}
        same_day = self._meta("day_start") == day_start
        day: dict[int, int] = dict(self.conn.execute(
            "SELECT pass_id, used FROM snap_pass_day WHERE pass_id IN (SELECT id FROM "
            "snap_passes WHERE member_id = ?)", (member_id,))) if same_day else {}
        for pid, n in self.conn.execute(
                f"SELECT pass_id, count(*) FROM ({_SINCE}) WHERE ts >= :day AND "
                "pass_id IS NOT NULL AND coalesce(direction, 'in') <> 'out' GROUP BY pass_id",
                since):
            day[pid] = day.get(pid, 0) + n
        last_gate = self.conn.execute(
            f"SELECT direction, ts FROM ({_SINCE}) WHERE kind = 'gate' "
            "ORDER BY ts DESC, src DESC, n DESC LIMIT 1", since).fetchone()
        pres = ((1 if (last_gate[0] or "in") == "in" else 0, last_gate[1]) if last_gate else
                self.conn.execute("SELECT inside, ts FROM snap_presence WHERE member_id = ?",
                                  (member_id,)).fetchone())
        last_here = self.conn.execute(
            "SELECT max(ts) FROM (SELECT ts FROM journal WHERE member_id = :m AND "
            "device_id = :dev AND verdict = 'grant' UNION ALL SELECT ts FROM snap_recent "
            "WHERE member_id = :m AND device_id = :dev AND verdict = 'grant')",
            since).fetchone()[0]
        return Local(spent, uses, day, pres[1] if pres and pres[0] else None, last_here)

    def find(self, device_id: str, seq: int) -> Entry | None:
        """The journaled tap (device, seq), None when there is none."""
        row = self.conn.execute(f"SELECT {', '.join(_ENTRY_COLS)} FROM journal WHERE "
                                "device_id = ? AND seq = ?", (device_id, seq)).fetchone()
        return _entry(row) if row else None

    def append(self, outage: int, tap: Any, ts: int, kind: str, d: OutageDecision,
               relay_ms: int, pattern: int, reply: bytes) -> None:
        """Journal a decided tap durably (committed with ``synchronous=FULL``): call it
        before the reply leaves. A refused tap is journaled ``denied`` (nothing to apply)."""
        self.conn.execute(
            "INSERT INTO journal (outage, device_id, seq, uid, service, amount_fen, direction, "
            "device_time, ts, member_id, kind, verdict, reason, text, charged_fen, pass_id, "
            "uses_left, balance_fen, relay_ms, pattern, reply, state) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (outage, tap.device_id, tap.seq, tap.uid, tap.service, tap.amount_fen,
             d.direction or tap.direction, tap.device_time, ts, d.member_id, kind, d.verdict,
             d.reason, d.text,
             d.charged_fen, d.pass_id, d.uses_left, d.balance_fen, relay_ms, pattern, reply,
             "pending" if d.verdict == "grant" else "denied"))

    def pending(self) -> list[Entry]:
        """Taps not in the chain's database yet, in the order decided: granted ones to
        apply, denied ones to record as refused."""
        return [_entry(r) for r in self.conn.execute(
            f"SELECT {', '.join(_ENTRY_COLS)} FROM journal WHERE state = 'pending' OR "
            "(state = 'denied' AND stored = 0) ORDER BY id")]

    def mark(self, entry_id: int, state: str, note: str = "") -> None:
        """Set an entry's outcome once it is in the chain's database."""
        self.conn.execute("UPDATE journal SET state = ?, note = ?, stored = 1 WHERE id = ?",
                          (state, note, entry_id))

    def waiting(self) -> int:
        """How many taps wait for the chain's database (granted or denied offline)."""
        return self.conn.execute("SELECT count(*) FROM journal WHERE state = 'pending' OR "
                                 "(state = 'denied' AND stored = 0)").fetchone()[0]

    def counts(self) -> dict[str, int]:
        """Journal entries by state (``pending``, ``applied``, ``unapplied``, ``denied``)."""
        out = {s: 0 for s in ("pending", "applied", "unapplied", "denied")}
        out.update(self.conn.execute("SELECT state, count(*) FROM journal GROUP BY state"))
        return out


def _add_columns(conn: sqlite3.Connection) -> None:
    """Columns a journal file written by an earlier version lacks (denied taps recorded,
    the snapshot's caps and reader settings)."""
    for table, col, decl in (("journal", "stored", "INTEGER NOT NULL DEFAULT 0"),
                             ("snap_passes", "daily_cap", "INTEGER"),
                             ("snap_devices", "settings", "TEXT NOT NULL DEFAULT '{}'")):
        cols = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if col not in cols:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {col} {decl}")


def _entry(row: Any) -> Entry:
    e = Entry._make(row)
    return e._replace(reply=bytes(e.reply))
