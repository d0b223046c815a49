# Runs on CPython (host): the rules engine — one tap in, one decision out, in one transaction.
"""Rules engine: the transaction and the dispatch.

``Engine.decide(tap, encode_reply)`` runs ONE ``BEGIN IMMEDIATE`` transaction: if
``(device_id, seq)`` was already applied it returns the stored decision (``replayed=True``,
same reply bytes) and applies nothing; otherwise it evaluates the policy, writes the ledger
rows, projections and the tap record, and commits. ``decide_many([(tap, encode_reply),
...])`` does the same for a batch in one transaction (group commit), each tap inside its own
SAVEPOINT and encoded by its own ``encode_reply``: the caller hands down with each tap what
the engine needs to build its reply, the engine never calls back to ask which tap it is on.

One engine serves one thread at a time: each transaction holds the engine's lock, so
threads sharing an engine (and its connection) are serialised, never interleaved in one
SQLite transaction.

The rules of each device kind live in ``host.rules.gate``, ``wash`` and ``kiosk``; payment
choice in ``host.rules.payment``; offline taps in ``host.rules.offline``; voids in
``host.rules.voids``. Policy is data (``host.rules.policy``); dates come from the
injectable ``clock``.

Boundary: a ``Tap`` whose integer fields do not fit SQLite's signed 64 bits (or whose
``device_id``/``uid`` is not a string) is refused with ``InputError`` before anything is
written. A TAP frame cannot carry such a value (its fields are u8-u32), so a device tap
always reaches the rules and always gets a DECISION: an in-range value the rules do not
accept is a deny with its reason (``invalid_amount``, ``bad_service``...).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from datetime import datetime
from typing import Any

import sqlite_utils

from host.errors import HostError, InputError
from host.ledger import book as ledger
from host.ledger import idempotent
from host.ledger.rewards import points_expiry
from host.rules import gate, kiosk, offline, sales, wash
from host.rules.context import CARD_COLS, CARD_JOIN, CardRow, Denied, Member, Outcome, TapContext
from host.rules.policy import Policy, policy_and_clock
from host.secure.check import check_tap
from host.store import member_taps
from host.store.db import begin_taps, lock_card, retrying, transaction
from host.store.outage import StoreUnavailable
from protocol import codes

TEXT_MAX_BYTES = 64


@dataclass(frozen=True)
class Tap:
    """One card tap as the daemon (or the CLI) hands it to the engine.

    ``uid`` is canonical uppercase hex; ``amount_fen`` comes from a kiosk; ``direction`` is
    "in"/"out" for gates; ``offline`` means the device already granted it from its allow-list.
    """

    device_id: str
    seq: int
    uid: str
    sak: int = 0
    service: int = 0
    amount_fen: int = 0
    direction: str | None = None
    offline: bool = False
    device_time: int = 0
    secure: bytes = b""
    #: The sale the reader showed when the card was tapped (0: none; host/rules/sales.py).
    sale_id: int = 0
    #: An operator tap paying partly with points (host/rules/pay_points.py): 0 none, -1 as
    #: many as the rules allow, N points. A device tap pays with what its sale asks for.
    use_points: int = 0


@dataclass(frozen=True)
class Decision:
    """What the device should do, and the member's state after the tap."""

    verdict: str
    reason: str
    relay_ms: int
    pattern: int
    text: str
    balance_fen: int
    points: int
    uses_left: int
    member_id: int | None
    reply: bytes = b""
    replayed: bool = False
    #: The sale this tap paid or was refused for (0: none).
    sale_id: int = 0
    #: The pass that paid a granted tap (None: none, or a tap answered again from the store;
    #: a store's daemon counts it offline after a WAN drop, host/site/outage.py).
    pass_id: int | None = None


#: Builds the reply packet of a decision inside the transaction (stored with the tap).
EncodeReply = Callable[[Decision], bytes]

_DECISION_FIELDS = tuple(f.name for f in dataclasses.fields(Decision))


def _decision(fields: dict[str, Any]) -> Decision:
    """A ``Decision`` of ``fields`` (every field named): the tap path's constructor, a
    copy of the dict instead of the frozen dataclass's setattr per field (1.6 us -> 0.3)."""
    d = object.__new__(Decision)
    d.__dict__.update(fields)
    return d

_INT_FIELDS = ("seq", "sak", "service", "amount_fen", "device_time", "sale_id", "use_points")
_INT64 = 1 << 63


def check_tap_fields(tap: Tap, *, seq: bool = True) -> None:
    """Raise ``InputError`` for a tap the store cannot hold (see the module doc); ``seq``
    False leaves out the seq (``decide_local`` replaces it)."""
    values = (tap.seq, tap.sak, tap.service, tap.amount_fen, tap.device_time, tap.sale_id,
              tap.use_points)
    for i in range(0 if seq else 1, len(values)):
        v = values[i]
        if type(v) is not int or not -_INT64 <= v < _INT64:   # bool is not a field's type
            raise InputError(f"tap {_INT_FIELDS[i]} {v!r} is not an integer of at most 64 bits")
    if type(tap.device_id) is not str or type(tap.uid) is not str:
        raise InputError(f"tap device id and uid must be text, got {tap.device_id!r}, {tap.uid!r}")


def clip_text(text: str, limit: int = TEXT_MAX_BYTES) -> str:
    """Cut ``text`` to at most ``limit`` UTF-8 bytes without splitting a character."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


_TAP_COLS = ("verdict", "reason", "relay_ms", "pattern", "text", "balance_fen", "points",
             "uses_left", "member_id", "reply")
#: One read before anything is decided: the next tap id, the replay check (the stored
#: decision of (device, seq) or NULLs), the device with its store and its armed sale
#: (host/rules/sales.py; NULLs for an unknown device) and the card with its member
#: (``CardRow``; NULLs for an unknown card). Always one row. Arguments: ts, ts, ts,
#: points expiry (host/ledger/rewards.py), device_id, seq, device_id, uid.
_HEAD_REST = (", ".join(f"t.{c}" for c in _TAP_COLS)
              + ", d.kind, d.settings, st.name, s.id, s.amount_fen, s.service, s.expires_at, "
              f"s.points, {CARD_COLS} FROM (SELECT 1) AS one LEFT JOIN taps t ON "
              "t.device_id = ? AND t.seq = ? LEFT JOIN devices d ON d.device_id = ? LEFT JOIN "
              "stores st ON st.id = d.store_id LEFT JOIN sales s ON s.device_id = d.device_id "
              f"AND s.state = 'armed' {CARD_JOIN}")
_HEAD_SQL = "SELECT (SELECT coalesce(max(id), 0) + 1 FROM taps), " + _HEAD_REST
#: The head read of a later tap of a SQLite batch: its id is the previous tap's + 1 (the
#: transaction holds the whole store), so no ``max(id)`` (about 2.5 us of 12).
_HEAD_NEXT_SQL = "SELECT NULL, " + _HEAD_REST
_DEV_AT = 1 + len(_TAP_COLS)
_CARD_AT = _DEV_AT + 8
_RULES = {"gate": gate.decide, "wash": wash.decide, "kiosk": kiosk.decide}
_CARD_TEXT = {"blocked": "Card blocked, see staff", "lost": "Card reported lost",
              "expired": "Card expired"}


#: A host fault in one tap's rules: the tap is denied ``internal`` and charges nothing.
_FAULTS = (HostError, ValueError, TypeError, KeyError, sqlite3.IntegrityError, ArithmeticError)


class _Redo(Exception):
    """A tap decided without a SAVEPOINT (``Engine._bare``) must be rolled back and decided
    with one."""


class Engine:
    """The rules engine over one store.

    ``db``: a database from ``host.store.db.open_db``; ``policy``: a ``Policy`` (default: the
    shipped defaults); ``clock``: returns an aware datetime in the site time zone (default:
    now in ``policy.timezone``).
    """

    def __init__(self, db: sqlite_utils.Database, policy: Policy | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.db = db
        self.policy, self.clock = policy_and_clock(policy, clock)
        self._devices: dict[str, tuple[str, tuple[str, dict[str, Any], str | None]]] = {}
        self._lock = threading.RLock()
        #: The seq ``decide_local`` used last (None before its first call).
        self.last_local_seq: int | None = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` on the engine's store, holding the engine's
        lock: another thread using this engine waits for the COMMIT (or ROLLBACK)."""
        with self._lock, transaction(self.db) as conn:
            yield conn

    # ------------------------------------------------------------------ transactions
    def decide(self, tap: Tap, encode_reply: EncodeReply | None = None) -> Decision:
        """Decide one tap in one ``BEGIN IMMEDIATE`` transaction (see module doc)."""
        return self.decide_many([(tap, encode_reply)])[0]

    def decide_many(self, jobs: Iterable[tuple[Tap, EncodeReply | None]]) -> list[Decision]:
        """Decide a batch of ``(tap, encode_reply)`` in one transaction; each tap runs in
        its own SAVEPOINT and its reply is built by its own ``encode_reply`` (None: no
        reply bytes). A (device, seq) twice in the batch is applied once: the second copy
        comes back replayed, with the first one's reply. InputError (nothing written) for
        a tap the store cannot hold.

        On SQLite a batch (a lone tap too) first runs without SAVEPOINTs: the transaction
        is the taps' own. When the rules of one tap fail, or refuse it, after writing, the
        transaction is rolled back and the whole batch decided again in a new one, each tap
        with its SAVEPOINT (a failed tap is then a stored deny ``internal`` that charges
        nothing). PostgreSQL keeps the SAVEPOINTs: a ``RELEASE`` is the round trip that
        sends a tap's writes."""
        jobs = list(jobs)
        for tap, _enc in jobs:
            check_tap_fields(tap)
        with self._lock:
            if getattr(self.db.conn, "begin_taps", None) is None:
                out = self._bare(jobs)
                if out is not None:
                    return out
            return retrying(partial(self._batch, jobs))

    def _batch(self, jobs: list[tuple[Tap, EncodeReply | None]]) -> list[Decision]:
        # The tap path: the same as ``with self.transaction()``, without its generator layers.
        # On PostgreSQL a deadlock rolls it all back and ``retrying`` runs it again.
        conn = self.db.conn
        begin_taps(conn)   # BEGIN IMMEDIATE; on PostgreSQL READ COMMITTED + row locks
        try:
            when = self._when()
            out = [self._one(conn, tap, enc, when) for tap, enc in jobs]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return out

    def _bare(self, jobs: list[tuple[Tap, EncodeReply | None]]) -> list[Decision] | None:
        """SQLite taps in one transaction, no SAVEPOINT per tap; None (rolled back, nothing
        written) when a tap must be decided with one (``_Redo``): the caller decides the
        batch again with ``_batch``."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            when = self._when()
            ids: list[int | None] = [None]
            out = [self._one(conn, tap, enc, when, ids) for tap, enc in jobs]
            conn.execute("COMMIT")
        except _Redo:
            conn.execute("ROLLBACK")
            return None
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return out

    def decide_local(self, tap: Tap, encode_reply: EncodeReply | None = None,
                     *, key: str | None = None) -> Decision:
        """Decide an operator tap (``tapkiosk tap``) through the same path as ``decide()``.

        The tap's ``seq`` is ignored and replaced, inside the transaction, by a fresh
        negative seq for the device (-1, -2, ...): wire seqs are u32, so an operator tap can
        never collide with, or be mistaken for a retransmission of, a real device tap. The
        seq used is left in ``last_local_seq``.

        ``key``: idempotency key (like every admin write, stored in ``ops`` in the same
        transaction): a repeat with the same key and tap returns the first decision with
        ``replayed=True`` and charges nothing; the same key for another request raises
        ``Conflict``.
        """
        idempotent.check_key(key)
        check_tap_fields(tap, seq=False)
        dev = tap.device_id
        args = {"device_id": dev, "uid": tap.uid, "service": tap.service,
                "amount_fen": tap.amount_fen, "direction": tap.direction,
                "offline": bool(tap.offline)}
        if tap.use_points:
            args["use_points"] = tap.use_points
        canon = idempotent.canonical(args)
        with self.transaction() as conn:
            first = idempotent.recall(conn, key, "tap", canon)
            seq = first["seq"] if first is not None else None
            if seq is None:
                seq = conn.execute("SELECT min(coalesce(min(seq), 0), 0) - 1 FROM taps "
                                   "WHERE device_id = ? AND seq < 0", (dev,)).fetchone()[0]
            d = self._one(conn, dataclasses.replace(tap, seq=seq), encode_reply, self._when())
            if not d.replayed:
                idempotent.remember(conn, key, "tap", canon, {"seq": seq},
                                    int(self.clock().timestamp()))
        self.last_local_seq = seq
        return d

    def _when(self) -> tuple[datetime, int, int]:
        """(now, ts, points expiry) of a transaction's taps: the clock read once per batch
        (a batch is decided at one moment, as it commits at one)."""
        now = self.clock()
        return now, int(now.timestamp()), points_expiry(self.policy, now)

    def _one(self, conn: sqlite3.Connection, tap: Tap, encode_reply: EncodeReply | None,
             when: tuple[datetime, int, int], ids: list[int | None] | None = None
             ) -> Decision:
        """Decide ``tap`` inside the open transaction at ``when`` (``_when``). ``ids``
        (``_bare``, SQLite): the next tap id once known (a tap's is the one before + 1), and
        no SAVEPOINT unless the card has expired lots to write off (``_expire`` keeps those
        apart); a refusal after a write, or a fault, raises ``_Redo`` instead of rolling
        back to it."""
        t0 = time.perf_counter()
        now, ts, expiry = when
        uid = tap.uid.upper()
        if ids is None:
            lock_card(conn, uid)   # PostgreSQL; SQLite's BEGIN IMMEDIATE holds it all (_bare)
            nid = None
        else:
            nid = ids[0]
        head = conn.execute(_HEAD_SQL if nid is None else _HEAD_NEXT_SQL,
                            (ts, ts, ts, expiry, tap.device_id, tap.seq, tap.device_id,
                             uid)).fetchone()
        if head[1] is not None:
            d = dict(zip(_TAP_COLS, head[1:_DEV_AT]))
            d["reply"] = bytes(d["reply"])
            return Decision(**d, replayed=True)
        tap_id = head[0] if nid is None else nid
        dev = self._device(tap.device_id, head[_DEV_AT:_CARD_AT])
        sale = (None if tap.offline or dev is None or dev[3] is None
                else _sale(conn, tap, dev[3], ts))
        sale_id = sale.id if sale is not None else tap.sale_id
        card = CardRow._make(head[_CARD_AT:]) if head[_CARD_AT] is not None else None
        # Secure cards first, outside the SAVEPOINT: a verified SUN counter stays used even
        # when the tap is then refused for another reason (host/secure/check.py).
        sec = check_tap(conn, self.policy, tap, card.secure_row() if card is not None else None)
        sp = ids is None or (card is not None and bool(card.expiring))
        if sp:
            conn.execute("SAVEPOINT tap")
        changes = 0 if sp else conn.total_changes
        try:
            try:
                if not sec.ok:
                    raise Denied(sec.reason, sec.text, sec.member_id)
                out = self._evaluate(conn, tap, now, ts, tap_id, dev, card, sale, expiry)
            except Denied as d:
                if sp:
                    conn.execute("ROLLBACK TO tap")
                elif conn.total_changes != changes:
                    raise _Redo from None   # refused after a write: undo it all, again
                out = Outcome("deny", d.reason, d.text, member_id=d.member_id, kind=d.kind)
            decision = _finish(conn, out, encode_reply, sale_id=sale_id)
            _record(conn, tap, ts, tap_id, out, decision, t0, sec.note)
            # Inside the try: on PostgreSQL the tap's writes are sent with the RELEASE (one
            # round trip, host/store/pg.py), so a write that fails raises here.
            if sp:
                conn.execute("RELEASE tap")
        except StoreUnavailable:
            raise   # the database is gone: nothing of the batch is written (host/site/outage.py)
        except _FAULTS as e:
            if not sp:
                raise _Redo from e
            # A host fault in this tap: nothing of it is charged, the device gets "internal".
            conn.execute("ROLLBACK TO tap")
            out = Outcome("deny", "internal", f"Error, see staff ({type(e).__name__})",
                          pattern=codes.PAT_FAULT)
            decision = _finish(conn, out, encode_reply, safe=True, sale_id=sale_id)
            _record(conn, tap, ts, tap_id, out, decision, t0, sec.note)
            conn.execute("RELEASE tap")
        if ids is not None:
            ids[0] = tap_id + 1   # the tap row is written: the next tap's id
        if sale is not None:
            sales.settle(conn, sale.id, tap_id, ts, _sale_result(decision, out))
        return decision

    # ------------------------------------------------------------------ dispatch
    def _device(self, device_id: str, row: tuple
                ) -> tuple[str, dict[str, Any], str | None, tuple | None] | None:
        """(kind, settings, store name, armed sale row or None) of ``device_id`` from its
        columns in the head read (``_HEAD_SQL``), or None for an unknown device; settings
        parsed once per change. A device in no store (store None) gets the site's policy
        through ``for_store``."""
        if row[0] is None:
            return None
        kind, raw, store = row[0], row[1], row[2]
        armed = row[3:] if row[3] is not None else None
        cached = self._devices.get(device_id)
        if cached is not None and cached[0] == (kind, raw, store):
            return cached[1] + (armed,)
        settings = json.loads(raw)
        settings.setdefault("hours", "00:00-24:00")
        settings.setdefault("duplicate_window_s", 0)
        self._devices[device_id] = ((kind, raw, store), (kind, settings, store))
        return kind, settings, store, armed

    def _evaluate(self, conn: sqlite3.Connection, tap: Tap, now: datetime, ts: int,
                  tap_id: int, dev: tuple | None, card: CardRow | None,
                  sale: sales.Sale | None = None, expiry: int | None = None) -> Outcome:
        """Device, card and member checks, then the rule of the device's kind."""
        if dev is None:
            raise Denied("unknown_device", "Unknown reader")
        kind, settings, store, _armed = dev
        if tap.offline:
            return offline.record(conn, tap, kind, card, ts, tap_id)
        if card is None:
            raise Denied("unknown_card", "Unknown card", kind=kind)
        status = card.status
        if status == "active" and card.expires_at and ts >= card.expires_at:
            status = "expired"
        if status != "active":
            raise Denied(status, _CARD_TEXT[status], card.member_id, kind)
        if card.member_status != "active":
            raise Denied("member_inactive", "Membership suspended", card.member_id, kind)
        m = Member.from_card(card, expiry)
        sp = self.policy.stores.get(store) if store is not None else None
        ctx = TapContext(conn, self.policy.for_store(store), tap, kind, settings, m, now, ts,
                         tap_id, sale, sp.hours_for(kind) if sp is not None else None)
        if card.expiring:
            _expire(ctx)
        _refuse_duplicate(ctx)
        out = _RULES.get(kind, kiosk.decide)(ctx)
        out.member_id, out.kind = m.id, kind
        m.pending.flush(conn, last_active_at=ts)
        out.balance_fen = m.balance_fen()
        out.points = m.pending.have("points")
        return out


def _sale_result(d: Decision, out: Outcome) -> dict[str, Any]:
    """What a sale keeps of the tap that settled it (``GET /v1/sales/{id}``)."""
    return {"verdict": d.verdict, "reason": d.reason, "text": d.text,
            "member_id": d.member_id, "charged_fen": out.charged_fen,
            "points_earned": out.points_earned, "balance_fen": d.balance_fen,
            "points": d.points, "points_paid": out.points_paid,
            "points_paid_fen": out.points_paid_fen}


def _sale(conn: sqlite3.Connection, tap: Tap, armed: tuple, ts: int) -> sales.Sale | None:
    """The armed sale this tap pays (read with the device): None when it expired (marked
    so here) or the reader showed another one."""
    if armed[3] <= ts:
        sales.expire(conn, ts, tap.device_id)
        return None
    if tap.sale_id and tap.sale_id != armed[0]:
        return None   # the reader showed another sale: this tap pays nothing
    return sales.Sale(armed[0], armed[1], armed[2], armed[4])


def _finish(conn: sqlite3.Connection, out: Outcome,
            encode_reply: EncodeReply | None, safe: bool = False,
            sale_id: int = 0) -> Decision:
    """The Decision of ``out`` with its reply encoded (``safe``: a failing encoder leaves
    the reply empty instead of raising, on the fault path that must still store the tap)."""
    bal, pts = 0, 0
    if out.balance_fen is not None:
        bal, pts = out.balance_fen, out.points
    elif out.member_id is not None:
        r = conn.execute("SELECT principal_fen + bonus_fen, points FROM members WHERE id = ?",
                         (out.member_id,)).fetchone()
        if r is not None:
            bal, pts = r
    if out.verdict == "grant" and out.pattern == codes.PAT_DENY:
        out.pattern = codes.PAT_GRANT
    grant = out.verdict == "grant"
    fields = {"verdict": out.verdict, "reason": out.reason,
              "relay_ms": out.relay_ms if grant else 0, "pattern": out.pattern,
              "text": clip_text(out.text), "balance_fen": bal, "points": pts,
              "uses_left": out.uses_left, "member_id": out.member_id, "reply": b"",
              "replayed": False, "sale_id": sale_id,
              "pass_id": out.pass_id if grant else None}
    d = _decision(fields)
    if encode_reply is None:
        return d
    try:
        fields["reply"] = bytes(encode_reply(d))
    except Exception:  # noqa: BLE001 - the fault path must still record the tap
        if not safe:
            raise
    # A second Decision with the reply (the first one went to encode_reply).
    return _decision(fields)


def _record(conn: sqlite3.Connection, tap: Tap, ts: int, tap_id: int, out: Outcome,
            d: Decision, t0: float, security: str | None = None) -> None:
    """Store the tap's row with its decision and how long it took since ``t0``."""
    latency_ms = (time.perf_counter() - t0) * 1000.0
    conn.execute(
        "INSERT INTO taps (id, ts, device_id, seq, uid, member_id, kind, service, amount_fen,"
        " charged_fen, points_earned, direction, offline, device_time, pass_id, verdict,"
        " reason, relay_ms, pattern, text, balance_fen, points, uses_left, reply, latency_ms,"
        " security) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (tap_id, ts, tap.device_id, tap.seq, tap.uid[:40], d.member_id, out.kind,
         tap.service, tap.amount_fen, out.charged_fen, out.points_earned,
         tap.direction, 1 if tap.offline else 0, tap.device_time, out.pass_id,
         d.verdict, d.reason, d.relay_ms, d.pattern, d.text, d.balance_fen, d.points,
         d.uses_left, d.reply, latency_ms, security))


def _expire(ctx: TapContext) -> None:
    """Write off the member's expired lots, for good: when anything expired, the write-off is
    kept out of the tap's SAVEPOINT, so a tap refused afterwards reports (and the store
    keeps) the balance after expiry, not the one before."""
    if ledger.sweep_expired(ctx.conn, ctx.ts, ctx.member.id, pending=ctx.member.pending):
        ctx.member.pending.flush(ctx.conn)
        ctx.conn.execute("RELEASE tap")
        ctx.conn.execute("SAVEPOINT tap")


#: The member's last grant on this device after a time (host/store/member_taps.py). CROSS
#: JOIN: SQLite takes the member's few tap ids first, not every tap of the device.
_DUPLICATE_SQL = (f"SELECT max(t.ts) FROM {member_taps.tap_ids(since=True)} AS x CROSS JOIN "
                  "taps t WHERE t.id = x.id AND t.member_id = ? AND t.ts > ? AND "
                  "t.device_id = ? AND t.verdict = 'grant' AND "
                  "t.id NOT IN (SELECT tap_id FROM tap_voids)")


def _refuse_duplicate(ctx: TapContext) -> None:
    """Deny ``duplicate`` when the member was granted on this device within the window."""
    window = int(ctx.settings.get("duplicate_window_s", 0))
    if not window:
        return
    since = ctx.ts - window
    last = ctx.conn.execute(
        _DUPLICATE_SQL,  # voided taps (rules/voids.py) do not count
        (*member_taps.params(ctx.member.id, since), ctx.member.id, since,
         ctx.tap.device_id)).fetchone()[0]
    if last is not None:
        raise ctx.deny("duplicate", "Already done, wait a moment")
