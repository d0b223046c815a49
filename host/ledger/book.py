# Runs on CPython (host): append-only ledger primitives, lots, projections and verify().
"""Ledger primitives.

Every function here runs inside a transaction the caller opened (``BEGIN IMMEDIATE``); none
commits. Each movement of value is one ledger row, and the projection it affects (the
member's balance columns, a lot's ``remaining``, a pass's ``uses_left``) is updated by the
same call, so ``verify()`` can recompute every projection from the ledger.

Currencies: ``principal`` (fen, one pool per member, never expires, refundable), ``bonus``
(fen, lots, optional expiry, never refunded), ``points`` (lots, expire by month bucket),
``qualifying`` (count of tier-qualifying purchases), ``uses`` (punch-card uses, per pass).

Lot consumption order (bonus and points): the lot that expires first is used first; lots
that never expire are used last; ties by creation (oldest first).
"""

from __future__ import annotations

import sqlite3
from typing import Any, NamedTuple

import sqlite_utils

from host.errors import Conflict, InputError, InsufficientFunds, NotFound

CURRENCIES = ("principal", "bonus", "points", "qualifying", "uses")
LOT_CURRENCIES = ("bonus", "points")
_COLUMN = {"principal": "principal_fen", "bonus": "bonus_fen", "points": "points",
           "qualifying": "qualifying"}


class Taken(NamedTuple):
    """A part of a debit taken from one lot (lot_id None for pool currencies); a tuple,
    cheaper to make than a frozen dataclass on the tap path."""

    lot_id: int | None
    amount: int
    expires_at: int


_INSERT_COLS = ("INSERT INTO ledger (ts, member_id, currency, delta, kind, lot_id, pass_id, "
                "tap_id, op_key, reverses, note) VALUES ")
_VALUES = "(?,?,?,?,?,?,?,?,?,?,?)"
_INSERT_SQL = _INSERT_COLS + _VALUES
_INSERT_MANY: dict[int, str] = {}


def _insert_many_sql(n: int) -> str:
    """The INSERT of ``n`` ledger rows (built once per ``n``)."""
    sql = _INSERT_MANY.get(n)
    if sql is None:
        sql = _INSERT_MANY[n] = _INSERT_COLS + ",".join([_VALUES] * n)
    return sql


def _insert(conn: sqlite3.Connection, ts: int, member_id: int, currency: str, delta: int,
            kind: str, *, lot_id: int | None = None, pass_id: int | None = None,
            tap_id: int | None = None, op_key: str | None = None, reverses: int | None = None,
            note: str | None = None) -> sqlite3.Cursor:
    """Write one ledger row; its id is the cursor's ``lastrowid``. Not reading it lets
    PostgreSQL send the row with the next statement (host/store/pg.py)."""
    return conn.execute(_INSERT_SQL, (ts, member_id, currency, delta, kind, lot_id, pass_id,
                                      tap_id, op_key, reverses, note))


def _hold(pending: Pending, ts: int, member_id: int, currency: str, delta: int, kind: str, *,
          lot_id: int | None = None, pass_id: int | None = None, tap_id: int | None = None,
          op_key: str | None = None, reverses: int | None = None,
          note: str | None = None) -> None:
    """Hold one ledger row (``_insert``'s arguments) in ``pending`` until its flush."""
    pending.rows.append((ts, member_id, currency, delta, kind, lot_id, pass_id, tap_id, op_key,
                         reverses, note))


def _row(conn: sqlite3.Connection, *args: Any, **refs: Any) -> int:
    """Write one ledger row (``_insert``'s arguments); its id."""
    return _insert(conn, *args, **refs).lastrowid


class Pending:
    """Projection changes and ledger rows of one member held back until ``flush()``: the
    engine's tap path uses it to turn several ``UPDATE members`` into one, and the tap's
    ledger rows into one multi-row INSERT (ids in the order the rows were made). Balance
    checks use the known balances plus the pending deltas, so they are as strict as the
    direct path. A read of the ledger inside the transaction calls ``write_rows`` first."""

    def __init__(self, member_id: int, principal_fen: int, bonus_fen: int, points: int,
                 qualifying: int) -> None:
        self.member_id = member_id
        #: Current values, pending changes included (what the checks compare with).
        self.now = {"principal": principal_fen, "bonus": bonus_fen, "points": points,
                    "qualifying": qualifying}
        #: The changes not written yet.
        self.delta = {"principal": 0, "bonus": 0, "points": 0, "qualifying": 0}
        #: Ledger rows not written yet (``_insert``'s column values).
        self.rows: list[tuple] = []
        #: Lot ids known to exist, by (currency, expires_at): a credit to one is an UPDATE
        #: by id instead of the upsert (lots are never deleted nor re-keyed).
        self.lots: dict[tuple[str, int], int] = {}
        #: The lot a debit of a currency takes from first, as (id, remaining, expires_at),
        #: when known (the engine's head read): a debit it covers reads no lots. Forgotten
        #: on any other change to that currency's lots.
        self.first: dict[str, tuple[int, int, int]] = {}

    def have(self, currency: str) -> int:
        """Current value of ``currency`` including pending changes."""
        return self.now[currency]

    def add(self, currency: str, amount: int) -> None:
        """Hold a change of ``amount`` to ``currency``'s projection."""
        self.delta[currency] += amount
        self.now[currency] += amount

    def write_rows(self, conn: sqlite3.Connection) -> None:
        """Write the held ledger rows in one INSERT (nothing when there are none)."""
        rows = self.rows
        if not rows:
            return
        self.rows = []
        if len(rows) == 1:
            conn.execute(_INSERT_SQL, rows[0])
        else:
            conn.execute(_insert_many_sql(len(rows)), [v for r in rows for v in r])

    def flush(self, conn: sqlite3.Connection, last_active_at: int | None = None) -> None:
        """Write the held ledger rows, then the pending changes (and ``last_active_at``) in
        one UPDATE."""
        if self.rows:
            self.write_rows(conn)
        # Bound values, not literals: a handful of statement shapes that sqlite3's statement
        # cache compiles once, instead of a new statement text (and a compile) per tap.
        delta = self.delta
        changed = []
        args = []
        for c, d in delta.items():
            if d:
                changed.append(c)
                args.append(d)
                delta[c] = 0
        if last_active_at is not None:
            args.append(last_active_at)
        if args:
            args.append(self.member_id)
            conn.execute(_flush_sql(tuple(changed), last_active_at is not None), args)


_FLUSH_SQL: dict[tuple[tuple[str, ...], bool], str] = {}


def _flush_sql(changed: tuple[str, ...], active: bool) -> str:
    """The ``UPDATE members`` of ``Pending.flush`` for these changed currencies (built once
    per shape)."""
    sql = _FLUSH_SQL.get((changed, active))
    if sql is None:
        sets = [f"{_COLUMN[c]} = {_COLUMN[c]} + ?" for c in changed]
        if active:
            sets.append("last_active_at = ?")
        sql = _FLUSH_SQL[(changed, active)] = f"UPDATE members SET {', '.join(sets)} WHERE id = ?"
    return sql


def _apply(conn: sqlite3.Connection, member_id: int, currency: str, amount: int,
           pending: Pending | None) -> None:
    if pending is not None and pending.member_id == member_id:
        pending.add(currency, amount)
        return
    col = _COLUMN[currency]
    cur = conn.execute(f"UPDATE members SET {col} = {col} + ? WHERE id = ?", (amount, member_id))
    if cur.rowcount != 1:
        raise NotFound(f"unknown member {member_id}")


def balances(conn: sqlite3.Connection, member_id: int) -> dict[str, int]:
    """The member's projections: principal_fen, bonus_fen, points, qualifying. NotFound."""
    row = conn.execute("SELECT principal_fen, bonus_fen, points, qualifying FROM members "
                       "WHERE id = ?", (member_id,)).fetchone()
    if row is None:
        raise NotFound(f"unknown member {member_id}")
    return dict(zip(("principal_fen", "bonus_fen", "points", "qualifying"), row))


def credit(conn: sqlite3.Connection, ts: int, member_id: int, currency: str, amount: int,
           kind: str, *, expires_at: int = 0, pending: Pending | None = None, **refs: Any) -> int:
    """Credit ``amount`` (> 0) of ``currency``; bonus and points go into the lot keyed by
    (member, currency, expires_at). Returns the ledger row id. With ``pending`` (same
    member), the member's projection change and the ledger row are held in it until
    ``pending.flush()`` (the row has no id yet: returns 0)."""
    if amount <= 0:
        raise InputError(f"credit of {currency} must be positive, got {amount}")
    if currency == "uses":
        raise InputError("use credit_uses() for pass uses")
    lot_id = None
    if currency in LOT_CURRENCIES:
        if pending is not None:
            pending.first.pop(currency, None)   # the new credit's lot may come first
        lot_id = _credit_lot(conn, member_id, currency, expires_at, amount, pending)
    elif expires_at:
        raise InputError(f"{currency} credits cannot expire")
    if pending is not None and pending.member_id == member_id:
        pending.add(currency, amount)
        _hold(pending, ts, member_id, currency, amount, kind, lot_id=lot_id, **refs)
        return 0
    _apply(conn, member_id, currency, amount, None)
    return _row(conn, ts, member_id, currency, amount, kind, lot_id=lot_id, **refs)


def _credit_lot(conn: sqlite3.Connection, member_id: int, currency: str, expires_at: int,
                amount: int, pending: Pending | None) -> int:
    """Add ``amount`` to the member's lot of (currency, expires_at), made when missing; its
    id. A lot ``pending`` knows is updated by id (cheaper than the upsert)."""
    known = pending is not None and pending.member_id == member_id
    lot_id = pending.lots.get((currency, expires_at)) if known else None
    if lot_id is not None:
        conn.execute("UPDATE lots SET amount = amount + ?, remaining = remaining + ? "
                     "WHERE id = ?", (amount, amount, lot_id))
        return lot_id
    lot_id = conn.execute(
        "INSERT INTO lots (member_id, currency, expires_at, amount, remaining) "
        "VALUES (?,?,?,?,?) ON CONFLICT (member_id, currency, expires_at) DO UPDATE SET "
        "amount = amount + excluded.amount, remaining = remaining + excluded.remaining "
        "RETURNING id", (member_id, currency, expires_at, amount, amount)).fetchone()[0]
    if known:
        pending.lots[(currency, expires_at)] = lot_id
    return lot_id


def debit(conn: sqlite3.Connection, ts: int, member_id: int, currency: str, amount: int,
          kind: str, *, pending: Pending | None = None, **refs: Any) -> list[Taken]:
    """Debit ``amount`` (> 0) of ``currency``, consuming lots in the documented order.

    Raises InsufficientFunds (writing nothing) if the projection is smaller than ``amount``.
    Returns the parts taken, one per lot (one part for pool currencies).
    """
    if amount <= 0:
        raise InputError(f"debit of {currency} must be positive, got {amount}")
    known = pending is not None and pending.member_id == member_id
    if known:
        have = pending.now[currency]
    else:
        row = conn.execute(f"SELECT {_COLUMN[currency]} FROM members WHERE id = ?",
                           (member_id,)).fetchone()
        if row is None:
            raise NotFound(f"unknown member {member_id}")
        have = row[0]
    if have < amount:
        raise InsufficientFunds(f"member {member_id} has {have} {currency}, needs {amount}")
    if currency not in LOT_CURRENCIES:
        if known:
            pending.add(currency, -amount)
            _hold(pending, ts, member_id, currency, -amount, kind, **refs)
        else:
            _apply(conn, member_id, currency, -amount, None)
            _insert(conn, ts, member_id, currency, -amount, kind, **refs)
        return [Taken(None, amount, 0)]
    first = pending.first.pop(currency, None) if known else None
    if first is not None and first[1] >= amount:
        lots = [first]
    else:
        lots = conn.execute(
            "SELECT id, remaining, expires_at FROM lots WHERE member_id = ? AND currency = ? "
            "AND remaining > 0 ORDER BY expires_at = 0, expires_at, id",
            (member_id, currency)).fetchall()
    short = amount - sum(r[1] for r in lots)
    if short > 0:
        # Projection and lots disagree: refuse, writing nothing, rather than go negative
        # (verify will say why).
        raise InsufficientFunds(f"member {member_id} {currency} lots short by {short}")
    _apply(conn, member_id, currency, -amount, pending)
    taken: list[Taken] = []
    left = amount
    for lot_id, remaining, expires_at in lots:
        part = min(left, remaining)
        conn.execute("UPDATE lots SET remaining = remaining - ? WHERE id = ?", (part, lot_id))
        if known:
            _hold(pending, ts, member_id, currency, -part, kind, lot_id=lot_id, **refs)
            if first is not None and part < remaining:   # still the first lot
                pending.first[currency] = (lot_id, remaining - part, expires_at)
        else:
            _insert(conn, ts, member_id, currency, -part, kind, lot_id=lot_id, **refs)
        taken.append(Taken(lot_id, part, expires_at))
        left -= part
        if left == 0:
            break
    return taken


def split_spend(principal: int, bonus: int, amount: int, order: str) -> tuple[int, int]:
    """Split a stored-value spend of ``amount`` fen into (principal part, bonus part).

    ``prorated``: in proportion to the current principal and bonus (principal part rounded
    down, so rounding favours the member's refundable principal);
    ``bonus_first`` / ``principal_first``: exhaust one, then the other.
    Raises InsufficientFunds if principal + bonus < amount.
    """
    total = principal + bonus
    if amount > total:
        raise InsufficientFunds(f"balance {total} fen, needs {amount}")
    if order == "bonus_first":
        b = min(bonus, amount)
        return amount - b, b
    if order == "principal_first":
        p = min(principal, amount)
        return p, amount - p
    if total == 0:
        return 0, 0
    p = amount * principal // total
    b = amount - p
    if b > bonus:  # only possible through rounding at the edges
        b = bonus
        p = amount - b
    return p, b


def spend(conn: sqlite3.Connection, ts: int, member_id: int, amount: int, order: str,
          kind: str, *, pending: Pending | None = None, **refs: Any) -> tuple[int, int]:
    """Spend ``amount`` fen of stored value (principal + bonus) in ``order``.

    Returns (principal part, bonus part). Raises InsufficientFunds writing nothing.
    """
    if pending is not None and pending.member_id == member_id:
        principal, bonus = pending.now["principal"], pending.now["bonus"]
    else:
        bal = balances(conn, member_id)
        principal, bonus = bal["principal_fen"], bal["bonus_fen"]
    p, b = split_spend(principal, bonus, amount, order)
    # Bonus first: it is the part that can still be refused (lots short of the projection),
    # and then nothing has been written; the principal part cannot fail after the check.
    if b:
        debit(conn, ts, member_id, "bonus", b, kind, pending=pending, **refs)
    if p:
        debit(conn, ts, member_id, "principal", p, kind, pending=pending, **refs)
    return p, b


def credit_uses(conn: sqlite3.Connection, ts: int, member_id: int, pass_id: int, uses: int,
                kind: str, **refs: Any) -> int:
    """Credit ``uses`` punch-card uses to ``pass_id``; returns the ledger row id."""
    conn.execute("UPDATE passes SET uses_left = uses_left + ? WHERE id = ?", (uses, pass_id))
    return _row(conn, ts, member_id, "uses", uses, kind, pass_id=pass_id, **refs)


def debit_use(conn: sqlite3.Connection, ts: int, member_id: int, pass_id: int, kind: str,
              uses: int = 1, **refs: Any) -> int:
    """Take ``uses`` from a punch card. Raises InsufficientFunds if it has fewer left."""
    cur = conn.execute("UPDATE passes SET uses_left = uses_left - ? WHERE id = ? "
                       "AND uses_left >= ?", (uses, pass_id, uses))
    if cur.rowcount != 1:
        raise InsufficientFunds(f"pass {pass_id} has fewer than {uses} uses left")
    return _row(conn, ts, member_id, "uses", -uses, kind, pass_id=pass_id, **refs)


def sweep_expired(conn: sqlite3.Connection, ts: int, member_id: int | None = None, *,
                  pending: Pending | None = None) -> int:
    """Write off what is left in lots that expired at or before ``ts`` (one member, or all).

    Each write-off is an ``expire`` ledger row against its lot. Returns rows written.
    """
    sql = ("SELECT id, member_id, currency, remaining FROM lots WHERE expires_at > 0 AND "
           "expires_at <= ? AND remaining > 0")
    args: tuple = (ts,)
    if member_id is not None:
        sql += " AND member_id = ?"
        args = (ts, member_id)
    n = 0
    if pending is not None:
        pending.first.clear()
    for lot_id, mid, currency, remaining in conn.execute(sql, args).fetchall():
        conn.execute("UPDATE lots SET remaining = 0 WHERE id = ?", (lot_id,))
        _apply(conn, mid, currency, -remaining, pending)
        _insert(conn, ts, mid, currency, -remaining, "expire", lot_id=lot_id)
        n += 1
    return n


def reverse(conn: sqlite3.Connection, ts: int, entry_id: int, *, op_key: str | None = None,
            note: str | None = None) -> int:
    """Correct ledger row ``entry_id`` with a reversing row (same currency, lot and pass,
    opposite delta, ``reverses`` = the original). Refuses (Conflict) to reverse a reversal
    or a row reversed already, and (InsufficientFunds) a credit that was already spent.
    Returns the new row's id."""
    row = conn.execute("SELECT member_id, currency, delta, lot_id, pass_id, kind, reverses "
                       "FROM ledger WHERE id = ?", (entry_id,)).fetchone()
    if row is None:
        raise NotFound(f"unknown ledger entry {entry_id}")
    mid, currency, delta, lot_id, pass_id, kind, reverses_id = row
    if reverses_id is not None:
        raise Conflict(f"ledger entry {entry_id} is itself a reversal")
    done = conn.execute("SELECT id FROM ledger WHERE reverses = ?", (entry_id,)).fetchone()
    if done is not None:
        raise Conflict(f"ledger entry {entry_id} was already reversed by entry {done[0]}")
    back = -delta
    if currency == "uses":
        cur = conn.execute("UPDATE passes SET uses_left = uses_left + ? WHERE id = ? AND "
                           "uses_left + ? >= 0", (back, pass_id, back))
        if cur.rowcount != 1:
            raise InsufficientFunds(f"pass {pass_id} has already used what entry {entry_id} gave")
    else:
        if lot_id is not None:
            cur = conn.execute("UPDATE lots SET remaining = remaining + ?, amount = "
                               "max(amount, remaining + ?) WHERE id = ? AND remaining + ? >= 0",
                               (back, back, lot_id, back))
            if cur.rowcount != 1:
                raise InsufficientFunds(f"lot {lot_id} has already spent what entry {entry_id} gave")
        col = _COLUMN[currency]
        cur = conn.execute(f"UPDATE members SET {col} = {col} + ? WHERE id = ? AND {col} + ? >= 0",
                           (back, mid, back))
        if cur.rowcount != 1:
            raise InsufficientFunds(f"member {mid} has already spent what entry {entry_id} gave")
    return _row(conn, ts, mid, currency, back, "reversal", lot_id=lot_id, pass_id=pass_id,
                op_key=op_key, reverses=entry_id, note=note or f"reverses {kind}")


def verify(db: sqlite_utils.Database) -> list[str]:
    """Recompute every projection from the ledger; return one line per difference.

    Checks: each member's principal, bonus, points and qualifying; each lot's remaining
    (and that bonus/points equal the sum of their lots); each punch card's uses_left; that
    no projection is negative; that each tap's ``charged_fen`` is what its ledger rows took
    and its points paid (``tap_points``) what its ``pay`` rows took.
    An empty list means the store is consistent.
    """
    problems: list[str] = []
    sums: dict[tuple[int, str], int] = {}
    for mid, cur, total in db.execute(
            "SELECT member_id, currency, sum(delta) FROM ledger WHERE currency <> 'uses' "
            "GROUP BY member_id, currency"):
        sums[(mid, cur)] = total
    for row in db.execute("SELECT id, principal_fen, bonus_fen, points, qualifying FROM members"):
        mid = row[0]
        for currency, have in zip(("principal", "bonus", "points", "qualifying"), row[1:]):
            want = sums.get((mid, currency), 0)
            if have != want:
                problems.append(f"member {mid} {currency}: projection {have}, ledger {want}")
            if have < 0:
                problems.append(f"member {mid} {currency} is negative: {have}")
    lot_sums = dict(db.execute("SELECT lot_id, sum(delta) FROM ledger WHERE lot_id IS NOT NULL "
                               "GROUP BY lot_id").fetchall())
    per_member: dict[tuple[int, str], int] = {}
    for lot_id, mid, currency, remaining in db.execute(
            "SELECT id, member_id, currency, remaining FROM lots"):
        want = lot_sums.get(lot_id, 0)
        if remaining != want:
            problems.append(f"lot {lot_id} (member {mid} {currency}): remaining {remaining}, "
                            f"ledger {want}")
        per_member[(mid, currency)] = per_member.get((mid, currency), 0) + remaining
    for (mid, currency), total in per_member.items():
        want = sums.get((mid, currency), 0)
        if total != want:
            problems.append(f"member {mid} {currency}: lots hold {total}, ledger {want}")
    use_sums = dict(db.execute("SELECT pass_id, sum(delta) FROM ledger WHERE currency = 'uses' "
                               "GROUP BY pass_id").fetchall())
    for pid, kind, left in db.execute("SELECT id, kind, uses_left FROM passes"):
        want = use_sums.get(pid, 0)
        if kind == "punch" and left != want:
            problems.append(f"pass {pid}: uses_left {left}, ledger {want}")
        if kind != "punch" and want:
            problems.append(f"pass {pid} ({kind}) has use rows in the ledger")
    problems += _verify_tap_charges(db)
    from host.ledger import points_pay   # it builds on this module's debit
    problems += points_pay.problems(db)
    return problems


def _verify_tap_charges(db: sqlite_utils.Database) -> list[str]:
    """One line per tap whose ``taps.charged_fen`` differs from the stored value (principal
    and bonus) its own ledger rows took, and per such ledger rows naming no stored tap."""
    charged = ("SELECT tap_id, -sum(delta) AS fen FROM ledger WHERE tap_id IS NOT NULL AND "
               "currency IN ('principal', 'bonus') AND reverses IS NULL GROUP BY tap_id")
    rows = db.execute(
        f"SELECT t.id, t.device_id, t.seq, t.charged_fen, coalesce(l.fen, 0) FROM taps t "
        f"LEFT JOIN ({charged}) l ON l.tap_id = t.id WHERE t.charged_fen <> coalesce(l.fen, 0) "
        f"UNION ALL SELECT l.tap_id, NULL, NULL, 0, l.fen FROM ({charged}) l "
        f"WHERE l.tap_id NOT IN (SELECT id FROM taps) ORDER BY 1").fetchall()
    return [f"tap {tid} ({'missing' if dev is None else f'{dev}/{seq}'}): charged_fen {have}, "
            f"ledger {want}" for tid, dev, seq, have, want in rows]
