# Runs on CPython (host): a store daemon through a WAN outage — decide from the journal, replay when the database is back.
"""Keeps a store serving while the chain's database is unreachable (issue 17).

The writer hands every batch of taps to :meth:`Outage.decide_many` instead of straight to
the engine. Online, the engine decides them as always, and the local snapshot
(``host.site.journal``) is refreshed every ``snapshot_every_s``. When the engine raises
``StoreUnavailable`` or a connection-level backend error (``is_unavailable``; nothing was
written), the store goes offline: each tap is decided by
``host.rules.offline.decide_outage`` from the snapshot under the policy's ``[offline]``
allowance, journaled durably with its reply bytes, and only then answered. A repeated
(device, seq) gets the journaled reply.

Every ``retry_s`` while offline, the next batch first replays the journal through the
engine, in the order the taps were decided, each with its original device, seq and time
(the engine's clock is set to the tap's time) and its journaled reply bytes: the engine's
UNIQUE(device, seq) applies each once, even when a crash interrupted an earlier replay. A
tap the engine then refuses (balance spent elsewhere meanwhile, card blocked) is recorded
in ``offline_unapplied`` (``tapkiosk report offline``), never dropped. Once the journal is
empty the store is online again and the batch is decided by the engine. Taps refused
offline are journaled as ``denied`` and not replayed (the member got nothing). Gate taps
replay as offline taps (``host.rules.offline.record``, as from a reader's allow-list): the
member went through, so they are recorded and use their pass, never refused afterwards.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from host.rules.engine import Decision, EncodeReply, Engine, Tap, clip_text
from host.ledger.periods import day_start
from host.rules.offline import Local, decide_outage
from host.site.journal import Entry, Journal
from host.store.outage import is_unavailable, record_unapplied
from protocol import codes

log = logging.getLogger("tapkiosk.outage")

#: Environment variable naming the local journal file of a store's daemon.
JOURNAL_ENV = "TAPKIOSK_OFFLINE_JOURNAL"

#: Seconds between attempts to reach the chain's database while offline.
RETRY_S = 2.0
#: Seconds between snapshot refreshes while online.
SNAPSHOT_EVERY_S = 30.0


class Outage:
    """The offline mode of one store's writer (see the module doc)."""

    def __init__(self, journal: Journal, *, retry_s: float = RETRY_S,
                 snapshot_every_s: float = SNAPSHOT_EVERY_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.journal = journal
        self.retry_s = retry_s
        self.snapshot_every_s = snapshot_every_s
        self.monotonic = monotonic
        self.outage: int | None = None      # the current outage's number, None online
        self._last_try = 0.0
        self._last_snapshot: float | None = None
        self.unapplied = 0
        #: Balances the engine answered since the last snapshot, by member.
        self._balances: dict[int, int] = {}

    @property
    def offline(self) -> bool:
        """True while the chain's database is unreachable (or the journal not replayed)."""
        return self.outage is not None

    # ----------------------------------------------------------------- the tap path
    def decide_many(self, engine: Engine, jobs: list[tuple[Tap, EncodeReply | None]]
                    ) -> list[Decision]:
        """Decide a batch online through ``engine`` or, in an outage, from the journal."""
        if self.offline and not self._reconnect(engine):
            return [self._offline(engine, tap, enc) for tap, enc in jobs]
        try:
            decisions = engine.decide_many(jobs)
        except Exception as e:  # noqa: BLE001 - anything but an outage is re-raised
            if not is_unavailable(e):
                raise
            self._go_offline(e)
            return [self._offline(engine, tap, enc) for tap, enc in jobs]
        for d in decisions:   # fresher than the snapshot until its next refresh
            if d.member_id is not None and not d.replayed:
                self._balances[d.member_id] = d.balance_fen
        self._maybe_refresh(engine)
        return decisions

    def _go_offline(self, why: Exception) -> None:
        if self.outage is None:
            self.outage = self.journal.next_outage()
            log.warning("outage %d: the chain's database is unreachable (%s): deciding taps "
                        "from the local journal", self.outage, why)
        self._last_try = self.monotonic()

    def _offline(self, engine: Engine, tap: Tap, encode: EncodeReply | None) -> Decision:
        old = self.journal.find(tap.device_id, tap.seq)
        if old is not None:
            return _decision(old, replayed=True)
        now = engine.clock()
        ts = int(now.timestamp())
        dev = self.journal.device(tap.device_id)
        if dev is None:
            d = Decision("deny", "unknown_device", 0, codes.PAT_DENY, "Unknown reader", 0, 0,
                         -1, None)
            return dataclasses.replace(d, reply=bytes(encode(d)) if encode else b"")
        kind = dev.kind
        policy = engine.policy.for_store(dev.store)
        card = self.journal.card(tap.uid.upper())
        if card is not None and card.member_id in self._balances:
            card = card._replace(balance_fen=self._balances[card.member_id])
        local = self.journal.local(card.member_id, self.outage, tap.device_id,
                                   day_start(now)) if card else Local()
        out = decide_outage(card, tap, dev, engine.policy, now, local)
        grant = out.verdict == "grant"
        relay = {"gate": policy.gate_relay_ms, "wash": policy.wash_relay_ms}.get(
            kind, policy.kiosk_relay_ms) if grant else 0
        pattern = codes.PAT_OFFLINE_GRANT if grant else codes.PAT_DENY
        d = Decision(out.verdict, out.reason, relay, pattern, clip_text(out.text),
                     out.balance_fen, 0, out.uses_left, out.member_id)
        reply = bytes(encode(d)) if encode is not None else b""
        self.journal.append(self.outage, tap, ts, kind, out, relay, pattern, reply)
        return dataclasses.replace(d, reply=reply)

    # ----------------------------------------------------------------- back online
    def _reconnect(self, engine: Engine) -> bool:
        """Replay the journal if a retry is due; True once it is empty (online again)."""
        if self.monotonic() - self._last_try < self.retry_s:
            return False
        self._last_try = self.monotonic()
        try:
            self.replay(engine)
        except Exception as e:  # noqa: BLE001 - anything but an outage is re-raised
            if not is_unavailable(e):
                raise
            return False
        log.warning("outage %s over: journal replayed (%s)", self.outage,
                    self.journal.counts())
        self.outage = None
        self._last_snapshot = None
        self._maybe_refresh(engine)
        return True

    def replay(self, engine: Engine) -> int:
        """Apply every pending journal entry through ``engine`` in order (raises
        StoreUnavailable when the database is still unreachable); returns how many."""
        entries = self.journal.pending()
        clock = engine.clock
        try:
            for e in entries:
                self._apply(engine, e)
        finally:
            engine.clock = clock
        return len(entries)

    def _apply(self, engine: Engine, e: Entry) -> None:
        when = datetime.fromtimestamp(e.ts, engine.policy.tz)
        engine.clock = lambda: when
        # A gate tap replays as an offline tap (host/rules/offline.record): the member went
        # through, so it is recorded with its pass use and presence, never refused after
        # the fact (anti-passback could not be checked offline). Paid taps go through rules.
        tap = Tap(e.device_id, e.seq, e.uid, service=e.service, amount_fen=e.amount_fen,
                  direction=e.direction, device_time=e.device_time, offline=e.kind == "gate")
        d = engine.decide(tap, lambda _d: e.reply)
        if d.verdict == "grant":
            self.journal.mark(e.id, "applied")
            return
        with engine.transaction() as conn:
            record_unapplied(conn, device_id=e.device_id, seq=e.seq, uid=e.uid,
                             member_id=e.member_id, tapped_at=e.ts, granted_fen=e.charged_fen,
                             reason=d.reason, text=d.text, recorded_at=int(time.time()))
        self.journal.mark(e.id, "unapplied", d.reason)
        self.unapplied += 1

    def _maybe_refresh(self, engine: Engine, force: bool = False) -> None:
        now = self.monotonic()
        if (not force and self._last_snapshot is not None
                and now - self._last_snapshot < self.snapshot_every_s):
            return
        try:
            wall = engine.clock()
            self.journal.refresh(engine.db.conn, int(wall.timestamp()), day_start(wall))
        except Exception as e:  # noqa: BLE001 - anything but an outage is re-raised
            if not is_unavailable(e):
                raise
            log.warning("offline snapshot not refreshed: %s", e)
            return
        self._balances.clear()
        self._last_snapshot = now

    def prime(self, engine: Engine) -> None:
        """Take the first snapshot (the writer calls it at start, on its thread)."""
        self._maybe_refresh(engine, force=True)

    def status(self) -> dict[str, Any]:
        """For metrics and doctor: offline or not, the journal's counts, the snapshot's age."""
        return {"offline": self.offline, "outage": self.outage,
                "snapshot_at": self.journal.taken_at(), **self.journal.counts()}


def outage_for(db: str) -> Outage | None:
    """The offline mode of a daemon on database ``db``: a journal at ``$TAPKIOSK_OFFLINE_
    JOURNAL``, else, for a chain database (``postgresql://``), ``offline-journal.db`` in the
    user data dir; None for a local SQLite site (its database cannot be cut off)."""
    path = os.environ.get(JOURNAL_ENV)
    if not path and not str(db).startswith(("postgresql://", "postgres://")):
        return None
    if not path:
        base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"),
                                                               ".local", "share")
        os.makedirs(os.path.join(base, "tapkiosk"), exist_ok=True)
        path = os.path.join(base, "tapkiosk", "offline-journal.db")
    return Outage(Journal(path))


def _decision(e: Entry, replayed: bool = False) -> Decision:
    return Decision(e.verdict, e.reason, e.relay_ms, e.pattern, e.text, e.balance_fen, 0,
                    e.uses_left, e.member_id, reply=e.reply, replayed=replayed)
