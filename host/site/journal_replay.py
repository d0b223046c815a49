# Runs on CPython (host): a WAN outage's journal applied to the chain's database once it answers.
"""``replay(journal, engine, bound)`` applies every pending entry of a store's offline
journal (host/site/journal.py) through the engine, in the order the taps were decided,
each with its original device, seq and time (an engine of its own whose clock is the tap's
time) and its journaled reply bytes: the engine's UNIQUE(device, seq) applies each once,
even when a crash interrupted an earlier replay.

- A tap refused offline is stored as the refused tap its reader saw (``record_denied``).
- A gate tap replays as an offline tap (host/rules/offline.record): the member went
  through, so it is recorded with its pass use, never refused after the fact.
- A paid tap the engine now refuses (balance spent elsewhere meanwhile, card blocked) is
  recorded in ``offline_unapplied`` (``tapkiosk report offline``), never dropped.

Raises what the engine raises when the database is still unreachable (the caller, the
store's :class:`host.site.outage.Outage`, tells an outage from a fault).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from host.rules.engine import Engine, Tap
from host.site.journal import Entry, Journal
from host.store.db import retrying
from host.store.outage import record_denied, record_unapplied

#: A context manager bounding the wait of the block it guards on the database.
Bound = Callable[[], contextlib.AbstractContextManager]


def replay(journal: Journal, engine: Engine, bound: Bound) -> int:
    """Apply every pending entry of ``journal`` through ``engine``, each under ``bound()``;
    returns how many (0: none pending, after a ``SELECT 1`` that raises when the database
    still cannot be reached)."""
    entries = journal.pending()
    if not entries:
        with bound():
            engine.db.conn.execute("SELECT 1")
        return 0
    # An engine of its own whose clock is each tap's time: the writer's engine (and its
    # clock, which other threads read) is left alone.
    at: list[datetime] = [engine.clock()]
    replayer = Engine(engine.db, engine.policy, lambda: at[0])
    for e in entries:
        at[0] = datetime.fromtimestamp(e.ts, engine.policy.tz)
        with bound():
            _apply(journal, replayer, e)
    return len(entries)


def write(engine: Engine, fn: Callable[..., None], *args: Any) -> None:
    """``fn(conn, *args)`` in one transaction of the engine's store, again on a PostgreSQL
    serialization failure."""
    def once() -> None:
        with engine.transaction() as conn:
            fn(conn, *args)
    retrying(once)


def _apply(journal: Journal, engine: Engine, e: Entry) -> None:
    if e.verdict != "grant":       # refused offline: stored as the reader saw it
        write(engine, record_denied, e)
        journal.mark(e.id, "denied")
        return
    tap = Tap(e.device_id, e.seq, e.uid, service=e.service, amount_fen=e.amount_fen,
              direction=e.direction, device_time=e.device_time, offline=e.kind == "gate")
    d = engine.decide(tap, lambda _d: e.reply)
    if d.verdict == "grant":
        journal.mark(e.id, "applied")
        return
    write(engine, partial(
        record_unapplied, device_id=e.device_id, seq=e.seq, uid=e.uid,
        member_id=e.member_id, tapped_at=e.ts, granted_fen=e.charged_fen,
        reason=d.reason, text=d.text, recorded_at=int(time.time())))
    journal.mark(e.id, "unapplied", d.reason)
