# Runs on CPython (host): the SQL the daemon runs for its devices' state (seqs, config, events).
"""Device state the daemon reads and writes, one function per statement group.

Every function takes a ``sqlite_utils.Database``; the writes run on the daemon's single writer
(``host.site.writer.Writer.call``), the reads marked *read* also run on a read-only connection
(:class:`Reader`). The daemon-owned columns of ``devices`` (``last_seq``, ``resend_floor``,
``last_seen``, ``online``, ``fw``, ``down_seq``, ``last_error``, ``last_error_at``) and the
tables ``device_events``, ``device_config`` and ``device_refusals`` are written only here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

import sqlite_utils

from host.store import pg
from host.store.db import BUSY_TIMEOUT_MS, is_postgres
from protocol import seq as seqs


class Reader:
    """A read-only connection to the site database at ``path``, opened on first use and
    shared under a lock; ``run(fn)`` returns ``fn(db)``, or calls ``fallback(fn)`` when the
    database is in memory (no second connection can see it)."""

    def __init__(self, path: str | os.PathLike | None,
                 fallback: Callable[[Callable[[sqlite_utils.Database], Any]], Any]) -> None:
        self.path = path
        self._fallback = fallback
        self._db: sqlite_utils.Database | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[[sqlite_utils.Database], Any]) -> Any:
        """``fn(db)`` on the read-only connection."""
        if self.path is None or str(self.path) == ":memory:":
            return self._fallback(fn)
        with self._lock:
            if self._db is None and is_postgres(self.path):
                self._db = pg.open_readonly(self.path, lazy=True)
            if self._db is None:
                uri = ("file:" + urllib.request.pathname2url(os.path.abspath(self.path))
                       + "?mode=ro")
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                self._db = sqlite_utils.Database(conn)
            return fn(self._db)

    def close(self) -> None:
        """Close the connection (it is reopened by the next ``run``)."""
        with self._lock:
            if self._db is not None:
                self._db.conn.close()
                self._db = None


def device_exists(db: sqlite_utils.Database, device_id: str) -> bool:
    """*read* Whether ``device_id`` is registered."""
    return db.execute("SELECT 1 FROM devices WHERE device_id = ?",
                      (device_id,)).fetchone() is not None


def read_key(db: sqlite_utils.Database, device_id: str) -> bytes | None:
    """*read* The device's key as stored now (None when it is not registered)."""
    row = db.execute("SELECT key FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    return bytes(row[0]) if row else None


def load_device(db: sqlite_utils.Database, device_id: str) -> dict[str, Any] | None:
    """Device row plus the replay state to restore, and a fresh down-seq boot (persisted).

    ``highest`` is a wire seq of the device's current epoch: stored seqs are ``seq_base`` +
    the wire seq (host/store/devices.py ``new_epoch``); those of earlier epochs are ignored.
    """
    row = db.execute("SELECT kind, key, last_seq, resend_floor, down_seq, seq_base FROM devices "
                     "WHERE device_id = ?", (device_id,)).fetchone()
    if row is None:
        return None
    kind, key, last_seq, floor, down_seq, base = row
    top = db.execute(
        "SELECT max((SELECT coalesce(max(seq), 0) FROM taps WHERE device_id = ?1),"
        " (SELECT coalesce(max(seq), 0) FROM device_events WHERE device_id = ?1),"
        " (SELECT coalesce(max(void_seq), 0) FROM tap_voids WHERE device_id = ?1))",
        (device_id,)).fetchone()[0]
    boot = seqs.next_boot(seqs.boot_of(down_seq))
    save_down_boot(db, device_id, boot)
    cfg = db.execute("SELECT version, acked FROM device_config WHERE device_id = ?",
                     (device_id,)).fetchone() or (0, 0)
    return {"kind": kind, "key": bytes(key), "highest": max(last_seq, max(top - base, 0)),
            "resend_floor": floor, "down_boot": boot, "cfg_version": cfg[0],
            "cfg_acked": cfg[1], "seq_base": base}


def raise_down_boot(db: Any, device_id: str, boot: int) -> None:
    """Persist ``boot`` as ``device_id``'s down-seq boot unless a later one is stored (a boot
    a daemon took while the database was unreachable)."""
    db.execute("UPDATE devices SET down_seq = ? WHERE device_id = ? AND down_seq < ?",
               (seqs.make(boot, 0), device_id, seqs.make(boot, 0)))


def save_down_boot(db: sqlite_utils.Database, device_id: str, boot: int) -> None:
    """Persist the boot number of the host's down seqs to ``device_id``."""
    db.execute("UPDATE devices SET down_seq = ? WHERE device_id = ?",
               (seqs.make(boot, 0), device_id))


def new_up_boot(db: sqlite_utils.Database, device_id: str) -> int:
    """A new boot for seqs the host makes on a device's behalf (the NFC link), above every
    seq stored for it; persisted in ``devices.last_seq``."""
    row = db.execute("SELECT max(last_seq, coalesce((SELECT max(seq) FROM taps WHERE "
                     "device_id = ?1), 0)) FROM devices WHERE device_id = ?1",
                     (device_id,)).fetchone()
    boot = seqs.next_boot(seqs.boot_of(row[0] if row else 0))
    save_up_boot(db, device_id, boot)
    return boot


def save_up_boot(db: sqlite_utils.Database, device_id: str, boot: int) -> None:
    """Persist ``boot`` as the start of the device's up seqs (``last_seq`` never falls)."""
    db.execute("UPDATE devices SET last_seq = max(last_seq, ?) WHERE device_id = ?",
               (seqs.make(boot, 0), device_id))


def save_hello(db: sqlite_utils.Database, device_id: str, seq: int, floor: int, fw: str,
               now: int) -> None:
    """A HELLO was accepted: seq, resend floor, firmware, online."""
    db.execute("UPDATE devices SET last_seq = max(last_seq, ?), resend_floor = ?, fw = ?, "
               "online = 1, last_seen = ? WHERE device_id = ?", (seq, floor, fw, now, device_id))


def save_states(db: sqlite_utils.Database, rows: list[tuple[str, int, int, bool, int]]
                ) -> None:
    """Persist (device_id, highest seq, last seen, online, seq_base) rows in one transaction.
    The highest seq is kept only while ``seq_base`` is still the device's: a device replaced
    meanwhile (new key, new epoch) keeps its reset ``last_seq``."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        db.conn.executemany(
            "UPDATE devices SET last_seq = CASE WHEN seq_base = ? THEN max(last_seq, ?) "
            "ELSE last_seq END, last_seen = ?, online = ? WHERE device_id = ?",
            [(base, seq, seen, 1 if online else 0, dev)
             for dev, seq, seen, online, base in rows])
        db.conn.execute("COMMIT")
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise


def save_refusals(db: sqlite_utils.Database,
                  rows: list[tuple[str, str, int, int, str]]) -> None:
    """Add (device_id, cause, count, at, error) refusal counts; the device's last error is the
    newest of them. One transaction; idempotent per call only (counts add up)."""
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        db.conn.executemany(
            "INSERT INTO device_refusals (device_id, cause, count, last_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (device_id, cause) DO UPDATE SET count = count + excluded.count, "
            "last_at = max(last_at, excluded.last_at)",
            [(dev, cause, n, at) for dev, cause, n, at, _err in rows])
        db.conn.executemany(
            "UPDATE devices SET last_error = ?, last_error_at = ? "
            "WHERE device_id = ? AND coalesce(last_error_at, 0) <= ?",
            [(err, at, dev, at) for dev, _cause, _n, at, err in rows])
        db.conn.execute("COMMIT")
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise


def refusals(db: sqlite_utils.Database, device_id: str) -> dict[str, int]:
    """*read* The device's refusal counts by cause."""
    return dict(db.execute("SELECT cause, count FROM device_refusals WHERE device_id = ? "
                           "ORDER BY cause", (device_id,)).fetchall())


def stored_tap(db: sqlite_utils.Database, device_id: str, seq: int) -> Any:
    """*read* (uid, amount_fen, service, reply) of an applied tap, or None."""
    return db.execute("SELECT uid, amount_fen, service, reply FROM taps "
                      "WHERE device_id = ? AND seq = ?", (device_id, seq)).fetchone()


def save_event(db: sqlite_utils.Database, row: tuple[int, str, int, int, str, int, str]) -> None:
    """Store one EVENT (ts, device_id, seq, code, name, value, text); a repeat is ignored."""
    db.execute("INSERT OR IGNORE INTO device_events (ts, device_id, seq, code, name, value, text)"
               " VALUES (?,?,?,?,?,?,?)", row)


def ack_config(db: sqlite_utils.Database, device_id: str, version: int) -> None:
    """The device applied config ``version`` (the acknowledged version never falls)."""
    db.execute("UPDATE device_config SET acked = max(acked, ?) WHERE device_id = ?",
               (version, device_id))


def config_row(db: sqlite_utils.Database, device_id: str) -> tuple[int, str, int] | None:
    """*read* (version, digest, acked) of the device's config, or None."""
    row = db.execute("SELECT version, digest, acked FROM device_config WHERE device_id = ?",
                     (device_id,)).fetchone()
    return tuple(row) if row else None


def save_config(db: sqlite_utils.Database, device_id: str, version: int, digest: str,
                acked: int) -> None:
    """Record a new config version and digest for the device."""
    db.execute("INSERT INTO device_config (device_id, version, digest, acked) "
               "VALUES (?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
               "version = excluded.version, digest = excluded.digest",
               (device_id, version, digest, acked))


def gate_allow_list(db: sqlite_utils.Database, now: int) -> list[bytes]:
    """*read* UIDs of active, unexpired cards of active members holding a valid gate pass."""
    rows = db.execute(
        "SELECT DISTINCT c.uid, p.covers, p.kind, p.uses_left FROM cards c "
        "JOIN members m ON m.id = c.member_id JOIN passes p ON p.member_id = m.id "
        "WHERE c.status = 'active' AND (c.expires_at = 0 OR c.expires_at > ?) "
        "AND m.status = 'active' AND p.starts_at <= ? AND (p.ends_at = 0 OR p.ends_at > ?) "
        "AND p.kind IN ('time', 'punch') ORDER BY c.uid", (now, now, now)).fetchall()
    out: list[bytes] = []
    for uid, covers, kind, left in rows:
        try:
            ok = "gate" in json.loads(covers)
        except ValueError:
            ok = False
        if ok and (kind == "time" or (left or 0) > 0) and len(uid) in (8, 14, 20):
            b = bytes.fromhex(uid)
            if not out or out[-1] != b:
                out.append(b)
    return out
