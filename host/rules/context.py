# Runs on CPython (host): what a rule sees of one tap (TapContext) and what it answers (Outcome, Denied).
"""The values passed between the engine and its rule modules.

The engine builds one :class:`TapContext` per tap (the tap, the device's kind and settings,
the member, the site time) and hands it to the rule of the device's kind
(``host.rules.gate``, ``wash``, ``kiosk``), which returns an :class:`Outcome` or raises
:class:`Denied` (nothing of the tap is written then).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from host.ledger.book import Pending
from host.rules.policy import Policy
from host.store.devices import parse_hours
from protocol import codes

#: Most characters of a member's name shown on a device.
NAME_CHARS = 10


class Denied(Exception):
    """A rule refuses the tap: ``reason`` (``protocol.codes.REASONS``) and the text shown."""

    def __init__(self, reason: str, text: str, member_id: int | None = None,
                 kind: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.text = text
        self.member_id = member_id
        self.kind = kind


@dataclass(slots=True)
class Outcome:
    """The result of a rule, before it becomes a Decision and a ``taps`` row."""

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
    #: Points that paid part of the price, and the fen they paid (host/rules/pay_points.py).
    points_paid: int = 0
    points_paid_fen: int = 0


class CardRow(NamedTuple):
    """A card and its member, as the engine reads them for a tap (``CARD_COLS`` over
    ``CARD_JOIN``, in the engine's one head read)."""

    status: str
    expires_at: int | None
    member_id: int
    name: str | None
    member_status: str
    tier: str
    birthday: str | None
    tier_manual: int
    principal_fen: int
    bonus_fen: int
    points: int
    qualifying: int
    #: The secure-card columns ``host.secure.check.check_tap`` needs.
    secure: int
    key_version: int | None
    sun_counter: int | None
    #: 1 when a lot of the member expired by ``ts`` still holds something (sweep it).
    expiring: int
    #: 1 when the member has a pass not ended at ``ts`` (else no pass query is needed).
    passes: int
    #: 1 when the member has a coupon still valid at ``ts`` (else no coupon query).
    coupons: int
    #: The id of the member's points lot expiring when points earned now expire (the head
    #: read's ``points_expiry`` argument); None: no such lot yet.
    points_lot: int | None = None
    #: The member's bonus lot a spend takes from first (id, remaining, expires_at; None:
    #: no bonus): ``host.ledger.book.debit`` takes it without reading the lots again.
    bonus_lot: int | None = None
    bonus_remaining: int | None = None
    bonus_expires_at: int | None = None

    def secure_row(self) -> tuple[int, int, int | None, int | None]:
        """(member_id, secure, key_version, sun_counter) for ``check_tap``."""
        return self.member_id, self.secure, self.key_version, self.sun_counter


#: The columns of a ``CardRow`` (arguments ``ts, ts, ts, points_expiry``) over ``CARD_JOIN``
#: (argument ``uid``), read by the engine's head query (host/rules/engine.py); all NULL: no
#: such card.
CARD_COLS = ("c.status, c.expires_at, m.id, m.name, m.status, m.tier, "
             "substr('0' || m.birth_month, -2), m.tier_manual, m.principal_fen, m.bonus_fen, "
             "m.points, m.qualifying, c.secure, c.key_version, c.sun_counter, "
             "EXISTS (SELECT 1 FROM lots l WHERE l.member_id = m.id AND l.currency IN ('bonus', "
             "'points') AND l.expires_at > 0 AND l.expires_at <= ? AND l.remaining > 0), "
             "EXISTS (SELECT 1 FROM passes p WHERE p.member_id = m.id "
             "AND (p.ends_at = 0 OR p.ends_at > ?)), "
             "EXISTS (SELECT 1 FROM coupons k WHERE k.member_id = m.id AND k.valid_until > ?), "
             "(SELECT l.id FROM lots l WHERE l.member_id = m.id AND l.currency = 'points' "
             "AND l.expires_at = ?), b.id, b.remaining, b.expires_at")
#: The bonus lot (``b``) is the first of ``book.debit``'s order: the soonest expiry, else the
#: lot that never expires; two index seeks with no sort (about 1 us, against 5 for reading
#: the lots in the spend).
CARD_JOIN = ("LEFT JOIN cards c ON c.uid = ? LEFT JOIN members m ON m.id = c.member_id "
             "LEFT JOIN lots b ON m.bonus_fen > 0 AND b.id = coalesce((SELECT l.id FROM lots l "
             "WHERE l.member_id = m.id AND l.currency = 'bonus' AND l.expires_at > 0 AND "
             "l.remaining > 0 ORDER BY l.expires_at LIMIT 1), (SELECT l.id FROM lots l "
             "WHERE l.member_id = m.id AND l.currency = 'bonus' AND l.expires_at = 0 AND "
             "l.remaining > 0))")


@dataclass(slots=True)
class Member:
    """The member a tap is decided for; ``pending`` holds their projection changes."""

    id: int
    name: str
    tier: str
    birthday: str | None
    manual: bool
    pending: Pending
    #: False when the member has no pass (or coupon) that could apply: rules skip the query.
    passes: bool = True
    coupons: bool = True

    @classmethod
    def from_card(cls, card: CardRow, points_expiry: int | None = None) -> "Member":
        """The member of ``card``; ``points_expiry``: the head read's argument, whose lot
        (``card.points_lot``) the pending changes then know."""
        pending = Pending(card.member_id, card.principal_fen, card.bonus_fen, card.points,
                          card.qualifying)
        if card.points_lot is not None and points_expiry is not None:
            pending.lots[("points", points_expiry)] = card.points_lot
        if card.bonus_lot is not None and not card.expiring:   # an expired lot sorts first
            pending.first["bonus"] = (card.bonus_lot, card.bonus_remaining,
                                      card.bonus_expires_at)
        return cls(card.member_id, (card.name or f"#{card.member_id}")[:NAME_CHARS], card.tier,
                   card.birthday, bool(card.tier_manual), pending, bool(card.passes),
                   bool(card.coupons))

    def balance_fen(self) -> int:
        """Stored value (principal + bonus) including pending changes."""
        now = self.pending.now
        return now["principal"] + now["bonus"]


@dataclass(slots=True)
class TapContext:
    """Everything a rule needs to decide one tap, inside the engine's transaction."""

    conn: sqlite3.Connection
    policy: Policy
    tap: Any              # host.rules.engine.Tap
    kind: str
    settings: dict[str, Any]
    member: Member
    now: datetime
    ts: int
    tap_id: int
    #: The reader's armed sale (host/rules/sales.py), None when there is none.
    sale: Any = None
    #: The opening hours of the reader's store (policy ``[stores.NAME]``), None: no store
    #: hours (a single-store site, or a kind the store exempts).
    store_hours: str | None = None

    def deny(self, reason: str, text: str) -> Denied:
        """A Denied for this tap's member and device kind (to ``raise``)."""
        return Denied(reason, text, self.member.id, self.kind)

    def open_now(self) -> bool:
        """Whether ``now`` is within the device's opening hours and its store's."""
        return self.store_open() and within(self.settings.get("hours", "00:00-24:00"),
                                             self.now)

    def store_open(self) -> bool:
        """Whether ``now`` is within the opening hours of the reader's store (always true
        without store hours)."""
        return self.store_hours is None or within(self.store_hours, self.now)

    def closed(self) -> Denied:
        """The deny for a tap outside opening hours (the store's when those are the cause)."""
        hours = self.settings.get("hours") if self.store_open() else self.store_hours
        return self.deny("closed", f"Closed, hours {hours}")


def within(hours: str, now: datetime) -> bool:
    """Whether ``now`` (local time) is within ``hours`` ("HH:MM-HH:MM", may wrap midnight)."""
    start, end = parse_hours(hours)
    minute = now.hour * 60 + now.minute
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end
