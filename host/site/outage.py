# Runs on CPython (host): a store daemon through a WAN outage — decide from the journal, replay when the database is back.
"""Keeps a store serving while the chain's database is unreachable (issue 17).

The writer hands every batch of taps to :meth:`Outage.decide_many` instead of straight to
the engine. Online, the engine decides them as always, and the local snapshot
(``host.site.journal``) is refreshed every ``snapshot_every_s``. When the engine raises
``StoreUnavailable`` or a connection-level backend error (``is_unavailable``; nothing was
written), the store goes offline: each tap is decided by
``host.rules.offline.decide_outage`` from the snapshot under the policy's ``[offline]``
allowance, journaled durably with its reply bytes, and only then answered. A repeated
(device, seq) gets the journaled reply. The taps decided online since the last snapshot are
kept in RAM and written to the journal when the store goes offline
(``Journal.keep_recent``): offline they count like the journal's own (balances, pass uses,
daily caps, gate entries). On PostgreSQL a batch that waits on the database longer than
``tap_limit_s`` has its connection broken by a :class:`host.site.reach.Watchdog` (a WAN
that drops packets without a reset), so it fails as a lost connection and is decided
offline.

Every ``retry_s`` while offline, the next batch first replays the journal through the
engine (:mod:`host.site.journal_replay`: in the order the taps were decided, each at its
own time with its journaled reply, applied once; a tap the chain now refuses goes to
``offline_unapplied``, never dropped; taps refused offline are journaled as ``denied`` and
stored as the refused taps their readers saw; gate taps replay as offline taps). Once the
journal is empty the store is online again and the batch is decided by the engine. While
no tap comes, the writer calls :meth:`Outage.idle`, so the journal is replayed as soon as
the database answers, not only at the next tap.

While offline, a :class:`host.site.reach.Prober` asks on its own thread whether the
database answers; the writer replays only then (a hanging connect never holds taps up). A
daemon that starts offline (``prime`` cannot take a snapshot) or with taps left in its
journal starts in an outage; the readers it served while online are kept in the journal
(``remember_reader``) so that it can authenticate them (``offline_reader``, with a fresh
down-seq boot written to the database when it is back).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from host.rules.engine import Decision, EncodeReply, Engine, Tap, clip_text
from host.ledger.periods import day_start
from host.rules.offline import Local, decide_outage
from host.site import journal_replay
from host.site.journal import Entry, Journal
from host.site.reach import Prober, Watchdog
from host.store.db import is_postgres, safe_url
from host.store.site_state import raise_down_boot
from host.store.pg import reachable
from host.store.outage import StoreUnavailable, is_unavailable
from protocol import codes
from protocol import seq as seqs

log = logging.getLogger("tapkiosk.outage")

#: Environment variable naming the local journal file of a store's daemon.
JOURNAL_ENV = "TAPKIOSK_OFFLINE_JOURNAL"

#: Seconds between attempts to reach the chain's database while offline.
RETRY_S = 2.0
#: Seconds between snapshot refreshes while online.
SNAPSHOT_EVERY_S = 30.0
#: Seconds a batch of taps (or one replayed tap) may wait on the chain's PostgreSQL before
#: its connection is broken and the store goes offline (host/site/reach.py Watchdog).
TAP_LIMIT_S = 5.0
#: The same for a snapshot refresh (it reads every card of the chain).
SNAPSHOT_LIMIT_S = 30.0


class Outage:
    """The offline mode of one store's writer (see the module doc)."""

    def __init__(self, journal: Journal, *, retry_s: float = RETRY_S,
                 snapshot_every_s: float = SNAPSHOT_EVERY_S,
                 monotonic: Callable[[], float] = time.monotonic,
                 probe: Callable[[], bool] | None = None,
                 tap_limit_s: float = TAP_LIMIT_S) -> None:
        self.journal = journal
        self.tap_limit_s = tap_limit_s
        self.watchdog = Watchdog()
        #: Asks whether the database answers, off the writer thread (None: the writer's
        #: replay attempts find out themselves).
        self.prober = Prober(probe, retry_s) if probe is not None else None
        self.retry_s = retry_s
        self.snapshot_every_s = snapshot_every_s
        self.monotonic = monotonic
        self.outage: int | None = None      # the current outage's number, None online
        self._last_try = 0.0
        self._last_snapshot: float | None = None
        #: Taps of members decided online since the last snapshot (``Journal.keep_recent``
        #: rows), written to the journal when the database drops.
        self._recent: list[tuple] = []
        #: Down-seq boots taken offline (``offline_reader``), to write when back online.
        self._boots: dict[str, int] = {}
        #: Called once, on the writer thread, when the database is next back (the daemon
        #: loads the chain's policy then if it could not at start).
        self.on_online: Callable[[], None] | None = None
        if journal.waiting():
            # Killed before its journal was replayed: that outage goes on until it is (taps
            # are decided after those of the journal, never before them).
            self.outage = journal.next_outage() - 1
            self._last_try = monotonic() - retry_s
            if self.prober is not None:
                self.prober.start()

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
            with self._limit(engine, self.tap_limit_s):
                decisions = engine.decide_many(jobs)
        except Exception as e:  # noqa: BLE001 - anything but an outage is re-raised
            if not is_unavailable(e):
                raise
            self._go_offline(e)
            return [self._offline(engine, tap, enc) for tap, enc in jobs]
        ts = int(engine.clock().timestamp())
        self._recent.extend(      # fresher than the snapshot until its next refresh
            (tap.device_id, tap.seq, d.member_id, d.verdict, d.pass_id, d.uses_left,
             tap.direction, ts, d.balance_fen)
            for (tap, _enc), d in zip(jobs, decisions)
            if d.member_id is not None and not d.replayed)
        self._maybe_refresh(engine)
        return decisions

    def _go_offline(self, why: Exception) -> None:
        # What was decided online since the snapshot counts offline (balances, pass uses,
        # entries), also after a restart in this outage.
        self.journal.keep_recent(self._recent)
        self._recent.clear()
        if self.outage is None:
            self.outage = self.journal.next_outage()
            log.warning("outage %d: the chain's database is unreachable (%s): deciding taps "
                        "from the local journal", self.outage, why)
            if self.prober is not None:
                self.prober.start()
        self._last_try = self.monotonic()

    def _offline(self, engine: Engine, tap: Tap, encode: EncodeReply | None) -> Decision:
        old = self.journal.find(tap.device_id, tap.seq)
        if old is not None:
            return _decision(old, replayed=True)
        now = engine.clock()
        ts = int(now.timestamp())
        dev = self.journal.device(tap.device_id)
        if dev is None:
            reason, text = (("unknown_device", "Unknown reader")
                            if self.journal.taken_at() is not None
                            else ("no_snapshot", "Offline, no data yet"))
            d = Decision("deny", reason, 0, codes.PAT_DENY, text, 0, 0, -1, None)
            return dataclasses.replace(d, reply=bytes(encode(d)) if encode else b"")
        kind = dev.kind
        policy = engine.policy.for_store(dev.store)
        card = self.journal.card(tap.uid.upper())
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
    def idle(self, engine: Engine) -> None:
        """The writer has no tap to decide: replay the journal if a retry is due (so an
        outage ends when the database is back, not at the next tap), else refresh the
        snapshot if due."""
        if self.offline:
            self._reconnect(engine)
        else:
            self._maybe_refresh(engine)

    def _reconnect(self, engine: Engine) -> bool:
        """Replay the journal if a retry is due; True once it is empty (online again)."""
        if self.monotonic() - self._last_try < self.retry_s:
            return False
        if self.prober is not None and not self.prober.take():
            return False      # not known to answer: no connection attempt on this thread
        self._last_try = self.monotonic()
        try:
            self.replay(engine)
            self._save_boots(engine)
        except Exception as e:  # noqa: BLE001 - anything but an outage is re-raised
            if not is_unavailable(e):
                raise
            return False
        log.warning("outage %s over: journal replayed (%s)", self.outage,
                    self.journal.counts())
        self.outage = None
        if self.prober is not None:
            self.prober.stop()
        hook, self.on_online = self.on_online, None
        if hook is not None:
            hook()
        self._last_snapshot = None
        self._maybe_refresh(engine)
        return True

    def replay(self, engine: Engine) -> int:
        """Apply every pending journal entry through ``engine`` (host/site/journal_replay.py;
        raises when the database is still unreachable); returns how many."""
        return journal_replay.replay(self.journal, engine,
                                     partial(self._limit, engine, self.tap_limit_s))

    def _limit(self, engine: Engine, limit_s: float) -> contextlib.AbstractContextManager:
        """Bound the block's wait on the chain's PostgreSQL to ``limit_s`` (its connection
        is broken then: the block fails as a lost connection); SQLite is left alone."""
        conn = engine.db.conn
        if getattr(engine.db, "backend", None) != "postgresql" or not hasattr(conn, "interrupt"):
            return contextlib.nullcontext()
        return self.watchdog.armed(limit_s, conn.interrupt)

    def _maybe_refresh(self, engine: Engine, force: bool = False) -> None:
        now = self.monotonic()
        if (not force and self._last_snapshot is not None
                and now - self._last_snapshot < self.snapshot_every_s):
            return
        try:
            wall = engine.clock()
            with self._limit(engine, SNAPSHOT_LIMIT_S):
                self.journal.refresh(engine.db.conn, int(wall.timestamp()), day_start(wall))
        except Exception as e:  # noqa: BLE001 - anything but an outage is re-raised
            if not is_unavailable(e):
                raise
            log.warning("offline snapshot not refreshed: %s", e)
            return
        self._recent.clear()
        self._last_snapshot = now

    def prime(self, engine: Engine) -> None:
        """Take the first snapshot (the writer calls it at start, on its thread); a database
        that cannot be reached starts the daemon offline."""
        self._maybe_refresh(engine, force=True)
        if self._last_snapshot is None and not self.offline:
            self._go_offline(StoreUnavailable("not reachable at start"))
            if self.journal.taken_at() is None:
                log.error("no offline snapshot yet (this daemon never reached the chain's "
                          "database): every tap is refused until it does")

    # ----------------------------------------------------------------- readers
    def remember_reader(self, device_id: str, row: dict[str, Any]) -> None:
        """Keep reader ``device_id``'s ``load_device`` row for a start while offline. The
        database answered: if offline, the next batch tries to replay at once."""
        self.journal.save_reader(device_id, row)
        if self.offline:
            self._last_try = self.monotonic() - self.retry_s
            if self.prober is not None:
                self.prober.mark()

    def offline_reader(self, device_id: str) -> dict[str, Any] | None:
        """The saved row of reader ``device_id`` with a fresh down-seq boot (kept here and
        written to the database when it is back, like ``load_device`` does online); None
        when this daemon never served it while the database answered."""
        row = self.journal.reader(device_id)
        if row is None:
            return None
        row["down_boot"] = seqs.next_boot(row["down_boot"])
        self.journal.save_reader(device_id, row)
        self._boots[device_id] = row["down_boot"]
        return row

    def _save_boots(self, engine: Engine) -> None:
        for device_id, boot in list(self._boots.items()):
            journal_replay.write(engine, raise_down_boot, device_id, boot)
            del self._boots[device_id]

    def status(self) -> dict[str, Any]:
        """For metrics and doctor: offline or not, the journal's counts, the snapshot's age."""
        return {"offline": self.offline, "outage": self.outage,
                "snapshot_at": self.journal.taken_at(), **self.journal.counts()}


def outage_for(db: str, links: Sequence[str] = ()) -> Outage | None:
    """The offline mode of a daemon on database ``db``: a journal at ``$TAPKIOSK_OFFLINE_
    JOURNAL``, else, for a chain database (``postgresql://``), :func:`default_journal` in
    the user data dir; None for a local SQLite site (its database cannot be cut off)."""
    path = os.environ.get(JOURNAL_ENV)
    if not path and not is_postgres(db):
        return None
    if not path:
        base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"),
                                                               ".local", "share")
        os.makedirs(os.path.join(base, "tapkiosk"), exist_ok=True)
        path = os.path.join(base, "tapkiosk", default_journal(db, links))
        _warn_other_journals(path)
    log.info("offline journal %s", path)
    return Outage(Journal(path), probe=partial(reachable, db) if is_postgres(db) else None)


def default_journal(db: str, links: Sequence[str] = ()) -> str:
    """The file name of a daemon's journal: ``offline-journal-D-L.db``, D from the database
    URL without its password, L from the daemon's reader links (``links``: its MQTT broker,
    serial ports, NFC reader). Two daemons on one PC share a journal only when they serve
    the same readers from the same database, which never happens (one daemon per reader)."""
    def digest(text: str, n: int) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:n]
    return (f"offline-journal-{digest(safe_url(str(db)), 12)}-"
            f"{digest(chr(10).join(links), 8)}.db")


def _warn_other_journals(path: str) -> None:
    """Say so when another journal of this database (the daemon's links changed) still holds
    taps for the database: they are replayed only by a daemon that names that file."""
    stem = os.path.basename(path).rsplit("-", 1)[0]
    for other in sorted(glob.glob(os.path.join(os.path.dirname(path), stem + "-*.db"))):
        if os.path.abspath(other) == os.path.abspath(path):
            continue
        try:
            with contextlib.closing(sqlite3.connect(f"file:{other}?mode=ro", uri=True)) as c:
                n = c.execute("SELECT count(*) FROM journal WHERE state = 'pending' OR "
                              "(state = 'denied' AND stored = 0)").fetchone()[0]
        except sqlite3.Error:
            continue
        if n:
            log.warning("offline journal %s of this database holds %d taps not replayed: "
                        "start a daemon with %s=%s to replay them", other, n, JOURNAL_ENV,
                        other)


def _decision(e: Entry, replayed: bool = False) -> Decision:
    return Decision(e.verdict, e.reason, e.relay_ms, e.pattern, e.text, e.balance_fen, 0,
                    e.uses_left, e.member_id, reply=e.reply, replayed=replayed)
