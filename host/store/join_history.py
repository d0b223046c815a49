# Runs on CPython (host): `tapkiosk chain join` — the history a joining site brings beyond value: coupons, messages, sales, voids, fleet.
"""What ``host.store.join`` moves after the members, value and taps (issue 17): the rest of
what a store manager expects to find at the chain after joining, with the ids remapped
through the join's maps (members, taps, passes) and nothing merged silently.

- **coupons** with their events (redeemed, unredeemed: the coupon's state is the sum of its
  events), so an open coupon stays open and a used one used. A merged member whose chain
  record already has a coupon of the same (source, ref) keeps both: the site's ref becomes
  ``join:STORE:REF`` (counted in ``coupons_renamed``);
- **messages**: each member's consent (``member_contacts``: the opt-out and the e-mail mask)
  and the outbox history (sent, failed, skipped) and its pending messages (the chain's sender
  sends them). A merged member keeps the chain's contact row when it has one; an opt-out
  that differs between the two is a **conflict**. A site message whose (member, dedup) the
  chain already has (the same birthday greeting) moves as history under ``join:STORE:DEDUP``
  and, if not sent yet, as ``skipped`` (counted in ``messages_duplicate``): never sent twice;
- **sales**: every settled sale of a moved reader (paid, denied, cancelled, expired) with its
  tap; an armed sale is not moved (it expires in minutes; the reader is armed again at the
  chain); the points each tap paid with (``tap_points``) and the taps' voids
  (``tap_voids``), so the reports' points and voids columns stay true;
- **fleet**: the moved readers' last status, their over-the-air update jobs and the bundles
  those use (bundles are content-addressed: one the chain has is shared; a rollout's name
  hashes its bundle and readers, and a reader id the chain has is already a conflict).

SQL is portable (plain SQL, ``?`` placeholders).
"""

from __future__ import annotations

import json
from typing import Any


def _rows(db: Any, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
    cur = db.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _insert(conn: Any, table: str, row: dict[str, Any]) -> int:
    cols = list(row)
    cur = conn.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
                       f"({', '.join('?' * len(cols))})", tuple(row[c] for c in cols))
    return cur.lastrowid


def _join_key(key: str | None) -> str | None:
    return None if key is None else f"join:{key}"[:128]


class History:
    """The history part of one join: ``plan`` lists its conflicts, ``run`` copies."""

    def __init__(self, move: Any, store: str) -> None:
        self.move, self.store = move, store
        self.site, self.conn = move.site, move.conn
        self.coupons: dict[int, int] = {}

    # ----------------------------------------------------------------- plan
    def plan(self) -> list[str]:
        """Conflicts of the history: a merged member's opt-out that differs (the member is
        skipped). Call after the members are matched (``move.match``)."""
        lines = []
        for site_id, target in sorted(self.move.match.items()):
            if target is None:
                continue
            mine = self.site.execute("SELECT opt_out FROM member_contacts WHERE member_id = ?",
                                     (site_id,)).fetchone()
            theirs = self.conn.execute("SELECT opt_out FROM member_contacts WHERE "
                                       "member_id = ?", (target,)).fetchone()
            if mine and theirs and bool(mine[0]) != bool(theirs[0]):
                lines.append(f"site member {site_id}: opted "
                             f"{'out of' if mine[0] else 'in to'} messages here and "
                             f"{'out' if theirs[0] else 'in'} at the chain "
                             f"(chain member {target})")
                self.move.skip.add(site_id)
        for site_id in self.move.skip:
            self.move.match.pop(site_id, None)
        return lines

    # ----------------------------------------------------------------- copy
    def run(self) -> dict[str, int]:
        """Copy coupons, messages, sales, voids and fleet rows; returns the counts."""
        out: dict[str, int] = {}
        out["coupons"], out["coupons_renamed"] = self._coupons()
        out["coupon_events"] = self._coupon_events()
        out["contacts"] = self._contacts()
        out["messages"], out["messages_duplicate"] = self._messages()
        out["sales"] = self._sales()
        out["tap_points"] = self._per_tap("tap_points", "tap_id")
        out["tap_voids"] = self._per_tap("tap_voids", None)
        out["fleet_updates"] = self._fleet()
        return out

    def _member(self, site_id: int | None) -> int | None:
        return self.move.ids["members"].get(site_id) if site_id is not None else None

    def _coupons(self) -> tuple[int, int]:
        n = renamed = 0
        for c in _rows(self.site, "SELECT * FROM coupons ORDER BY id"):
            mid = self._member(c["member_id"])
            if mid is None:
                continue
            site_id = c.pop("id")
            c["member_id"], c["op_key"] = mid, _join_key(c["op_key"])
            if c["source_ref"] is not None and self.conn.execute(
                    "SELECT 1 FROM coupons WHERE member_id = ? AND source = ? AND "
                    "source_ref = ?", (mid, c["source"], c["source_ref"])).fetchone():
                c["source_ref"] = f"join:{self.store}:{c['source_ref']}"
                renamed += 1
            self.coupons[site_id] = _insert(self.conn, "coupons", c)
            n += 1
        return n, renamed

    def _coupon_events(self) -> int:
        n = 0
        for e in _rows(self.site, "SELECT * FROM coupon_events ORDER BY id"):
            cid = self.coupons.get(e["coupon_id"])
            if cid is None:
                continue
            e.pop("id")
            e["coupon_id"], e["op_key"] = cid, _join_key(e["op_key"])
            if e["tap_id"] is not None:
                e["tap_id"] = self.move.ids["taps"].get(e["tap_id"])
            _insert(self.conn, "coupon_events", e)
            n += 1
        return n

    def _contacts(self) -> int:
        n = 0
        for c in _rows(self.site, "SELECT * FROM member_contacts ORDER BY member_id"):
            mid = self._member(c["member_id"])
            if mid is None or self.conn.execute(
                    "SELECT 1 FROM member_contacts WHERE member_id = ?", (mid,)).fetchone():
                continue            # a merged member keeps the chain's contact row
            _insert(self.conn, "member_contacts", {**c, "member_id": mid})
            n += 1
        return n

    def _messages(self) -> tuple[int, int]:
        n = dup = 0
        for m in _rows(self.site, "SELECT * FROM messages ORDER BY id"):
            mid = self._member(m["member_id"])
            if mid is None:
                continue
            m.pop("id")
            m["member_id"] = mid
            if self.conn.execute("SELECT 1 FROM messages WHERE member_id = ? AND dedup = ?",
                                 (mid, m["dedup"])).fetchone():
                m["dedup"] = f"join:{self.store}:{m['dedup']}"
                if m["status"] in ("pending", "sending"):
                    m["status"] = "skipped"
                    m["last_error"] = "joined the chain: the chain had this message already"
                dup += 1
            _insert(self.conn, "messages", m)
            n += 1
        return n, dup

    def _sales(self) -> int:
        n = 0
        for s in _rows(self.site, "SELECT * FROM sales WHERE state <> 'armed' ORDER BY id"):
            if s["device_id"] in self.move.skip_devices:
                continue
            if s["tap_id"] is not None:
                s["tap_id"] = self.move.ids["taps"].get(s["tap_id"])
                if s["tap_id"] is None:
                    continue        # its tap stayed behind with a skipped member
            s.pop("id")
            s["result"] = self._remap_result(s["result"])
            _insert(self.conn, "sales", s)
            n += 1
        return n

    def _remap_result(self, raw: str | None) -> str | None:
        if not raw:
            return raw
        result = json.loads(raw)
        if not isinstance(result, dict) or result.get("member_id") is None:
            return raw
        result["member_id"] = self._member(result["member_id"])
        return json.dumps(result)

    def _per_tap(self, table: str, key: str | None) -> int:
        """Rows keyed by a tap (``tap_points``: the tap id is the key; ``tap_voids``: an id
        of its own) whose tap moved."""
        n = 0
        for r in _rows(self.site, f"SELECT * FROM {table} ORDER BY tap_id"):
            tap = self.move.ids["taps"].get(r["tap_id"])
            if tap is None:
                continue
            if key is None:
                r.pop("id")
            r["tap_id"], r["member_id"] = tap, self._member(r["member_id"])
            _insert(self.conn, table, r)
            n += 1
        return n

    def _fleet(self) -> int:
        moved = {d for (d,) in self.site.execute("SELECT device_id FROM devices")
                 if d not in self.move.skip_devices}
        for s in _rows(self.site, "SELECT * FROM fleet_status ORDER BY device_id"):
            if s["device_id"] in moved:
                _insert(self.conn, "fleet_status", s)
        n = 0
        for u in _rows(self.site, "SELECT * FROM fleet_updates ORDER BY id"):
            if u["device_id"] not in moved:
                continue
            if not self.conn.execute("SELECT 1 FROM fleet_bundles WHERE sha256 = ?",
                                     (u["bundle"],)).fetchone():
                [b] = _rows(self.site, "SELECT * FROM fleet_bundles WHERE sha256 = ?",
                            (u["bundle"],))
                _insert(self.conn, "fleet_bundles", b)
            u.pop("id")
            _insert(self.conn, "fleet_updates", u)
            n += 1
        return n
