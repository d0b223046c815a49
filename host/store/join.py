# Runs on CPython (host): `tapkiosk chain join` — a single-store SQLite site moved into a chain's database.
"""Joining a single-store site to a chain (issue 17).

:func:`join_site` moves the site file ``SITE.db`` into the chain's database (SQLite or
PostgreSQL) as store ``NAME``, in ONE transaction of the chain's database:

- **members are matched by card UID**: a site member whose cards are all unknown to the chain
  becomes a new chain member; one whose known cards all belong to one chain member is merged
  into that member (their balances add up);
- **conflicts** (:class:`JoinConflicts`, one line each, nothing written): the site member's
  cards belong to two chain members; a card known to the chain with another status; two site
  members matching one chain member; a phone already on another chain member; a secure card
  (keyed with the site's NTAG 424 key, not the chain's: re-key it after the join); a reader
  id the chain already has. ``skip_conflicts`` leaves those members (and readers) out, with
  their taps, and lists them;
- **value and history move as ledger entries**: every ledger row of a moved member is copied
  (ids remapped: lots, passes, taps, the row a reversal reverses), lots merge on (member,
  currency, expiry), projections add up, so ``verify`` holds on the chain afterwards; passes,
  payments, tier changes and taps move too; readers move into the store with their keys and
  sequence state (they keep working without re-provisioning);
- **personal data** is opened with the site's data key file (``SITE.db.key`` or
  ``site_key``) and sealed again under the chain's key (the chain's ``vault_for``): one key
  for the whole chain, the site's key is not needed afterwards; the phone's blind index is
  recomputed under the chain's key;
- **the rest of the history** (``host.store.join_history``): coupons with their events,
  the members' message consent and outbox, the sales history with the taps' points and
  voids, the readers' fleet status and update jobs; its conflicts (a merged member's
  opt-out that differs, a rollout name the chain has) are listed with the others;
- **idempotent**: the join is stored in ``ops`` under a key derived from the site's data key
  check value, so running it again returns the first result (``replayed``) and writes
  nothing; the same site into another store is a Conflict.

Not moved: catalogue moves (the chain's catalogue is its own), armed sales (they expire in
minutes), device events and config, gate presence, site keys of secure cards, staff (the
chain's staff are its own). SQL is portable (plain SQL, ``?`` placeholders).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from typing import Any

import sqlite_utils

from host.errors import Conflict, InputError
from host.ledger import idempotent
from host.privacy import keyfile
from host.privacy.record import personal_fields, sealed_columns
from host.privacy.vault import Vault, register, vault_for
from host.store import audit, stores
from host.store.db import open_db, transaction
from host.store.join_history import History


class JoinConflicts(Conflict):
    """The site cannot join as it is: ``lines`` names each conflict, one per line."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(f"{len(lines)} conflict(s): nothing was written; resolve them or "
                         "pass --skip-conflicts")
        self.lines = lines


def site_vault(site: sqlite_utils.Database, path: str) -> Vault | None:
    """The joining site's data keys from ``path``, checked against the site's check values;
    None when the site has no key versions (nothing sealed)."""
    checks = site.execute("SELECT version, check_value FROM data_keys").fetchall()
    if not checks:
        return None
    vault = Vault(keyfile.read_keys(path), path)
    for version, check in checks:
        if version not in vault.keys or not hmac.compare_digest(
                vault.check_value(version), bytes(check)):
            raise keyfile.DataKeyError(f"data key file {path} is not the joining site's key "
                                       f"(version {version}): pass --site-key")
    return vault


def _fingerprint(site: sqlite_utils.Database, site_path: str) -> str:
    row = site.execute("SELECT check_value FROM data_keys ORDER BY version LIMIT 1").fetchone()
    seed = bytes(row[0]) if row else os.path.realpath(site_path).encode()
    return hashlib.sha256(b"tapkiosk chain join " + seed).hexdigest()[:32]


def _rows(db: Any, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
    cur = db.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def join_site(chain: sqlite_utils.Database, site_path: str, store: str, *, actor: str,
              site_key: str | None = None, skip_conflicts: bool = False) -> dict[str, Any]:
    """Move the site at ``site_path`` into ``chain`` as ``store`` (see the module doc).
    Returns counts, the skipped members and readers, and ``replayed``."""
    stores.check_name(store)
    if not os.path.isfile(site_path):
        raise InputError(f"no site database at {site_path}")
    site = open_db(site_path)
    try:
        vault = site_vault(site, site_key or f"{site_path}.key")
        personal = site.execute("SELECT count(*) FROM members WHERE personal IS NOT NULL OR "
                                "name <> '' OR phone IS NOT NULL").fetchone()[0]
        chain_vault = vault_for(chain) if personal else None
        key = f"chain-join:{_fingerprint(site, site_path)}"
        canon = idempotent.canonical({"store": store})
        ts = int(time.time())
        with transaction(chain) as conn:
            first = idempotent.recall(conn, key, "chain join", canon)
            if first is not None:
                return {**first, "replayed": True}
            mover = _Move(site, conn, vault, chain_vault)
            history = History(mover, store)
            conflicts = mover.plan()
            conflicts += history.plan()
            if conflicts and not skip_conflicts:
                raise JoinConflicts(conflicts)
            if chain_vault is not None:
                register(conn, chain_vault, ts)
            sid = _ensure_store(conn, store, ts)
            counts = {**mover.run(sid), **history.run()}
            result = {"store": store, **counts, "skipped_conflicts": conflicts}
            audit.record(conn, ts, actor, "chain.join", after={"store": store, **counts})
            idempotent.remember(conn, key, "chain join", canon, result, ts)
        return {**result, "replayed": False}
    finally:
        site.conn.close()


def _ensure_store(conn: Any, name: str, ts: int) -> int:
    row = conn.execute("SELECT id FROM stores WHERE name = ?", (name,)).fetchone()
    if row is not None:
        return row[0]
    return conn.execute("INSERT INTO stores (name, created_at) VALUES (?, ?)",
                        (name, ts)).lastrowid


def _insert(conn: Any, table: str, row: dict[str, Any]) -> int:
    cols = list(row)
    cur = conn.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
                       f"({', '.join('?' * len(cols))})", tuple(row[c] for c in cols))
    return cur.lastrowid


class _Move:
    """One join: the plan (matches and conflicts), then the copy with remapped ids."""

    def __init__(self, site: Any, conn: Any, vault: Vault | None,
                 chain_vault: Vault | None) -> None:
        self.site, self.conn = site, conn
        self.vault, self.chain_vault = vault, chain_vault
        self.match: dict[int, int | None] = {}      # site member -> chain member (None: new)
        self.skip: set[int] = set()
        self.skip_devices: set[str] = set()
        self.ids: dict[str, dict[int, int]] = {t: {} for t in ("members", "passes", "lots",
                                                               "taps", "ledger")}

    # ----------------------------------------------------------------- plan
    def plan(self) -> list[str]:
        """Match every site member and return the conflicts (empty: the join can go)."""
        lines: list[str] = []
        claimed: dict[int, int] = {}
        for m in _rows(self.site, "SELECT * FROM members ORDER BY id"):
            why = self._match(m, claimed)
            if why:
                lines += [f"site member {m['id']}: {w}" for w in why]
                self.skip.add(m["id"])
        for (dev,) in self.site.execute("SELECT device_id FROM devices ORDER BY device_id"):
            if self.conn.execute("SELECT 1 FROM devices WHERE device_id = ?",
                                 (dev,)).fetchone():
                lines.append(f"reader {dev}: the chain already has a reader with this id")
                self.skip_devices.add(dev)
        return lines

    def _match(self, m: dict[str, Any], claimed: dict[int, int]) -> list[str]:
        why, owners = [], set()
        for uid, status, secure in self.site.execute(
                "SELECT uid, status, secure FROM cards WHERE member_id = ?", (m["id"],)):
            if secure:
                why.append(f"card {uid} is a secure card keyed with this site's key: "
                           "re-key it at the chain after the join")
            row = self.conn.execute("SELECT member_id, status FROM cards WHERE uid = ?",
                                    (uid,)).fetchone()
            if row is None:
                continue
            owners.add(row[0])
            if row[1] != status:
                why.append(f"card {uid} is {status} here and {row[1]} at the chain "
                           f"(chain member {row[0]})")
        if len(owners) > 1:
            why.append(f"its cards belong to chain members {', '.join(map(str, sorted(owners)))}")
        target = next(iter(owners)) if len(owners) == 1 else None
        if target is not None and target in claimed:
            why.append(f"chain member {target} is matched by site member {claimed[target]} too")
        why += self._phone(m, target)
        if not why:
            self.match[m["id"]] = target
            if target is not None:
                claimed[target] = m["id"]
        return why

    def _phone(self, m: dict[str, Any], target: int | None) -> list[str]:
        if self.vault is None or m.get("personal") is None:
            return []
        phone = personal_fields(self.vault, m["id"], m).get("phone")
        if not phone or self.chain_vault is None:
            return []
        idx = self.chain_vault.phone_indexes(phone)
        marks = ", ".join("?" * len(idx))
        row = self.conn.execute(f"SELECT id FROM members WHERE phone_index IN ({marks})",
                                tuple(idx)).fetchone()
        if row is not None and row[0] != target:
            return [f"its phone is chain member {row[0]}'s"]
        return []

    # ----------------------------------------------------------------- copy
    def run(self, store_id: int) -> dict[str, Any]:
        """Copy everything planned; returns the counts."""
        devices = self._devices(store_id)
        for m in _rows(self.site, "SELECT * FROM members ORDER BY id"):
            if m["id"] not in self.skip:
                self._member(m)
        self._referrers()
        cards = self._cards()
        for p in _rows(self.site, "SELECT * FROM passes ORDER BY id"):
            if p["member_id"] in self.ids["members"]:
                self.ids["passes"][p.pop("id")] = _insert(
                    self.conn, "passes", {**p, "member_id": self.ids["members"][p["member_id"]]})
        self._lots()
        taps = self._taps()
        ledger = self._ledger()
        for table in ("payments", "tier_changes"):
            for r in _rows(self.site, f"SELECT * FROM {table} ORDER BY id"):
                if r["member_id"] in self.ids["members"]:
                    r.pop("id")
                    r["member_id"] = self.ids["members"][r["member_id"]]
                    if "pass_id" in r and r["pass_id"] is not None:
                        r["pass_id"] = self.ids["passes"].get(r["pass_id"])
                    if table == "payments":      # the site's counter is the store's now
                        r["store_id"] = store_id
                    _insert(self.conn, table, r)
        merged = sum(1 for t in self.match.values() if t is not None)
        return {"members_new": len(self.match) - merged, "members_merged": merged,
                "members_skipped": sorted(self.skip), "cards": cards, "readers": devices,
                "readers_skipped": sorted(self.skip_devices), "taps": taps,
                "ledger_rows": ledger}

    def _devices(self, store_id: int) -> int:
        n = 0
        for d in _rows(self.site, "SELECT * FROM devices ORDER BY device_id"):
            if d["device_id"] not in self.skip_devices:
                _insert(self.conn, "devices", {**d, "store_id": store_id})
                n += 1
        return n

    def _member(self, m: dict[str, Any]) -> None:
        site_id = m.pop("id")
        target = self.match[site_id]
        fields = personal_fields(self.vault, site_id, m)
        values = ("principal_fen", "bonus_fen", "points", "qualifying")
        if target is None:
            row = {k: v for k, v in m.items() if k not in (
                "personal", "personal_version", "phone_index", "referrer_id", "name", "phone",
                "birthday", "birth_month")}
            target = _insert(self.conn, "members", row)
        else:
            self.conn.execute(
                "UPDATE members SET " + ", ".join(f"{c} = {c} + ?" for c in values)
                + " WHERE id = ?", (*(m[c] for c in values), target))
            if self.conn.execute("SELECT personal FROM members WHERE id = ?",
                                 (target,)).fetchone()[0] is not None:
                fields = {}      # the chain's own record of the person stays
        if any(fields.values()) and self.chain_vault is not None:
            cols = sealed_columns(self.chain_vault, target, fields)
            self.conn.execute("UPDATE members SET " + ", ".join(f"{c} = ?" for c in cols)
                              + " WHERE id = ?", (*cols.values(), target))
        self.ids["members"][site_id] = target

    def _referrers(self) -> None:
        for site_id, ref in self.site.execute("SELECT id, referrer_id FROM members WHERE "
                                              "referrer_id IS NOT NULL").fetchall():
            if site_id in self.ids["members"] and self.match.get(site_id) is None:
                self.conn.execute("UPDATE members SET referrer_id = ? WHERE id = ?",
                                  (self.ids["members"].get(ref), self.ids["members"][site_id]))

    def _cards(self) -> int:
        moved = []
        for c in _rows(self.site, "SELECT * FROM cards ORDER BY uid"):
            if c["member_id"] not in self.ids["members"]:
                continue
            if self.conn.execute("SELECT 1 FROM cards WHERE uid = ?", (c["uid"],)).fetchone():
                continue          # the chain's card of the matched member
            _insert(self.conn, "cards", {**c, "member_id": self.ids["members"][c["member_id"]],
                                         "replaced_by": None})
            moved.append(c)
        for c in moved:
            if c["replaced_by"] is not None:
                self.conn.execute("UPDATE cards SET replaced_by = ? WHERE uid = ?",
                                  (c["replaced_by"], c["uid"]))
        return len(moved)

    def _lots(self) -> None:
        for lot in _rows(self.site, "SELECT * FROM lots ORDER BY id"):
            mid = self.ids["members"].get(lot["member_id"])
            if mid is None:
                continue
            row = self.conn.execute("SELECT id FROM lots WHERE member_id = ? AND currency = ? "
                                    "AND expires_at = ?",
                                    (mid, lot["currency"], lot["expires_at"])).fetchone()
            if row is not None:
                self.conn.execute("UPDATE lots SET amount = amount + ?, remaining = remaining "
                                  "+ ? WHERE id = ?", (lot["amount"], lot["remaining"], row[0]))
                self.ids["lots"][lot["id"]] = row[0]
            else:
                self.ids["lots"][lot["id"]] = _insert(self.conn, "lots", {
                    **{k: v for k, v in lot.items() if k != "id"}, "member_id": mid})

    def _taps(self) -> int:
        n = 0
        for t in _rows(self.site, "SELECT * FROM taps ORDER BY id"):
            if t["device_id"] in self.skip_devices or t["member_id"] in self.skip:
                continue
            site_id = t.pop("id")
            t["member_id"] = self.ids["members"].get(t["member_id"])
            t["pass_id"] = self.ids["passes"].get(t["pass_id"])
            self.ids["taps"][site_id] = _insert(self.conn, "taps", t)
            n += 1
        return n

    def _ledger(self) -> int:
        n = 0
        for r in _rows(self.site, "SELECT * FROM ledger ORDER BY id"):
            if r["member_id"] not in self.ids["members"]:
                continue
            site_id = r.pop("id")
            r["member_id"] = self.ids["members"][r["member_id"]]
            for col, table in (("lot_id", "lots"), ("pass_id", "passes"), ("tap_id", "taps"),
                               ("reverses", "ledger")):
                if r[col] is not None:
                    r[col] = self.ids[table].get(r[col])
            if r["op_key"] is not None:
                r["op_key"] = f"join:{r['op_key']}"[:128]
            self.ids["ledger"][site_id] = _insert(self.conn, "ledger", r)
            n += 1
        return n


def describe(result: dict[str, Any]) -> dict[str, Any]:
    """``join_site``'s result for people: lists as text, conflicts counted."""
    out = {k: " ".join(map(str, v)) if isinstance(v, list) else v
           for k, v in result.items() if k != "skipped_conflicts"}
    out["skipped_conflicts"] = len(result.get("skipped_conflicts", []))
    return out
