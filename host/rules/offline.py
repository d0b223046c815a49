# Runs on CPython (host): taps a device already granted offline — recorded, never refused or charged.
"""Offline taps (flag offline: a gate opened from its allow-list, the member went through).

They are recorded as ``grant``/``offline``; a time pass or, failing that, a punch-card use
covering the service is applied to an entry; a gate's presence follows the direction. Stored
value is never charged and the tap is never refused after the fact."""

from __future__ import annotations

import sqlite3
from typing import Any

from host.ledger import book as ledger
from host.rules.context import CardRow, Outcome
from host.rules.gate import set_presence
from host.rules.payment import passes
from protocol import codes


def record(conn: sqlite3.Connection, tap: Any, kind: str, card: CardRow | None, ts: int,
           tap_id: int) -> Outcome:
    """The Outcome of an offline tap (see the module doc); writes its pass use and presence."""
    out = Outcome("grant", "offline", "Granted offline", kind=kind,
                  pattern=codes.PAT_OFFLINE_GRANT)
    if card is None:
        return out
    mid = out.member_id = card.member_id
    direction = tap.direction or "in"
    cover = "gate" if kind == "gate" else f"wash:{int(tap.service)}"
    if direction == "in":
        time_passes = passes(conn, mid, cover, ts, "time")
        if time_passes:
            out.pass_id = time_passes[0].id
        else:
            for p in passes(conn, mid, cover, ts, "punch"):
                if p.uses_left:
                    ledger.debit_use(conn, ts, mid, p.id, "use_offline", tap_id=tap_id)
                    out.pass_id, out.uses_left = p.id, p.uses_left - 1
                    break
    if kind == "gate":
        set_presence(conn, mid, 1 if direction == "in" else 0, tap.device_id, ts)
    conn.execute("UPDATE members SET last_active_at = ? WHERE id = ?", (ts, mid))
    return out
