# Runs on CPython (host): the rules engine — one tap in, one decision out, in one transaction.
"""Rules engine.

``Engine.decide(tap)`` runs ONE ``BEGIN IMMEDIATE`` transaction: if ``(device_id, seq)`` was
already applied it returns the stored decision (``replayed=True``, same reply bytes) and
applies nothing; otherwise it evaluates the policy, writes the ledger rows, projections and
the tap record, and commits. ``decide_many()`` does the same for a batch in one transaction
(group commit), each tap inside its own SAVEPOINT.

Policy is data (``host.rules.policy``); dates come from the injectable ``clock``.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlite_utils

from host.ledger import book as ledger
from host.ledger import idempotent, rewards
from host.ledger.periods import day_start
from host.errors import HostError, InsufficientFunds
from host.money import format_fen
from host.rules.policy import Policy, policy_and_clock
from host.secure.check import check_tap
from host.store.devices import parse_hours
from protocol import codes

TEXT_MAX_BYTES = 64
#: Idempotency keys of operator writes (here and in ``host.admin.core``).
_NAME_CHARS = 10


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


def clip_text(text: str, limit: int = TEXT_MAX_BYTES) -> str:
    """Cut ``text`` to at most ``limit`` UTF-8 bytes without splitting a character."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


class _Deny(Exception):
    """Internal: stop evaluating with a deny reason (nothing of this tap is written)."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.text = text


@dataclass
class _Outcome:
    verdict: str
    reason: str
    text: str
    member_id: int | None = None
    kind: str | None = None
    charged_fen: int = 0
    points_earned: int = 0
    pass_id: int | None = None
    uses_left: int = -1
    relay_ms: int = 0
    pattern: int = codes.PAT_DENY
    balance_fen: int | None = None
    points: int | None = None


_TAP_COLS = ("verdict", "reason", "relay_ms", "pattern", "text", "balance_fen", "points",
             "uses_left", "member_id", "reply")


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
        self._devices: dict[str, tuple[str, dict[str, Any]]] = {}
        #: The tap being decided while ``encode_reply`` runs (None outside decide calls), so
        #: a batch encoder can tell which tap a Decision belongs to.
        self.current_tap: Tap | None = None
        #: The seq ``decide_local`` used last (None before its first call).
        self.last_local_seq: int | None = None

    # ------------------------------------------------------------------ transactions
    def decide(self, tap: Tap, encode_reply: Callable[[Decision], bytes] | None = None
               ) -> Decision:
        """Decide one tap in one ``BEGIN IMMEDIATE`` transaction (see module doc)."""
        return self.decide_many([tap], encode_reply)[0]

    def decide_many(self, taps: list[Tap],
                    encode_reply: Callable[[Decision], bytes] | None = None
                    ) -> list[Decision]:
        """Decide a batch in one transaction; each tap runs in its own SAVEPOINT."""
        conn = self.db.conn
        out: list[Decision] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for tap in taps:
                out.append(self._one(conn, tap, encode_reply))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return out

    def decide_local(self, tap: Tap, encode_reply: Callable[[Decision], bytes] | None = None,
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
        dev = str(tap.device_id)
        canon = idempotent.canonical({"device_id": dev, "uid": str(tap.uid),
                                      "service": int(tap.service), "amount_fen": tap.amount_fen,
                                      "direction": tap.direction, "offline": bool(tap.offline)})
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            first = idempotent.recall(conn, key, "tap", canon)
            seq = first["seq"] if first is not None else None
            if seq is None:
                seq = conn.execute("SELECT min(coalesce(min(seq), 0), 0) - 1 FROM taps "
                                   "WHERE device_id = ? AND seq < 0", (dev,)).fetchone()[0]
            d = self._one(conn, dataclasses.replace(tap, seq=seq), encode_reply)
            if not d.replayed:
                idempotent.remember(conn, key, "tap", canon, {"seq": seq},
                                    int(self.clock().timestamp()))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.last_local_seq = seq
        return d

    def _one(self, conn: sqlite3.Connection, tap: Tap,
             encode_reply: Callable[[Decision], bytes] | None) -> Decision:
        t0 = time.perf_counter()
        row = conn.execute(f"SELECT {', '.join(_TAP_COLS)} FROM taps WHERE device_id = ? "
                           "AND seq = ?", (str(tap.device_id), tap.seq)).fetchone()
        if row is not None:
            d = dict(zip(_TAP_COLS, row))
            d["reply"] = bytes(d["reply"])
            return Decision(**d, replayed=True)
        self.current_tap = tap
        now = self.clock()
        ts = int(now.timestamp())
        tap_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM taps").fetchone()[0]
        # Secure cards first, outside the SAVEPOINT: a verified SUN counter stays used even
        # when the tap is then refused for another reason (host/secure/check.py).
        sec = check_tap(conn, self.policy, tap)
        conn.execute("SAVEPOINT tap")
        try:
            try:
                if not sec.ok:
                    d = _Deny(sec.reason, sec.text)
                    d.member_id = sec.member_id
                    raise d
                out = self._evaluate(conn, tap, now, ts, tap_id)
            except _Deny as d:
                conn.execute("ROLLBACK TO tap")
                out = _Outcome("deny", d.reason, d.text, member_id=getattr(d, "member_id", None),
                               kind=getattr(d, "kind", None))
            decision, reply = self._finish(conn, out, encode_reply)
            self._record(conn, tap, ts, tap_id, out, decision, t0, sec.note)
        except (HostError, ValueError, TypeError, KeyError, sqlite3.IntegrityError,
                ArithmeticError) as e:
            # A host fault in this tap: nothing of it is charged, the device gets "internal".
            conn.execute("ROLLBACK TO tap")
            out = _Outcome("deny", "internal", f"Error, see staff ({type(e).__name__})")
            out.pattern = codes.PAT_FAULT
            decision, reply = self._finish(conn, out, encode_reply, safe=True)
            self._record(conn, tap, ts, tap_id, out, decision, t0, sec.note)
        conn.execute("RELEASE tap")
        self.current_tap = None
        return decision

    def _finish(self, conn: sqlite3.Connection, out: _Outcome,
                encode_reply: Callable[[Decision], bytes] | None, safe: bool = False
                ) -> tuple[Decision, bytes]:
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
        d = Decision(out.verdict, out.reason, out.relay_ms if out.verdict == "grant" else 0,
                     out.pattern, clip_text(out.text), bal, pts, out.uses_left, out.member_id)
        reply = b""
        if encode_reply is not None:
            if safe:
                try:
                    reply = bytes(encode_reply(d))
                except Exception:  # noqa: BLE001 - the fault path must still record the tap
                    reply = b""
            else:
                reply = bytes(encode_reply(d))
        d = dataclasses.replace(d, reply=reply)
        return d, reply

    def _record(self, conn: sqlite3.Connection, tap: Tap, ts: int, tap_id: int, out: _Outcome,
                d: Decision, t0: float, security: str | None = None) -> None:
        latency_ms = (time.perf_counter() - t0) * 1000.0
        conn.execute(
            "INSERT INTO taps (id, ts, device_id, seq, uid, member_id, kind, service, amount_fen,"
            " charged_fen, points_earned, direction, offline, device_time, pass_id, verdict,"
            " reason, relay_ms, pattern, text, balance_fen, points, uses_left, reply, latency_ms,"
            " security) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (tap_id, ts, str(tap.device_id), tap.seq, str(tap.uid)[:40], d.member_id, out.kind,
             int(tap.service), int(tap.amount_fen), out.charged_fen, out.points_earned,
             tap.direction, 1 if tap.offline else 0, int(tap.device_time), out.pass_id,
             d.verdict, d.reason, d.relay_ms, d.pattern, d.text, d.balance_fen, d.points,
             d.uses_left, d.reply, latency_ms, security))

    # ------------------------------------------------------------------ rules
    def _device(self, conn: sqlite3.Connection, device_id: str) -> tuple[str, dict] | None:
        row = conn.execute("SELECT kind, settings FROM devices WHERE device_id = ?",
                           (device_id,)).fetchone()
        if row is None:
            return None
        cached = self._devices.get(device_id)
        if cached is not None and cached[0] == row[0] + row[1]:
            return cached[1]
        settings = json.loads(row[1])
        settings.setdefault("hours", "00:00-24:00")
        settings.setdefault("duplicate_window_s", 0)
        val = (row[0], settings)
        self._devices[device_id] = (row[0] + row[1], val)
        return val

    def _evaluate(self, conn: sqlite3.Connection, tap: Tap, now: datetime, ts: int,
                  tap_id: int) -> _Outcome:
        dev = self._device(conn, str(tap.device_id))
        if dev is None:
            raise _Deny("unknown_device", "Unknown reader")
        kind, settings = dev
        uid = str(tap.uid).upper()
        card = conn.execute(
            "SELECT c.status, c.expires_at, m.id, m.name, m.status, m.tier, m.birthday, "
            "m.tier_manual, m.principal_fen, m.bonus_fen, m.points, m.qualifying "
            "FROM cards c JOIN members m ON m.id = c.member_id WHERE c.uid = ?",
            (uid,)).fetchone()
        if tap.offline:
            return self._offline(conn, tap, kind, card, ts, now, tap_id)
        if card is None:
            d = _Deny("unknown_card", "Unknown card")
            d.kind = kind
            raise d
        cstatus, cexp, mid, name, mstatus, tier, birthday, manual = card[:8]
        short = (name or f"#{mid}")[:_NAME_CHARS]

        def deny(reason: str, text: str) -> _Deny:
            e = _Deny(reason, text)
            e.member_id, e.kind = mid, kind
            return e

        if cstatus == "active" and cexp and ts >= cexp:
            cstatus = "expired"
        if cstatus != "active":
            raise deny(cstatus, {"blocked": "Card blocked, see staff",
                                 "lost": "Card reported lost",
                                 "expired": "Card expired"}[cstatus])
        if mstatus != "active":
            raise deny("member_inactive", "Membership suspended")
        pending = ledger.Pending(mid, *card[8:12])
        ledger.sweep_expired(conn, ts, mid, pending=pending)
        window = int(settings.get("duplicate_window_s", 0))
        if window:
            last = conn.execute("SELECT max(ts) FROM taps WHERE member_id = ? AND ts > ? AND "
                                "device_id = ? AND verdict = 'grant' AND id NOT IN "
                                "(SELECT tap_id FROM tap_voids)",  # host/rules/voids.py
                                (mid, ts - window, tap.device_id)).fetchone()[0]
            if last is not None:
                raise deny("duplicate", "Already done, wait a moment")
        m = _Member(mid, short, tier, birthday, bool(manual), pending)
        if kind == "gate":
            out = self._gate(conn, tap, settings, m, now, ts, tap_id, deny)
        elif kind == "wash":
            out = self._wash(conn, tap, settings, m, now, ts, tap_id, deny)
        else:
            out = self._kiosk(conn, tap, settings, m, now, ts, tap_id, deny)
        out.member_id, out.kind = mid, kind
        pending.flush(conn, last_active_at=ts)
        out.balance_fen = pending.have("principal") + pending.have("bonus")
        out.points = pending.have("points")
        return out

    def _open_now(self, settings: dict, now: datetime) -> bool:
        start, end = parse_hours(settings.get("hours", "00:00-24:00"))
        minute = now.hour * 60 + now.minute
        if start < end:
            return start <= minute < end
        return minute >= start or minute < end

    def _gate(self, conn, tap, settings, m, now, ts, tap_id, deny) -> _Outcome:
        pol = self.policy
        fixed = settings.get("direction", "both")
        direction = fixed if fixed in ("in", "out") else (tap.direction or "in")
        if direction not in ("in", "out"):
            raise deny("internal", "Bad direction")
        pres = conn.execute("SELECT inside FROM presence WHERE member_id = ?",
                            (m.id,)).fetchone()
        inside = bool(pres and pres[0])
        apb = settings.get("anti_passback", True)
        if direction == "out":
            if apb and not inside:
                raise deny("passback", "Not checked in")
            self._presence(conn, m.id, 0, tap.device_id, ts)
            return _Outcome("grant", "ok", f"Goodbye {m.name}", relay_ms=pol.gate_relay_ms)
        if not self._open_now(settings, now):
            raise deny("closed", f"Closed, hours {settings.get('hours')}")
        if apb and inside:
            raise deny("passback", "Already checked in")
        out = self._pay(conn, m, "gate", pol.gate_order, pol.gate_price_fen, now, ts, tap_id,
                        deny, count_direction=True)
        self._presence(conn, m.id, 1, tap.device_id, ts)
        out.relay_ms = pol.gate_relay_ms
        out.text = f"Welcome {m.name} · {out.text}"
        return out

    def _presence(self, conn, member_id: int, inside: int, device_id: str, ts: int) -> None:
        conn.execute("INSERT INTO presence (member_id, inside, device_id, ts) VALUES (?,?,?,?) "
                     "ON CONFLICT (member_id) DO UPDATE SET inside = excluded.inside, "
                     "device_id = excluded.device_id, ts = excluded.ts",
                     (member_id, inside, device_id, ts))

    def _wash(self, conn, tap, settings, m, now, ts, tap_id, deny) -> _Outcome:
        pol = self.policy
        prog = pol.programs.get(int(tap.service))
        if prog is None:
            raise deny("bad_service", f"Unknown program {int(tap.service)}")
        if not self._open_now(settings, now):
            raise deny("closed", f"Closed, hours {settings.get('hours')}")
        out = self._pay(conn, m, f"wash:{prog.code}", pol.wash_order, prog.price_fen, now, ts,
                        tap_id, deny)
        out.relay_ms = pol.wash_relay_ms
        out.text = f"{prog.name} · {out.text}"
        return out

    def _kiosk(self, conn, tap, settings, m, now, ts, tap_id, deny) -> _Outcome:
        pol = self.policy
        amount = tap.amount_fen
        if isinstance(amount, bool) or not isinstance(amount, int) or not (
                0 < amount <= pol.kiosk_max_fen):
            raise deny("invalid_amount", "Invalid amount")
        out = self._pay(conn, m, "kiosk", ("balance",), amount, now, ts, tap_id, deny)
        out.relay_ms = pol.kiosk_relay_ms
        return out

    # ------------------------------------------------------------------ payment
    def _passes(self, conn, member_id: int, cover: str, ts: int, kind: str) -> list[tuple]:
        rows = conn.execute(
            "SELECT id, covers, ends_at, uses_left, daily_cap, discount_pct FROM passes "
            "WHERE member_id = ? AND kind = ? AND starts_at <= ? AND (ends_at = 0 OR ends_at > ?)"
            " ORDER BY created_at, id", (member_id, kind, ts, ts)).fetchall()
        return [r for r in rows if cover in json.loads(r[1])]

    def _used_today(self, conn, pass_id: int, now: datetime, count_direction: bool) -> int:
        sql = ("SELECT count(*) FROM taps WHERE pass_id = ? AND ts >= ? AND verdict = 'grant'"
               " AND id NOT IN (SELECT tap_id FROM tap_voids)")   # a voided tap used nothing
        if count_direction:
            sql += " AND coalesce(direction, 'in') <> 'out'"
        return conn.execute(sql, (pass_id, day_start(now))).fetchone()[0]

    def _pay(self, conn, m: "_Member", cover: str, order: tuple[str, ...], price_fen: int,
             now: datetime, ts: int, tap_id: int, deny, count_direction: bool = False
             ) -> _Outcome:
        """Pay for one service with the first method in ``order`` that covers it."""
        pol = self.policy
        capped = False
        short_fen = None
        for method in order:
            if method == "pass":
                for pid, _c, ends_at, _u, cap, _d in self._passes(conn, m.id, cover, ts, "time"):
                    if cap and self._used_today(conn, pid, now, count_direction) >= cap:
                        capped = True
                        continue
                    until = datetime.fromtimestamp(ends_at, now.tzinfo) - timedelta(seconds=1)
                    return _Outcome("grant", "ok", f"pass to {until:%m-%d}", pass_id=pid)
            elif method == "punch":
                for pid, _c, _e, left, cap, _d in self._passes(conn, m.id, cover, ts, "punch"):
                    if not left:
                        continue
                    if cap and self._used_today(conn, pid, now, count_direction) >= cap:
                        capped = True
                        continue
                    ledger.debit_use(conn, ts, m.id, pid, "use", tap_id=tap_id)
                    return _Outcome("grant", "ok", f"{left - 1} left", pass_id=pid,
                                    uses_left=left - 1)
            elif method == "balance" and price_fen > 0:
                tier = pol.tiers.get(m.tier) or pol.tiers[pol.default_tier]
                pay = price_fen * tier.discount_pct // 100
                disc_pid = None
                for pid, _c, _e, _u, _cap, pct in self._passes(conn, m.id, cover, ts, "discount"):
                    cand = price_fen * pct // 100
                    if cand < pay:
                        pay, disc_pid = cand, pid
                if pay <= 0:
                    return _Outcome("grant", "ok", "free", pass_id=disc_pid)
                try:
                    ledger.spend(conn, ts, m.id, pay, pol.spend_order, "spend", tap_id=tap_id,
                                 pending=m.pending)
                except InsufficientFunds:
                    short_fen = pay
                    continue
                earned = self._earn(conn, m, pay, now, ts, tap_id)
                self._qualify(conn, m, ts, tap_id=tap_id)
                bal = m.pending.have("principal") + m.pending.have("bonus")
                return _Outcome("grant", "ok", f"paid {format_fen(pay)} left {format_fen(bal)}",
                                charged_fen=pay, points_earned=earned, pass_id=disc_pid)
        if capped:
            raise deny("daily_cap", "Pass used up for today")
        if short_fen is not None:
            bal = m.pending.have("principal") + m.pending.have("bonus")
            raise deny("insufficient_balance", f"余额不足 balance {format_fen(bal)}")
        raise deny("no_pass", "No valid pass")

    def _earn(self, conn, m: "_Member", paid_fen: int, now: datetime, ts: int,
              tap_id: int | None) -> int:
        return rewards.earn(conn, self.policy, m.id, m.birthday, paid_fen, now, ts,
                            tap_id=tap_id, pending=m.pending)

    def _qualify(self, conn, m: "_Member", ts: int, **refs: Any) -> None:
        rewards.qualify(conn, self.policy, m.id, ts, pending=m.pending,
                        current=(m.tier, int(m.manual)), **refs)

    def _offline(self, conn, tap: Tap, kind: str, card, ts: int, now: datetime,
                 tap_id: int) -> _Outcome:
        """Record a tap the device already granted offline; apply a pass use if one covers
        it, never refuse it and never touch stored value."""
        out = _Outcome("grant", "offline", "Granted offline", kind=kind,
                       pattern=codes.PAT_OFFLINE_GRANT)
        if card is None:
            return out
        mid = card[2]
        out.member_id = mid
        direction = tap.direction or "in"
        cover = "gate" if kind == "gate" else f"wash:{int(tap.service)}"
        if direction == "in":
            for pid, *_ in self._passes(conn, mid, cover, ts, "time"):
                out.pass_id = pid
                break
            else:
                for pid, _c, _e, left, _cap, _d in self._passes(conn, mid, cover, ts, "punch"):
                    if left:
                        ledger.debit_use(conn, ts, mid, pid, "use_offline", tap_id=tap_id)
                        out.pass_id, out.uses_left = pid, left - 1
                        break
        if kind == "gate":
            self._presence(conn, mid, 1 if direction == "in" else 0, tap.device_id, ts)
        conn.execute("UPDATE members SET last_active_at = ? WHERE id = ?", (ts, mid))
        return out


@dataclass(frozen=True)
class _Member:
    id: int
    name: str
    tier: str
    birthday: str | None
    manual: bool
    pending: ledger.Pending
