# Runs on CPython (host): the fleet's rows — what readers report (STATUS), app bundles, update jobs.
"""Reads and writes of the fleet tables (migration 10).

A *rollout* is one ``tapkiosk fleet update``: one job per reader, wave 1 (the canaries, or
every reader without ``--canary``) and wave 2 (``waiting`` until every canary is healthy).
Job states: ``waiting`` -> ``pending`` -> ``sending`` -> ``staged`` -> ``healthy``; or
``failed`` (the reader refused the bundle), ``rolled_back`` (the new app did not stay),
``cancelled`` (a canary failed). The daemon (host/site/update.py) moves them; the CLI adds
rollouts and reads.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlite_utils

from host.errors import Conflict, InputError, NotFound

ACTIVE = ("pending", "sending", "staged")
DONE = ("healthy", "rolled_back", "failed", "cancelled")
CHUNK = 192  # protocol.packet.UPDATE_CHUNK_MAX
LINKS = ("", "serial", "mqtt")
KINDS = ("app", "firmware")  # index = UPDATE_BEGIN.kind


def save_status(db: sqlite_utils.Database, device_id: str, f: dict[str, Any], now: int) -> None:
    """A reader's STATUS frame (the row is replaced)."""
    link = LINKS[f["link"]] if f["link"] < len(LINKS) else str(f["link"])
    db.execute("INSERT OR REPLACE INTO fleet_status (device_id, app, mpy, uptime_s, heap_free, "
               "reset, link, outbox, trial, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
               (device_id, f["app"], f["mpy"], f["uptime_s"], f["heap_free"], f["reset"], link,
                f["outbox"], f["trial"], now))


def status_rows(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """One row per registered reader: its last STATUS (empty fields when it never sent one),
    online flag and last seen time, and its latest update job's state."""
    sql = """
SELECT d.device_id, d.kind, d.online, d.last_seen, s.app, s.mpy, s.uptime_s, s.heap_free,
       s.reset, s.link, s.outbox, s.trial, s.updated_at,
       (SELECT u.state || CASE WHEN u.detail != '' THEN ': ' || u.detail ELSE '' END
          FROM fleet_updates u WHERE u.device_id = d.device_id ORDER BY u.id DESC LIMIT 1)
         AS update_state
  FROM devices d LEFT JOIN fleet_status s ON s.device_id = d.device_id
 ORDER BY d.device_id"""
    return [dict(r) for r in db.query(sql)]


def parse_bundle(blob: bytes) -> dict[str, Any]:
    """The manifest of a bundle (u32 length | JSON | files), checked against the files it
    carries. Raises InputError."""
    if len(blob) < 4:
        raise InputError("not a tapkiosk bundle: too short")
    mlen = int.from_bytes(blob[:4], "big")
    try:
        man = json.loads(blob[4:4 + mlen])
        files = man["files"]
        version = man["version"]
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"not a tapkiosk bundle: manifest unreadable ({e})") from None
    if not isinstance(version, str) or not 1 <= len(version.encode()) <= 32:
        raise InputError("bundle version must be 1..32 bytes of text")
    if man.get("kind", "app") not in KINDS:
        raise InputError(f"bundle kind {man.get('kind')!r} is not app or firmware")
    if man.get("kind") == "firmware" and len(files) != 1:
        raise InputError("a firmware bundle holds exactly one image")
    off = 4 + mlen
    for path, size, sha in files:
        if hashlib.sha256(blob[off:off + size]).hexdigest() != sha:
            raise InputError(f"bundle file {path} does not match its manifest hash")
        off += size
    if off != len(blob):
        raise InputError("bundle has bytes its manifest does not name")
    if (len(blob) + CHUNK - 1) // CHUNK > 0xFFFF:
        raise InputError("bundle too large for one update")
    return man


def payload(blob: bytes) -> tuple[int, bytes]:
    """What a reader gets for a bundle: (UPDATE_BEGIN.kind, bytes): the whole bundle for an
    app, only the image for a firmware update."""
    # The manifest only: the reader checks every hash itself (a bundle changed in the store
    # is refused there, and the job fails with the reason).
    mlen = int.from_bytes(blob[:4], "big")
    try:
        kind = KINDS.index(json.loads(blob[4:4 + mlen]).get("kind", "app"))
    except (ValueError, AttributeError):
        raise InputError("not a tapkiosk bundle: manifest unreadable") from None
    if kind:
        return kind, blob[4 + mlen:]
    return kind, blob


def add_rollout(db: sqlite_utils.Database, blob: bytes, devices: list[str], canary: int,
                now: int) -> dict[str, Any]:
    """A rollout of ``blob`` to ``devices`` (the first ``canary`` of them first). Idempotent:
    the same bundle to the same readers is the same rollout. Raises InputError, NotFound,
    Conflict (a reader has an update under way)."""
    man = parse_bundle(blob)
    sha = hashlib.sha256(blob).hexdigest()
    if not devices:
        raise InputError("no readers to update")
    if canary < 0 or canary > len(devices):
        raise InputError(f"--canary must be 0..{len(devices)}")
    known = {r["device_id"] for r in db.query("SELECT device_id FROM devices")}
    for d in devices:
        if d not in known:
            raise NotFound(f"unknown device {d}")
    rollout = hashlib.sha256((sha + "|" + ",".join(sorted(devices)) + f"|{canary}").encode()
                             ).hexdigest()[:16]
    if db.execute("SELECT 1 FROM fleet_updates WHERE rollout = ?", (rollout,)).fetchone():
        return {"rollout": rollout, "version": man["version"], "devices": devices, "new": False}
    busy = [r[0] for r in db.execute(
        f"SELECT device_id FROM fleet_updates WHERE state IN ('waiting', {_q(ACTIVE)})")
        if r[0] in devices]
    if busy:
        raise Conflict(f"an update is already under way on {', '.join(sorted(busy))}")
    chunks = (len(blob) + CHUNK - 1) // CHUNK
    with db.conn:
        db.execute("INSERT OR IGNORE INTO fleet_bundles (sha256, version, size, blob, created_at)"
                   " VALUES (?,?,?,?,?)", (sha, man["version"], len(blob), blob, now))
        for i, d in enumerate(devices):
            wave = 1 if not canary or i < canary else 2
            db.execute("INSERT INTO fleet_updates (rollout, device_id, bundle, wave, state, "
                       "chunks, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
                       (rollout, d, sha, wave, "pending" if wave == 1 else "waiting", chunks,
                        now, now))
    return {"rollout": rollout, "version": man["version"], "devices": devices, "new": True}


def _q(states: tuple[str, ...]) -> str:
    return ", ".join(f"'{s}'" for s in states)


def rollout_rows(db: sqlite_utils.Database, rollout: str) -> list[dict[str, Any]]:
    """The jobs of one rollout."""
    return [dict(r) for r in db.query(
        "SELECT u.id, u.device_id, u.wave, u.state, u.have, u.chunks, u.detail, b.version "
        "FROM fleet_updates u JOIN fleet_bundles b ON b.sha256 = u.bundle "
        "WHERE u.rollout = ? ORDER BY u.wave, u.device_id", (rollout,))]


def active_jobs(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Jobs the daemon drives (pending, sending, staged), with their bundle's version."""
    return [dict(r) for r in db.query(
        "SELECT u.id, u.rollout, u.device_id, u.bundle, u.state, u.have, u.chunks, b.version, "
        f"b.size FROM fleet_updates u JOIN fleet_bundles b ON b.sha256 = u.bundle "
        f"WHERE u.state IN ({_q(ACTIVE)}) ORDER BY u.id")]


def bundle_blob(db: sqlite_utils.Database, sha: str) -> bytes:
    row = db.execute("SELECT blob FROM fleet_bundles WHERE sha256 = ?", (sha,)).fetchone()
    if row is None:
        raise NotFound(f"no bundle {sha}")
    return bytes(row[0])


def set_job(db: sqlite_utils.Database, job_id: int, state: str, have: int, detail: str,
            now: int) -> None:
    """Move a job on (a job that is done stays done)."""
    db.execute(f"UPDATE fleet_updates SET state = ?, have = ?, detail = ?, updated_at = ? "
               f"WHERE id = ? AND state NOT IN ({_q(DONE)})", (state, have, detail, now, job_id))


def advance_waves(db: sqlite_utils.Database, now: int) -> None:
    """Wave 2 of a rollout starts once every canary is healthy; it is cancelled when one
    failed or was rolled back."""
    rows = db.execute("SELECT rollout, sum(state = 'healthy'), sum(state IN "
                      "('failed', 'rolled_back', 'cancelled')), count(*) FROM fleet_updates "
                      "WHERE wave = 1 AND rollout IN (SELECT rollout FROM fleet_updates WHERE "
                      "state = 'waiting') GROUP BY rollout").fetchall()
    for rollout, healthy, bad, n in rows:
        if bad:
            db.execute("UPDATE fleet_updates SET state = 'cancelled', detail = 'a canary "
                       "failed', updated_at = ? WHERE rollout = ? AND state = 'waiting'",
                       (now, rollout))
        elif healthy == n:
            db.execute("UPDATE fleet_updates SET state = 'pending', updated_at = ? WHERE "
                       "rollout = ? AND state = 'waiting'", (now, rollout))
