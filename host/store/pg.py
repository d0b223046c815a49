# Runs on CPython (host): the PostgreSQL backend of the store (psycopg 3), shaped like sqlite3.
"""PostgreSQL behind the same store interface.

``open_db("postgresql://...")`` returns a :class:`PgDatabase`: the subset of
``sqlite_utils.Database`` the code uses (``conn``, ``execute``, ``query``, ``table(name).get``,
``[name].exists()``, ``table_names``) over a :class:`PgConnection` shaped like the sqlite3
connection the store opens (autocommit; ``execute`` returns a cursor with ``fetchone``,
``fetchall``, iteration, ``rowcount`` and ``lastrowid``; ``executemany``;
``in_transaction``; ``close``). Each statement is translated once (host/store/dialect.py).

Errors: psycopg errors are raised as the sqlite3 exception of the same meaning (a constraint
violation, SQLSTATE class 23, as ``sqlite3.IntegrityError``; the rest as
``sqlite3.OperationalError``), with the psycopg error as ``__cause__``, so one ``except``
works on both backends; a serialization failure or deadlock (40001, 40P01) is
:class:`Retryable`, which the transactions that can be retried as a whole retry.

Statement-level atomicity: in SQLite a failed statement inside a transaction undoes only
itself; in PostgreSQL it aborts the whole transaction. So inside a transaction every
INSERT/UPDATE/DELETE runs under its own savepoint, sent in the same round trip
(``SAVEPOINT _s; stmt; RELEASE _s``) and rolled back to on error: code that catches an
``IntegrityError`` and carries on behaves the same on both.

Transactions are SERIALIZABLE (``BEGIN IMMEDIATE`` translates to it): two daemons deciding
taps of one member at once cannot both spend the same balance; the loser gets
:class:`Retryable` and its transaction is run again (host/store/db.py ``retrying``).
A connection lost outside a transaction is reopened at the next statement.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlite_utils

from host.store.dialect import translate

_DML = ("INSERT", "UPDATE", "DELETE")


class Retryable(sqlite3.OperationalError):
    """A serialization failure or deadlock: the transaction may be run again as a whole."""


def _mapped(e: Exception) -> sqlite3.Error:
    state = getattr(e, "sqlstate", None) or ""
    if state in ("40001", "40P01"):
        out: sqlite3.Error = Retryable(str(e))
    elif state.startswith("23"):
        out = sqlite3.IntegrityError(str(e).splitlines()[0] if str(e) else state)
    else:
        out = sqlite3.OperationalError(str(e))
    out.sqlstate = state  # type: ignore[attr-defined]
    return out


class PgCursor:
    """The result of one statement, read like a sqlite3 cursor (rows are tuples)."""

    __slots__ = ("_cur", "rowcount", "lastrowid")

    def __init__(self, cur: Any, returning: bool) -> None:
        self._cur = cur
        self.rowcount = cur.rowcount if cur is not None else -1
        self.lastrowid = None
        if returning:
            row = cur.fetchone()
            self.lastrowid = row[0] if row else None
            self._cur = None

    @property
    def description(self) -> Any:
        return self._cur.description if self._cur is not None else None

    def fetchone(self) -> tuple | None:
        if self._cur is None or self._cur.description is None:
            return None
        return self._cur.fetchone()

    def fetchall(self) -> list[tuple]:
        if self._cur is None or self._cur.description is None:
            return []
        return self._cur.fetchall()

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.fetchall())

    def close(self) -> None:
        if self._cur is not None:
            self._cur.close()


def _numeric_loader() -> type:
    from psycopg.adapt import Loader

    class IntNumeric(Loader):
        """sum() of BIGINT is NUMERIC in PostgreSQL: load integral values as int, like SQLite."""

        def load(self, data: Any) -> int | float:
            s = bytes(data).decode()
            return float(s) if ("." in s or "e" in s or "N" in s) else int(s)

    return IntNumeric


class PgConnection:
    """A psycopg connection in autocommit mode, used like the store's sqlite3 connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.row_factory = None   # accepted and ignored: rows are tuples, like sqlite3's
        self._lock = threading.RLock()
        self._pg = self._connect()

    def _connect(self) -> Any:
        import psycopg
        pg = psycopg.connect(self.url, autocommit=True, cursor_factory=psycopg.ClientCursor,
                             connect_timeout=10)
        pg.adapters.register_loader("numeric", _numeric_loader())
        return pg

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus as S
        return self._pg.info.transaction_status in (S.INTRANS, S.INERROR, S.ACTIVE)

    def _ready(self, text: str) -> None:
        """Reopen a lost connection, unless it was lost inside a transaction (then the
        statement fails; the caller's ROLLBACK or next BEGIN gets the new connection)."""
        if not (self._pg.closed or self._pg.broken):
            return
        if text.startswith(("COMMIT", "RELEASE", "SAVEPOINT")):
            return
        try:
            self._pg.close()
        except Exception:  # noqa: BLE001 - closing a connection that is already gone
            pass
        import psycopg
        try:
            self._pg = self._connect()
        except psycopg.Error as e:
            raise _mapped(e) from e

    def execute(self, sql: str, params: Sequence[Any] | dict = ()) -> PgCursor:
        """Run one statement (SQLite text, translated); see the module doc."""
        if sql.lstrip()[:6].upper() == "PRAGMA":
            return PgCursor(None, False)
        text, returning = translate(sql)
        import psycopg
        with self._lock:
            if text.startswith("ROLLBACK") and (self._pg.closed or self._pg.broken):
                return PgCursor(None, False)
            self._ready(text)
            wrap = text.lstrip()[:6].upper() in _DML and self.in_transaction
            try:
                if wrap:
                    cur = self._pg.execute(f"SAVEPOINT _s; {text}; RELEASE _s", params)
                    cur.nextset()
                else:
                    cur = self._pg.execute(text, params)
            except psycopg.Error as e:
                if wrap and not self._pg.broken:
                    self._pg.execute("ROLLBACK TO _s; RELEASE _s")
                raise _mapped(e) from e
            return PgCursor(cur, returning)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> PgCursor:
        """``sql`` once per row, in one savepoint when inside a transaction."""
        text, _ = translate(sql)
        if text.endswith(" RETURNING id"):
            text = text[:-len(" RETURNING id")]
        import psycopg
        with self._lock:
            self._ready(text)
            wrap = self.in_transaction
            try:
                if wrap:
                    self._pg.execute("SAVEPOINT _m")
                cur = self._pg.cursor()
                cur.executemany(text, list(rows))
                if wrap:
                    self._pg.execute("RELEASE _m")
            except psycopg.Error as e:
                if wrap and not self._pg.broken:
                    self._pg.execute("ROLLBACK TO _m; RELEASE _m")
                raise _mapped(e) from e
            return PgCursor(cur, False)

    def execute_script(self, text: str) -> None:
        """PostgreSQL text as is (several statements, no parameters): migrations."""
        import psycopg
        with self._lock:
            self._ready(text)
            try:
                self._pg.execute(text)
            except psycopg.Error as e:
                raise _mapped(e) from e

    def commit(self) -> None:
        if self.in_transaction:
            self.execute("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction:
            self.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            self._pg.close()


class _Table:
    def __init__(self, db: "PgDatabase", name: str) -> None:
        self.db, self.name = db, name

    def exists(self) -> bool:
        return self.db.execute("SELECT to_regclass(?) IS NOT NULL", (self.name,)).fetchone()[0]

    def get(self, pk: Any) -> dict[str, Any]:
        from host.store.dialect import PRIMARY_KEYS
        col = PRIMARY_KEYS.get(self.name, ("id",))[0]
        rows = list(self.db.query(f"SELECT * FROM {self.name} WHERE {col} = ?", (pk,)))
        if not rows:
            raise sqlite_utils.db.NotFoundError
        return rows[0]


class PgDatabase:
    """What the code uses of ``sqlite_utils.Database``, on PostgreSQL."""

    backend = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = PgConnection(url)

    def execute(self, sql: str, params: Sequence[Any] | dict = ()) -> PgCursor:
        return self.conn.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] | dict = ()) -> Iterator[dict[str, Any]]:
        cur = self.conn.execute(sql, params)
        names = [d.name for d in cur.description or ()]
        for row in cur.fetchall():
            yield dict(zip(names, row))

    def table(self, name: str) -> _Table:
        return _Table(self, name)

    __getitem__ = table

    def table_names(self) -> list[str]:
        return [r[0] for r in self.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            "current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name")]

    def close(self) -> None:
        self.conn.close()
