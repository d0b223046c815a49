# Runs on CPython (host): VOID — a tap the device gave up on is never charged (reversed or tombstoned).
"""Voiding a tap the device gave up on.

A wash, kiosk or online gate that gets no DECISION within ``decision_ms`` starts nothing,
shows "No answer" and sends a VOID for that tap (``protocol/README.md``, "Giving up on a tap:
VOID"). ``void_tap()`` settles it in ONE ``BEGIN IMMEDIATE`` transaction keyed on
``(device_id, tap_seq)``:

- **the tap was applied** (its DECISION was lost or came too late): every ledger row it wrote
  is reversed with a reversing entry (``host.ledger.book.reverse``: balance, bonus lots, points,
  qualifying purchase, punch-card use); a coupon it used is given back (an ``unredeem``
  event); a gate's presence flag is flipped back when the tap was the last thing that set
  it. The ledger stays append-only;
- **the tap never arrived**: a tombstone row takes its place in ``taps`` (verdict deny, reason
  ``voided``, the reply bytes), so when the TAP turns up later the engine returns that stored
  decision and never applies it;
- **a repeated VOID** returns the first reply byte for byte and writes nothing.

Either way one row in ``tap_voids`` (``UNIQUE(device_id, tap_seq)``, append-only) records the
void and the reply. The answer is a DECISION for ``tap_seq``: verdict deny, reason
``voided``, the member's balance and points after.

A tap granted offline (flag offline: a gate opened from its allow-list) is never voided: the
member went through. Such a VOID is refused with ``VoidRefused`` (the daemon answers ERROR
``unsupported``) and nothing is written.

A points credit the member already spent again before the VOID arrived cannot be taken back
(nothing may go negative); it is kept and named in ``tap_voids.kept``. Money is always
restored: a debit can always be reversed. A tier upgrade the tap triggered stays (tiers never
go down automatically).
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import NamedTuple

import sqlite_utils

from host.ledger import book as ledger
from host.ledger import coupons
from host.rules.engine import Decision, Engine, clip_text
from host.errors import Conflict, InputError, InsufficientFunds
from host.store.db import transaction
from protocol import codes

VOID_TEXT = "Voided, not charged"

_VOID_COLS = ("outcome", "member_id", "pattern", "text", "balance_fen", "points", "uses_left",
              "reply")


class _TapRow(NamedTuple):
    """The stored tap a VOID names."""

    id: int
    ts: int
    member_id: int | None
    kind: str | None
    offline: int
    verdict: str
    pass_id: int | None


class VoidRefused(Conflict):
    """The tap cannot be voided (it was granted offline: the member already went through)."""


@dataclass(frozen=True)
class VoidDecision(Decision):
    """A Decision answering a VOID; ``outcome`` says what the void did: ``reversed`` (the
    tap was applied and its ledger rows were reversed), ``tombstone`` (the tap never
    arrived) — and ``replayed`` is True for a repeated VOID."""

    outcome: str = ""


def void_tap(engine_or_db: Engine | sqlite_utils.Database, device_id: str, tap_seq: int,
             encode_reply: Callable[[Decision], bytes] | None = None, *,
             void_seq: int | None = None, now: int | None = None) -> VoidDecision:
    """Void tap ``(device_id, tap_seq)`` in one transaction; see the module doc.

    ``encode_reply(decision) -> bytes`` builds the DECISION packet inside the transaction (it
    is stored, and a repeated VOID or a late TAP gets those very bytes). ``void_seq``: the
    VOID frame's own seq (recorded; must be above ``tap_seq``). ``now``: unix seconds (default:
    the engine's clock, else the system clock). Raises ``VoidRefused`` for an offline-granted
    tap and ``InputError`` for a seq out of range; nothing is written then.
    """
    txn: AbstractContextManager[sqlite3.Connection]
    if isinstance(engine_or_db, Engine):
        txn = engine_or_db.transaction()    # serialised with the engine's taps
        if now is None:
            now = int(engine_or_db.clock().timestamp())
    else:
        txn = transaction(engine_or_db)
    if now is None:
        now = int(time.time())
    if isinstance(tap_seq, bool) or not isinstance(tap_seq, int) or not 0 < tap_seq <= 0xFFFFFFFF:
        raise InputError(f"bad tap seq {tap_seq!r}: a device tap seq is 1..2^32-1")
    if void_seq is not None and void_seq <= tap_seq:
        raise InputError(f"VOID seq {void_seq} is not above the tap seq {tap_seq} it voids")
    with txn as conn:
        row = conn.execute(f"SELECT {', '.join(_VOID_COLS)} FROM tap_voids WHERE device_id = ? "
                           "AND tap_seq = ?", (device_id, tap_seq)).fetchone()
        if row is not None:
            return _stored(dict(zip(_VOID_COLS, row)))
        tap = conn.execute(f"SELECT {', '.join(_TapRow._fields)} FROM taps WHERE device_id = ? "
                           "AND seq = ?", (device_id, tap_seq)).fetchone()
        if tap is None:
            return _tombstone(conn, device_id, tap_seq, void_seq, now, encode_reply)
        return _reverse(conn, device_id, tap_seq, void_seq, now, _TapRow._make(tap),
                        encode_reply)


def _stored(row: dict) -> VoidDecision:
    return VoidDecision("deny", "voided", 0, row["pattern"], row["text"], row["balance_fen"],
                        row["points"], row["uses_left"], row["member_id"], bytes(row["reply"]),
                        replayed=True, outcome=row["outcome"])


def _encode(d: VoidDecision, encode_reply: Callable[[Decision], bytes] | None) -> VoidDecision:
    reply = bytes(encode_reply(d)) if encode_reply is not None else b""
    return dataclasses.replace(d, reply=reply)


def _tombstone(conn: sqlite3.Connection, device_id: str, tap_seq: int, void_seq: int | None,
               now: int, encode_reply: Callable[[Decision], bytes] | None) -> VoidDecision:
    kind = conn.execute("SELECT kind FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    d = _encode(VoidDecision("deny", "voided", 0, codes.PAT_DENY, VOID_TEXT, 0, 0, -1, None,
                             outcome="tombstone"), encode_reply)
    cur = conn.execute(
        "INSERT INTO taps (ts, device_id, seq, uid, member_id, kind, verdict, reason, relay_ms,"
        " pattern, text, balance_fen, points, uses_left, reply) "
        "VALUES (?, ?, ?, '', NULL, ?, 'deny', 'voided', 0, ?, ?, 0, 0, -1, ?)",
        (now, device_id, tap_seq, kind[0] if kind else None, d.pattern, d.text, d.reply))
    _record(conn, now, device_id, tap_seq, void_seq, cur.lastrowid, 0, None, d)
    return d


def _reverse(conn: sqlite3.Connection, device_id: str, tap_seq: int, void_seq: int | None,
             now: int, tap: _TapRow, encode_reply: Callable[[Decision], bytes] | None
             ) -> VoidDecision:
    member_id = tap.member_id
    if tap.offline:
        raise VoidRefused(f"tap {device_id}/{tap_seq} was granted offline: the member went "
                          "through, it is not voided")
    kept: list[str] = []
    n = 0
    for entry_id, currency, delta in conn.execute(
            "SELECT id, currency, delta FROM ledger WHERE tap_id = ? AND reverses IS NULL "
            "ORDER BY id", (tap.id,)).fetchall():
        conn.execute("SAVEPOINT void_row")
        try:
            ledger.reverse(conn, now, entry_id, note=f"void of tap {device_id}/{tap_seq}")
            n += 1
        except InsufficientFunds:
            # A credit (points) already spent again: keep it rather than go negative.
            conn.execute("ROLLBACK TO void_row")
            kept.append(f"{currency} {delta:+d} (entry {entry_id})")
        except Conflict:
            conn.execute("ROLLBACK TO void_row")   # reversed already by an operator
        conn.execute("RELEASE void_row")
    coupons.give_back_for_tap(conn, tap.id, now, f"void of tap {device_id}/{tap_seq}")
    if tap.kind == "gate" and tap.verdict == "grant" and member_id is not None:
        # The tap flipped the member in or out; undo that if nothing moved them since.
        conn.execute("UPDATE presence SET inside = 1 - inside WHERE member_id = ? AND "
                     "device_id = ? AND ts = ?", (member_id, device_id, tap.ts))
    bal, pts, uses = 0, 0, -1
    if member_id is not None:
        r = conn.execute("SELECT principal_fen + bonus_fen, points FROM members WHERE id = ?",
                         (member_id,)).fetchone()
        if r is not None:
            bal, pts = r
    if tap.pass_id is not None:
        r = conn.execute("SELECT uses_left FROM passes WHERE id = ?", (tap.pass_id,)).fetchone()
        if r is not None and r[0] is not None:
            uses = r[0]
    text = VOID_TEXT if not kept else "Voided, points kept"
    d = _encode(VoidDecision("deny", "voided", 0, codes.PAT_DENY, clip_text(text), bal, pts,
                             uses, member_id, outcome="reversed"), encode_reply)
    _record(conn, now, device_id, tap_seq, void_seq, tap.id, n, "; ".join(kept) or None, d)
    # A sale the tap paid is not paid any more (host/rules/sales.py): the reader gave up.
    conn.execute("UPDATE sales SET state = 'denied', reason = 'voided', settled_at = ? "
                 "WHERE tap_id = ? AND state = 'paid'", (now, tap.id))
    return d


def _record(conn: sqlite3.Connection, now: int, device_id: str, tap_seq: int,
            void_seq: int | None, tap_id: int, reversed_rows: int, kept: str | None,
            d: VoidDecision) -> None:
    conn.execute(
        "INSERT INTO tap_voids (ts, device_id, tap_seq, void_seq, tap_id, outcome, reversed,"
        " kept, member_id, pattern, text, balance_fen, points, uses_left, reply) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (now, device_id, tap_seq, void_seq, tap_id, d.outcome, reversed_rows, kept,
         d.member_id, d.pattern, d.text, d.balance_fen, d.points, d.uses_left, d.reply))


def stored_void_reply(db: sqlite_utils.Database, device_id: str, void_seq: int,
                      tap_seq: int) -> bytes | None:
    """The reply stored for the VOID ``void_seq`` of ``(device_id, tap_seq)``, or None: a
    VOID re-sent after the daemon lost its replay cache gets the same bytes again."""
    row = db.execute("SELECT reply FROM tap_voids WHERE device_id = ? AND tap_seq = ? AND "
                     "void_seq = ?", (device_id, tap_seq, void_seq)).fetchone()
    return bytes(row[0]) if row and row[0] else None
