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

A failed statement: in SQLite it undoes only itself; in PostgreSQL it aborts the transaction
up to its innermost savepoint. No code carries on after a failed statement without rolling
back: the one place that catches ``IntegrityError`` inside a transaction, a tap's rules in
``Engine._one``, rolls back to the tap's own ``SAVEPOINT tap`` (which undoes the same in
both). So statements run bare, without a savepoint each (one was two more statements per
INSERT/UPDATE/DELETE for the server). What SQLite would forgive cannot be lost silently:
a ``COMMIT`` of a transaction a failed statement left aborted (which PostgreSQL would turn
into a ROLLBACK without an error) rolls back and raises ``sqlite3.OperationalError``.

Held statements (fewer round trips): a BEGIN, and inside a transaction a SAVEPOINT, INSERT,
UPDATE or DELETE, is bound on the client and held; it is sent with the next statement that
needs an answer (a read, RELEASE, ROLLBACK TO, COMMIT, ``executemany``, a script), all in one
simple query. Reading a held statement's result (``rowcount``, ``lastrowid``, rows) sends it
at once. The error of a held statement is raised by the statement it was sent with: the
engine sends a tap's writes with its ``RELEASE tap`` inside the tap's ``try``, so a write
that fails is still a deny ``internal``. ROLLBACK TO after a held statement that failed
still rolls back (when the savepoint came first) and raises that error. A ROLLBACK, or a
connection lost, drops what is held: it is never sent.

Transactions are SERIALIZABLE (``BEGIN IMMEDIATE`` translates to it): two writers of one
member at once cannot both spend the same balance; the loser gets :class:`Retryable` and its
transaction is run again (host/store/db.py ``retrying``). The one exception is a batch of
taps (``begin_taps``, host/store/db.py): READ COMMITTED, the tap's card and member rows
locked when it reads them (host/store/dialect.py ``ROW_LOCKS``). SERIALIZABLE tracks reads by
index page or whole table (a small table is read by a scan): two daemons' taps of different
members read and wrote the same pages and failed each other (measured, bench/chain.py
``retries``); a row lock makes only taps of one member wait for each other.
A connection lost outside a transaction is reopened at the next statement. A ``lazy`` one
(a store's daemon starting while the database is unreachable) is first made by the first
statement that finds the server; its ``on_connect`` hook then runs (the schema check).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlite_utils

from host.store.dialect import CARD_LOCK, TAP_BEGIN, translate

#: Statements that wait, inside a transaction, for the next one that needs an answer.
_LATER = ("INSERT", "UPDATE", "DELETE", "SAVEPOINT")
_CARD_LOCK = translate(CARD_LOCK)[0]

#: libpq settings of every connection the URL does not set itself. A server that vanished
#: without a word (a WAN that drops packets, no RST) is found out within seconds instead of
#: at the TCP timeout (minutes): an idle connection is probed after 5 s, every 2 s, and
#: dead after 3 probes unanswered; data sent and not acknowledged within 10 s breaks it;
#: a connect gives up after 5 s.
LINK_SETTINGS = {"connect_timeout": "5", "keepalives": "1", "keepalives_idle": "5",
                 "keepalives_interval": "2", "keepalives_count": "3",
                 "tcp_user_timeout": "10000"}


def link_settings(url: str) -> dict[str, str]:
    """:data:`LINK_SETTINGS` less those the connection URL sets (the URL wins)."""
    from psycopg.conninfo import conninfo_to_dict
    given = conninfo_to_dict(url)
    return {k: v for k, v in LINK_SETTINGS.items() if k not in given}


class Retryable(sqlite3.OperationalError):
    """A serialization failure or deadlock: the transaction may be run again as a whole."""


#: Unique keys whose violation means another transaction stored the same thing first: the
#: transaction is run again (and then finds it). A tap's (device, seq) read by the engine's
#: replay check before another daemon's COMMIT (READ COMMITTED, see ``begin_taps``): the run
#: again answers it as a replay, as SERIALIZABLE's 40001 did.
RACED_KEYS = {"taps_device_id_seq_key"}


def _mapped(e: Exception) -> sqlite3.Error:
    state = getattr(e, "sqlstate", None) or ""
    diag = getattr(e, "diag", None)
    if state == "23505" and getattr(diag, "constraint_name", None) in RACED_KEYS:
        out: sqlite3.Error = Retryable(str(e))
    elif state in ("40001", "40P01"):
        out = Retryable(str(e))
    elif state.startswith("23"):
        out = sqlite3.IntegrityError(str(e).splitlines()[0] if str(e) else state)
    else:
        out = sqlite3.OperationalError(str(e))
    out.sqlstate = state  # type: ignore[attr-defined]
    return out


def refused_login(e: BaseException) -> bool:
    """Whether a failed connect was refused for its login or database name (a configuration
    error), not because the server could not be reached."""
    text = str(e)
    return "authentication failed" in text or "does not exist" in text


class _Later:
    """The result of a statement sent with the next one that waits for an answer (see the
    module doc), read like a :class:`PgCursor`: reading it sends it now."""

    __slots__ = ("_conn", "_returning", "_sent", "_rows", "_desc", "_rowcount", "_lastrowid")

    def __init__(self, conn: "PgConnection", returning: bool) -> None:
        self._conn, self._returning, self._sent = conn, returning, False
        self._rows: list[tuple] = []
        self._desc: Any = None
        self._rowcount, self._lastrowid = -1, None

    def _take(self, cur: Any) -> None:
        """Keep the result ``cur`` is on (None: the statement failed or was never run)."""
        self._sent = True
        if cur is None:
            return
        self._rowcount, self._desc = cur.rowcount, cur.description
        self._rows = cur.fetchall() if cur.description is not None else []
        if self._returning:
            self._lastrowid = self._rows[0][0] if self._rows else None
            self._rows, self._desc = [], None

    def _wait(self) -> None:
        if not self._sent:
            self._conn.send_later()

    @property
    def rowcount(self) -> int:
        self._wait()
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        self._wait()
        return self._lastrowid

    @property
    def description(self) -> Any:
        self._wait()
        return self._desc

    def fetchone(self) -> tuple | None:
        self._wait()
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[tuple]:
        self._wait()
        rows, self._rows = self._rows, []
        return rows

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.fetchall())

    def close(self) -> None:
        self._rows = []


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

    def __init__(self, url: str, *, readonly: bool = False, lazy: bool = False) -> None:
        self.url = url
        self.readonly = readonly
        self.row_factory = None   # accepted and ignored: rows are tuples, like sqlite3's
        self._lock = threading.RLock()
        self._open = False    # a transaction was begun and not yet committed or rolled back
        self._trace: Any = None
        #: Called once, with no argument, when a ``lazy`` connection is first made.
        self.on_connect: Any = None
        #: Statements not sent yet, client-side bound, with their results to fill in.
        self._later: list[tuple[bytes, _Later]] = []
        self._pg: Any = None
        try:
            self._pg = self._connect()
        except Exception as e:
            if not lazy or refused_login(e):
                raise

    def set_trace_callback(self, fn: Any) -> None:
        """Call ``fn(sql)`` with the SQLite text of every statement run (None: stop), as
        sqlite3's connection does: what a tap runs is counted the same on both backends."""
        self._trace = fn

    def _connect(self) -> Any:
        import psycopg
        pg = psycopg.connect(self.url, autocommit=True, cursor_factory=psycopg.ClientCursor,
                             **link_settings(self.url))
        pg.adapters.register_loader("numeric", _numeric_loader())
        if self.readonly:
            pg.execute("SET default_transaction_read_only = on")
        return pg

    @property
    def connected(self) -> bool:
        """Whether a connection is open now (False: the next statement tries to make one)."""
        return self._pg is not None and not (self._pg.closed or self._pg.broken)

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus as S
        if self._pg is None:
            return bool(self._later)
        return bool(self._later) or self._pg.info.transaction_status in (S.INTRANS, S.INERROR,
                                                                          S.ACTIVE)

    def _ready(self, text: str) -> None:
        """Reopen a lost connection, unless it was lost inside a transaction: then every
        statement but ROLLBACK or a new BEGIN fails (the transaction is gone; the rest of it
        must not autocommit on a new connection)."""
        if self.connected:
            return
        if self._open and not text.startswith("BEGIN"):
            raise sqlite3.OperationalError("connection lost inside a transaction: rolled back")
        self._later.clear()   # the lost transaction's writes: never sent on a new connection
        if self._pg is not None:
            try:
                self._pg.close()
            except Exception:  # noqa: BLE001 - closing a connection that is already gone
                pass
        import psycopg
        try:
            self._pg = self._connect()
        except psycopg.Error as e:
            raise _mapped(e) from e
        hook, self.on_connect = self.on_connect, None
        if hook is not None:
            try:
                hook()
            except BaseException:
                self.on_connect = hook     # checked again at the next statement
                raise

    def execute(self, sql: str, params: Sequence[Any] | dict = ()) -> PgCursor:
        """Run one statement (SQLite text, translated); see the module doc."""
        if self._trace is not None:
            self._trace(sql)
        if sql.lstrip()[:6].upper() == "PRAGMA":
            return PgCursor(None, False)
        text, returning = translate(sql)
        if "%(p" in text and not isinstance(params, dict):
            params = {f"p{n}": v for n, v in enumerate(params, 1)}
        import psycopg
        with self._lock:
            if text.startswith("ROLLBACK") and not self.connected:
                if text == "ROLLBACK":
                    self._open = False
                return PgCursor(None, False)
            self._ready(text)
            if text in ("COMMIT", "ROLLBACK"):
                self._open = False     # over, whether it then succeeds or not
            if text == "ROLLBACK":
                self._later.clear()    # undone anyway: never sent
                if not self.in_transaction:
                    return PgCursor(None, False)    # only its BEGIN was held
            if text == "COMMIT":
                self._refuse_aborted()
            if self._may_wait(text):
                later = _Later(self, returning)
                self._later.append((self._pg.cursor().mogrify(text, params).encode(), later))
                self._open = self._open or text.startswith("BEGIN")
                return later     # type: ignore[return-value]
            if text.startswith("ROLLBACK TO"):
                return PgCursor(self._rollback_to(text), returning)
            try:
                cur = self._send(text, params)
            except psycopg.Error as e:
                raise _mapped(e) from e
            if text.startswith("BEGIN"):
                self._open = True
            return PgCursor(cur, returning)

    def _may_wait(self, text: str) -> bool:
        """Whether ``text`` is sent with the next statement that waits for an answer: a
        BEGIN, or a write or SAVEPOINT inside a transaction (see the module doc)."""
        from psycopg.pq import TransactionStatus as S
        status = self._pg.info.transaction_status
        if text.startswith("BEGIN"):
            return status == S.IDLE and not self._later
        return (text.startswith(_LATER) or text == _CARD_LOCK) and (status == S.INTRANS
                                            or (status == S.IDLE and bool(self._later)))

    def _send(self, text: str | None, params: Sequence[Any] | dict = ()) -> Any:
        """Run the statements waiting and then ``text`` (None: only those), in one round trip;
        the psycopg cursor on ``text``'s result. psycopg errors are raised as they are."""
        if not self._later:
            return self._pg.execute(text, params) if text is not None else None
        later, self._later = self._later, []
        cur = self._pg.cursor()
        parts = [q for q, _ in later]
        if text is not None:
            parts.append(cur.mogrify(text, params).encode())
        try:
            cur.execute(b"; ".join(parts))
        except Exception:
            for _q, result in later:
                result._take(None)
            raise
        for _q, result in later:
            result._take(cur)
            cur.nextset()
        return cur if text is not None else None

    def send_later(self) -> None:
        """Send the statements waiting now (their results are read)."""
        import psycopg
        with self._lock:
            try:
                self._send(None)
            except psycopg.Error as e:
                raise _mapped(e) from e

    def _rollback_to(self, text: str) -> Any:
        """ROLLBACK TO a savepoint, after the statements waiting. When one of them fails, the
        rollback is still done (when the savepoint came before it) and the error raised: the
        caller learns of it, as it would have at the statement (see the module doc)."""
        import psycopg
        try:
            return self._send(text)
        except psycopg.Error as e:
            if not self._pg.broken:
                try:
                    self._pg.execute(text)
                except psycopg.Error:
                    pass     # the savepoint was made after the failed statement
            raise _mapped(e) from e

    def lock_card(self, uid: str) -> None:
        """Lock card ``uid`` and its member until the transaction ends, sent with the next
        statement that waits for an answer (the engine's head read)."""
        self.execute(CARD_LOCK, (uid,))

    def begin_taps(self) -> None:
        """BEGIN a batch of taps: READ COMMITTED with row locks (see the module doc)."""
        self.execute(TAP_BEGIN)

    def _refuse_aborted(self) -> None:
        """Before COMMIT: a transaction a failed statement aborted is rolled back, loudly."""
        from psycopg.pq import TransactionStatus as S
        if self._pg.info.transaction_status == S.INERROR:
            self._pg.execute("ROLLBACK")
            raise sqlite3.OperationalError(
                "COMMIT of a transaction a failed statement aborted: rolled back")

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> PgCursor:
        """``sql`` once per row (a failed row aborts the transaction, see the module doc)."""
        text, _ = translate(sql)
        if text.endswith(" RETURNING id"):
            text = text[:-len(" RETURNING id")]
        import psycopg
        with self._lock:
            self._ready(text)
            try:
                self._send(None)
                cur = self._pg.cursor()
                cur.executemany(text, list(rows))
            except psycopg.Error as e:
                raise _mapped(e) from e
            return PgCursor(cur, False)

    def execute_script(self, text: str) -> None:
        """PostgreSQL text as is (several statements, no parameters): migrations."""
        import psycopg
        with self._lock:
            self._ready(text)
            try:
                self._send(None)
                self._pg.execute(text)
            except psycopg.Error as e:
                raise _mapped(e) from e

    def interrupt(self) -> None:
        """Break the connection now, from any thread and without its lock: a statement
        waiting on a server that no longer answers fails at once as a lost connection
        (host/site/reach.py ``Watchdog``); the next statement connects again."""
        pg = self._pg
        if pg is None or pg.closed:
            return
        try:
            with socket.socket(fileno=os.dup(pg.pgconn.socket)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except Exception:  # noqa: BLE001 - already closed: nothing left to break
            pass

    def commit(self) -> None:
        if self.in_transaction:
            self.execute("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction:
            self.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            self._later.clear()
            if self._pg is not None:
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

    def __init__(self, url: str, *, readonly: bool = False, lazy: bool = False) -> None:
        self.url = url
        self.conn = PgConnection(url, readonly=readonly, lazy=lazy)

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


def reachable(url: str, timeout_s: int = 5) -> bool:
    """Whether the PostgreSQL server at ``url`` accepts a connection now (opened and closed;
    a store's daemon asks it off its writer thread during an outage, host/site/reach.py)."""
    import psycopg
    try:
        psycopg.connect(url, autocommit=True, connect_timeout=timeout_s).close()
    except Exception:  # noqa: BLE001 - any failure means: not yet
        return False
    return True


def open_readonly(url: str, *, lazy: bool = False) -> PgDatabase:
    """A read-only session on the PostgreSQL store at ``url`` (the HTTP API's reads): a write
    through it fails, like SQLite's ``mode=ro``. ``lazy``: connected by its first statement
    that reaches the server (an unreachable server is then that statement's error)."""
    from host.store.db import open_pg
    return open_pg(url, readonly=True, lazy=lazy)
