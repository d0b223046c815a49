# Runs on CPython (host): the points catalogue — items with a points price and a stock, 换完即止.
"""What points buy. An item has a points price and either a limited stock (the sum of its
append-only ``catalogue_moves``: restocks in, redemptions out; when it reaches 0 the item is
gone, 换完即止) or none (``--unlimited``). Once the catalogue has any item, ``points redeem
--item`` must name an active one (``take``); with an empty catalogue free-text items are
still accepted (sites that have not set one up)."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from host.admin.core import AdminCore, check_int
from host.errors import Conflict, InputError, InsufficientFunds, NotFound


def _item(conn: sqlite3.Connection, name: str) -> tuple[int, int, int, int] | None:
    """(id, points, limited, active) of the item ``name``."""
    return conn.execute("SELECT id, points, limited, active FROM catalogue_items WHERE name = ?",
                        (name,)).fetchone()


def stock(conn: sqlite3.Connection, item_id: int) -> int:
    """Units of an item left."""
    return conn.execute("SELECT coalesce(sum(delta), 0) FROM catalogue_moves WHERE item_id = ?",
                        (item_id,)).fetchone()[0]


def price_of(conn: sqlite3.Connection, name: str, qty: int) -> int | None:
    """The points ``qty`` of catalogue item ``name`` cost; None when the catalogue is empty
    (free text allowed). Refuses an unknown or withdrawn item, or one out of stock."""
    row = _item(conn, name)
    if row is None:
        if conn.execute("SELECT 1 FROM catalogue_items LIMIT 1").fetchone() is None:
            return None
        raise InputError(f"{name!r} is not in the points catalogue (tapkiosk catalogue list)")
    iid, points, limited, active = row
    if not active:
        raise Conflict(f"{name!r} was withdrawn from the catalogue")
    if limited and stock(conn, iid) < qty:
        raise InsufficientFunds(f"{name!r} is out of stock ({stock(conn, iid)} left)")
    return points * qty


def take(conn: sqlite3.Connection, name: str, qty: int, member_id: int, ledger_id: int,
         ts: int, key: str | None) -> None:
    """Record ``qty`` of catalogue item ``name`` handed to a member (after ``price_of``)."""
    row = _item(conn, name)
    if row is not None and row[2]:
        conn.execute("INSERT INTO catalogue_moves (ts, item_id, delta, member_id, ledger_id, "
                     "note, op_key) VALUES (?,?,?,?,?,?,?)",
                     (ts, row[0], -qty, member_id, ledger_id, "redeemed", key))


def give_back(conn: sqlite3.Connection, ledger_id: int, ts: int, key: str | None) -> None:
    """A reversed redemption (ledger row ``ledger_id``) puts its items back in stock."""
    for iid, delta, mid in conn.execute("SELECT item_id, delta, member_id FROM catalogue_moves "
                                        "WHERE ledger_id = ? AND delta < 0",
                                        (ledger_id,)).fetchall():
        conn.execute("INSERT INTO catalogue_moves (ts, item_id, delta, member_id, ledger_id, "
                     "note, op_key) VALUES (?,?,?,?,?,?,?)",
                     (ts, iid, -delta, mid, ledger_id, "reversed", key))


class CatalogueWrites(AdminCore):
    """Add, restock and withdraw catalogue items."""

    def add_item(self, name: str, points: int, *, stock_units: int | None = None,
                 key: str | None = None) -> dict[str, Any]:
        """A new item at ``points`` each, with ``stock_units`` (None = unlimited)."""
        if not isinstance(name, str) or not 1 <= len(name) <= 64 or not name.isprintable():
            raise InputError("item name must be 1-64 printable characters")
        check_int(points, "points price")
        if stock_units is not None:
            check_int(stock_units, "stock", lo=0)

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            if _item(conn, name) is not None:
                raise Conflict(f"{name!r} is in the catalogue already")
            iid = conn.execute("INSERT INTO catalogue_items (name, points, limited, created_at) "
                               "VALUES (?,?,?,?)", (name, points, int(stock_units is not None),
                                                    ts)).lastrowid
            if stock_units:
                conn.execute("INSERT INTO catalogue_moves (ts, item_id, delta, note, op_key) "
                             "VALUES (?,?,?,?,?)", (ts, iid, stock_units, "stock", key))
            return {"item": name, "points": points,
                    "stock": stock_units if stock_units is not None else -1}
        return self.write("catalogue.add", dict(name=name, points=points, stock=stock_units),
                          key, fn)

    def restock(self, name: str, units: int, *, key: str | None = None) -> dict[str, Any]:
        """Add ``units`` to a limited item's stock."""
        check_int(units, "units")

        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            row = _item(conn, name)
            if row is None:
                raise NotFound(f"no catalogue item {name!r}")
            if not row[2]:
                raise Conflict(f"{name!r} has unlimited stock")
            conn.execute("INSERT INTO catalogue_moves (ts, item_id, delta, note, op_key) "
                         "VALUES (?,?,?,?,?)", (ts, row[0], units, "restock", key))
            return {"item": name, "stock": stock(conn, row[0])}
        return self.write("catalogue.restock", dict(name=name, units=units), key, fn)

    def withdraw_item(self, name: str, *, key: str | None = None) -> dict[str, Any]:
        """Take an item off the catalogue (its history stays)."""
        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            cur = conn.execute("UPDATE catalogue_items SET active = 0 WHERE name = ?", (name,))
            if cur.rowcount != 1:
                raise NotFound(f"no catalogue item {name!r}")
            return {"item": name, "active": False}
        return self.write("catalogue.withdraw", dict(name=name), key, fn)
