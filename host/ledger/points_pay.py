# Runs on CPython (host): points paying part of a sale — the debit from lots and its record per tap.
"""Points paying part of a sale (``host.rules.pay_points`` decides how many).

:func:`take` debits the points from the member's lots (the lot that expires first is used
first: ``host.ledger.book.debit``, one ``pay`` ledger row per lot) and records the tap's
points and the fen they paid in ``tap_points``, in the caller's transaction. A void reverses
the ``pay`` rows like every other row of the tap (``host.rules.voids``): each part goes back
to the lot it came from, with that lot's expiry. :func:`problems` is ``verify``'s check."""

from __future__ import annotations

import sqlite3
from typing import Any

from host.ledger import book as ledger

#: The ledger ``kind`` of points paying for a sale.
KIND = "pay"


def take(conn: sqlite3.Connection, ts: int, member_id: int, points: int, fen: int, *,
         tap_id: int, pending: ledger.Pending | None = None) -> list[ledger.Taken]:
    """Debit ``points`` (> 0) paying ``fen`` of tap ``tap_id``; InsufficientFunds (nothing
    written) when the member has fewer."""
    taken = ledger.debit(conn, ts, member_id, "points", points, KIND, pending=pending,
                         tap_id=tap_id)
    conn.execute("INSERT INTO tap_points (tap_id, ts, member_id, points, fen) VALUES (?,?,?,?,?)",
                 (tap_id, ts, member_id, points, fen))
    return taken


def problems(db: Any) -> list[str]:
    """One line per tap whose ``tap_points`` row and ``pay`` ledger rows disagree."""
    paid = ("SELECT tap_id, -sum(delta) AS pts FROM ledger WHERE currency = 'points' AND "
            "kind = ? AND reverses IS NULL GROUP BY tap_id")
    rows = db.execute(
        f"SELECT p.tap_id, p.points, coalesce(l.pts, 0) FROM tap_points p LEFT JOIN ({paid}) l "
        f"ON l.tap_id = p.tap_id WHERE p.points <> coalesce(l.pts, 0) UNION ALL "
        f"SELECT l.tap_id, 0, l.pts FROM ({paid}) l WHERE l.tap_id NOT IN "
        f"(SELECT tap_id FROM tap_points) ORDER BY 1", (KIND, KIND)).fetchall()
    return [f"tap {tid}: paid {have} points, ledger {want}" for tid, have, want in rows]
