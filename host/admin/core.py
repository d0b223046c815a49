# Runs on CPython (host): the shared plumbing of operator writes — input checks, the member row, one idempotent transaction per write.
"""What every operator write shares.

``AdminCore.write`` runs one write in one ``BEGIN IMMEDIATE`` transaction, idempotent by key
(``host.ledger.idempotent``): a repeat with the same key and the same arguments returns the
first result (with ``"replayed": True``) and writes nothing; the same key with other
arguments raises ``Conflict``. Results are JSON-able dicts. The checks here turn bad input
into ``InputError`` before anything reaches SQLite.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlite_utils

from host.errors import Conflict, InputError, NotFound
from host.ledger import book as ledger
from host.ledger import idempotent
from host.rules.policy import Policy, policy_and_clock
from host.store import audit, stores
from host.store.db import retrying, transaction

#: The largest integer SQLite stores (a signed 64-bit INTEGER).
SQLITE_MAX_INT = 2**63 - 1

_BIRTHDAY_RE = re.compile(r"(?:(\d{4})-)?(\d{2})-(\d{2})", re.ASCII)

#: One write's body: (connection in the transaction, unix seconds, aware now) -> result.
WriteFn = Callable[[sqlite3.Connection, int, datetime], dict[str, Any]]


def parse_birthday(text: str) -> str:
    """``"MM-DD"`` or ``"YYYY-MM-DD"`` -> ``"MM-DD"`` (only month and day are kept)."""
    m = _BIRTHDAY_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise InputError(f"bad birthday {text!r}: use MM-DD or YYYY-MM-DD")
    month, day = int(m.group(2)), int(m.group(3))
    try:
        datetime(2000, month, day)  # a leap year: 02-29 is valid
    except ValueError:
        raise InputError(f"bad birthday {text!r}: no such date") from None
    return f"{month:02d}-{day:02d}"


def check_int(value: int, what: str, lo: int = 1) -> int:
    """``value`` if it is an int in ``lo..SQLITE_MAX_INT`` (not a bool), else InputError."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= SQLITE_MAX_INT:
        kind = "a positive integer" if lo == 1 else f"an integer from {lo}"
        raise InputError(f"{what} must be {kind} that fits in 64 bits, got {value!r}")
    return value


def check_name(name: str) -> str:
    """A member name: text of at most 64 characters, no control characters (a newline
    would break every list and export)."""
    if not isinstance(name, str) or len(name) > 64:
        raise InputError("name must be at most 64 characters")
    if not name.isprintable():
        raise InputError("name must not contain control characters (newline, tab, ...)")
    return name


class MemberRow(NamedTuple):
    """The member fields the writes look at."""

    id: int
    name: str
    status: str
    tier: str
    birthday: str | None
    referrer_id: int | None
    referral_paid: int


class AdminCore:
    """One store under one policy and clock, and the plumbing every write uses."""

    def __init__(self, db: sqlite_utils.Database, policy: Policy | None = None,
                 clock: Callable[[], datetime] | None = None, *, actor: str | None = None,
                 client: str | None = None, store: str | None = None) -> None:
        self.db = db
        self.policy, self.clock = policy_and_clock(policy, clock)
        #: Who makes the writes (a staff name, ``cli:<os user>``, ``api:<token>``) and from
        #: where: each write then appends an audit row in its own transaction.
        self.actor, self.client = actor, client
        #: The chain store whose counter takes the cash of these writes (None: the store of
        #: the staff account ``actor``, if any; see :meth:`counter_store`).
        self.store = store

    def counter_store(self, conn: sqlite3.Connection) -> int | None:
        """The store id a payment (top-up, pass sale, refund) of this write belongs to: the
        named ``store`` (NotFound when the chain has none of that name), else the store of
        the staff account making the write, else None (chain-wide only)."""
        name = self.store
        if name is None and self.actor:
            name = stores.staff_store(conn, self.actor)
        return stores.store_id(conn, name)

    def write(self, command: str, args: dict[str, Any], key: str | None,
              fn: WriteFn) -> dict[str, Any]:
        """Run ``fn`` in one transaction, remembered under ``key`` with ``args``; with an
        ``actor``, the audit row (values before and after) is written by the same transaction.
        A replay writes nothing, not even an audit row."""
        idempotent.check_key(key)
        canon = idempotent.canonical(args)
        return retrying(lambda: self._write_once(command, args, key, canon, fn))

    def _write_once(self, command: str, args: dict[str, Any], key: str | None, canon: str,
                    fn: WriteFn) -> dict[str, Any]:
        # One attempt of ``write``; on PostgreSQL ``retrying`` runs it again after a
        # serialization failure (the whole transaction was rolled back).
        with transaction(self.db) as conn:
            first = idempotent.recall(conn, key, command, canon)
            if first is not None:
                return {**first, "replayed": True}
            now = self.clock()
            ts = int(now.timestamp())
            before = audit.snapshot(conn, args) if self.actor else None
            result = fn(conn, ts, now)
            if self.actor:
                audit.record(conn, ts, self.actor, command, before=before, after=result,
                             member_id=audit.member_of(args, result),
                             device_id=audit.device_of(args), client=self.client,
                             op_key=key)
            idempotent.remember(conn, key, command, canon, result, ts)
        return {**result, "replayed": False}

    @staticmethod
    def member(conn: sqlite3.Connection, member_id: int) -> MemberRow:
        """The member ``member_id``; NotFound when there is none."""
        row = conn.execute("SELECT id, name, status, tier, substr('0' || birth_month, -2), "
                           "referrer_id, referral_paid "
                           "FROM members WHERE id = ?", (member_id,)).fetchone()
        if row is None:
            raise NotFound(f"unknown member {member_id}")
        return MemberRow(*row)

    @classmethod
    def active_member(cls, conn: sqlite3.Connection, member_id: int) -> MemberRow:
        """The member ``member_id``; NotFound when there is none, Conflict when suspended."""
        m = cls.member(conn, member_id)
        if m.status != "active":
            raise Conflict(f"member {member_id} is suspended")
        return m

    @staticmethod
    def state(conn: sqlite3.Connection, member_id: int) -> dict[str, Any]:
        """A member's balances as a write returns them."""
        b = ledger.balances(conn, member_id)
        return {"member_id": member_id, "principal_fen": b["principal_fen"],
                "bonus_fen": b["bonus_fen"], "balance_fen": b["principal_fen"] + b["bonus_fen"],
                "points": b["points"]}

    def bonus_expiry(self, now: datetime) -> int:
        """When bonus credited ``now`` expires (0 = never): midnight after the policy's days."""
        days = self.policy.bonus_expiry_days
        if not days:
            return 0
        end = (now + timedelta(days=days + 1)).replace(hour=0, minute=0, second=0,
                                                       microsecond=0)
        return int(end.timestamp())
