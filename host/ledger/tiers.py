# Runs on CPython (host): member tiers — upgrade and keep (保级) rules over a rolling window, history, bonus.
"""Tier rules (policy ``tiers.<name>`` and ``[tier_rules]``).

A member's activity in a window is (purchases, spend): purchases are qualifying purchases
(taps paid from stored value and pass sales of at least ``tier_rules.min_purchase``; smaller
ones never count), spend is what those purchases paid (stored value taken by taps, less what
voids and reversals gave back; pass prices, except cancelled passes). A tier's **upgrade rule** (``upgrade_purchases`` and/or ``upgrade_spend`` within
``upgrade_window_days``; every part given must be met) moves a member up at once, crediting
``upgrade_bonus_points``. Its **keep rule** (``keep_purchases`` and/or ``keep_spend`` within
``keep_window_days``) is checked by ``evaluate`` (``tapkiosk tiers evaluate``, daily): a
member who has held the tier for a whole keep window without meeting it moves down to the
highest lower tier whose keep rule they meet (or that has none). A manual tier is never
changed. Every change is a ``tier_changes`` row (append-only history) saying why.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from host.ledger import book as ledger
from host.rules.policy import Policy, Tier

_LOG = ("INSERT INTO tier_changes (ts, member_id, old_tier, new_tier, manual, reason, op_key) "
        "VALUES (?,?,?,?,0,?,?)")


def activity(conn: sqlite3.Connection, policy: Policy, member_id: int, since: int,
             until: int) -> tuple[int, int]:
    """(qualifying purchases, spend in fen) of the member in ``since < ts <= until``. A
    reversal is the member's own row (book.reverse), so the reversed spends are looked up
    among the member's rows (the ledger_member index), not in the whole ledger: a tier
    check near a threshold took 120 ms on a 1M-row ledger."""
    n = conn.execute("SELECT coalesce(sum(delta), 0) FROM ledger WHERE member_id = ? AND "
                     "currency = 'qualifying' AND ts > ? AND ts <= ?",
                     (member_id, since, until)).fetchone()[0]
    floor = policy.tier_min_purchase_fen
    taps = conn.execute(
        "SELECT coalesce(sum(fen), 0) FROM (SELECT -sum(delta) AS fen FROM ledger WHERE "
        "member_id = ? AND ts > ? AND ts <= ? AND kind = 'spend' AND tap_id IS NOT NULL AND "
        "currency IN ('principal', 'bonus') AND id NOT IN (SELECT reverses FROM ledger WHERE "
        "member_id = ? AND reverses IS NOT NULL) GROUP BY tap_id HAVING fen >= ? AND fen > 0)",
        (member_id, since, until, member_id, floor)).fetchone()[0]
    return n, taps + _sales(conn, policy, member_id, since, until)


def _sales(conn: sqlite3.Connection, policy: Policy, member_id: int, since: int,
           until: int) -> int:
    """What the member's pass sales of at least ``tier_rules.min_purchase`` (not cancelled)
    paid in ``since < created_at <= until``."""
    return conn.execute("SELECT " + _SALES, (member_id, since, until,
                                             policy.tier_min_purchase_fen)).fetchone()[0]


#: The pass sales that count (arguments: member, since, until, the minimum purchase).
_SALES = ("(SELECT coalesce(sum(price_fen), 0) FROM passes WHERE member_id = ? AND "
          "created_at > ? AND created_at <= ? AND cancelled_at IS NULL AND price_fen >= ? AND "
          "price_fen > 0)")


def _meets(conn: sqlite3.Connection, policy: Policy, member_id: int, ts: int, purchases: int,
           spend: int, days: int) -> tuple[bool, str]:
    n, fen = activity(conn, policy, member_id, ts - days * 86400, ts)
    ok = n >= purchases and fen >= spend
    return ok, f"{n} purchases, spend {fen / 100:.2f} in {days} days"


#: (qualifying purchases, at least the taps' spend, pass sales) in ``since < ts <= until``:
#: the purchases and the sales as ``activity`` counts them; every spend row of a tap in the
#: window summed, with no reversal, grouping nor floor left out, so never less than
#: ``activity``'s tap spend. One read of the window's rows (``activity`` also reads the
#: member's every reversal). Arguments: ``_SALES``'s, then member, since, until.
_BOUND_SQL = ("SELECT coalesce(sum(CASE WHEN currency = 'qualifying' THEN delta END), 0), "
              "coalesce(-sum(CASE WHEN currency <> 'qualifying' AND delta < 0 AND "
              "kind = 'spend' AND tap_id IS NOT NULL THEN delta END), 0), " + _SALES
              + " FROM ledger WHERE member_id = ? AND currency IN ('principal', 'bonus', "
              "'qualifying') AND ts > ? AND ts <= ?")


def _cannot_meet(conn: sqlite3.Connection, policy: Policy, member_id: int, ts: int,
                 purchases: int, spend: int, days: int) -> str | None:
    """Why the member cannot meet a rule of ``purchases`` and ``spend`` in ``days`` now, from
    bounds of their activity that are cheaper to read than ``activity``; None: they may."""
    since = ts - days * 86400
    n, most, sales = conn.execute(_BOUND_SQL, (member_id, since, ts, policy.tier_min_purchase_fen,
                                               member_id, since, ts)).fetchone()
    if n < purchases:
        return f"{n} purchases in {days} days"
    if most + sales < spend:
        return f"spend at most {(most + sales) / 100:.2f} in {days} days"
    return None


def upgrade_rule_met(conn: sqlite3.Connection, policy: Policy, tier: Tier, member_id: int,
                     ts: int) -> tuple[bool, str]:
    """Whether the member meets ``tier``'s upgrade rule now, and the figures (when bounds of
    the activity already rule it out, those: a regular customer's tap, below the rule's
    spend, then costs one window read instead of ``activity``'s three)."""
    if not (tier.upgrade_purchases or tier.upgrade_spend_fen):
        return False, ""
    why = _cannot_meet(conn, policy, member_id, ts, tier.upgrade_purchases,
                       tier.upgrade_spend_fen, tier.upgrade_window_days)
    if why is not None:
        return False, why
    return _meets(conn, policy, member_id, ts, tier.upgrade_purchases, tier.upgrade_spend_fen,
                  tier.upgrade_window_days)


def keep_rule_met(conn: sqlite3.Connection, policy: Policy, tier: Tier, member_id: int,
                  ts: int) -> tuple[bool, str]:
    """Whether the member meets ``tier``'s keep rule now (True when it has none)."""
    if not (tier.keep_purchases or tier.keep_spend_fen):
        return True, "no keep rule"
    return _meets(conn, policy, member_id, ts, tier.keep_purchases, tier.keep_spend_fen,
                  tier.keep_window_days)


def change_tier(conn: sqlite3.Connection, policy: Policy, member_id: int, old: str | None,
                new: Tier, ts: int, now: datetime, reason: str, *, key: str | None = None,
                pending: ledger.Pending | None = None) -> None:
    """Set the tier, log it, and credit the new tier's upgrade bonus when it is a move up."""
    from host.ledger.rewards import points_expiry
    conn.execute("UPDATE members SET tier = ? WHERE id = ?", (new.name, member_id))
    conn.execute(_LOG, (ts, member_id, old, new.name, reason, key))
    old_tier = policy.tiers.get(old or "")
    if new.upgrade_bonus_points and (old_tier is None or old_tier.rank < new.rank):
        ledger.credit(conn, ts, member_id, "points", new.upgrade_bonus_points, "tier_bonus",
                      expires_at=points_expiry(policy, now), pending=pending, op_key=key,
                      note=f"welcome to {new.name}")


def maybe_upgrade(conn: sqlite3.Connection, policy: Policy, member_id: int, ts: int,
                  current: tuple[str, int] | None = None, *, now: datetime | None = None,
                  pending: ledger.Pending | None = None, key: str | None = None) -> str | None:
    """Move the member up to the highest tier whose upgrade rule they meet (never down,
    never a manual tier); returns the new tier or None."""
    row = current if current is not None else conn.execute(
        "SELECT tier, tier_manual FROM members WHERE id = ?", (member_id,)).fetchone()
    if row is None or row[1]:
        return None
    if pending is not None:
        pending.write_rows(conn)   # the window reads below count this tap's rows
    cur = policy.tiers.get(row[0])
    rank = cur.rank if cur else 0
    for tier in reversed(policy.tiers_by_rank()):
        if tier.rank <= rank:
            break
        ok, why = upgrade_rule_met(conn, policy, tier, member_id, ts)
        if ok:
            change_tier(conn, policy, member_id, row[0], tier, ts,
                        now or datetime.fromtimestamp(ts, policy.tz), why, key=key,
                        pending=pending)
            return tier.name
    return None


def _held_since(conn: sqlite3.Connection, member_id: int) -> int:
    row = conn.execute("SELECT max(ts) FROM tier_changes WHERE member_id = ?",
                       (member_id,)).fetchone()
    if row[0] is not None:
        return row[0]
    return conn.execute("SELECT created_at FROM members WHERE id = ?", (member_id,)).fetchone()[0]


def maybe_downgrade(conn: sqlite3.Connection, policy: Policy, member_id: int, ts: int,
                    now: datetime, key: str | None = None) -> str | None:
    """The keep rule (see the module doc); returns the new tier or None."""
    name, manual = conn.execute("SELECT tier, tier_manual FROM members WHERE id = ?",
                                (member_id,)).fetchone()
    cur = policy.tiers.get(name)
    if manual or cur is None or not (cur.keep_purchases or cur.keep_spend_fen):
        return None
    if ts - _held_since(conn, member_id) < cur.keep_window_days * 86400:
        return None      # a whole keep window has not passed since the member got the tier
    ok, why = keep_rule_met(conn, policy, cur, member_id, ts)
    if ok:
        return None
    for tier in reversed(policy.tiers_by_rank()):
        if tier.rank >= cur.rank:
            continue
        if keep_rule_met(conn, policy, tier, member_id, ts)[0]:
            change_tier(conn, policy, member_id, name, tier, ts, now,
                        f"keep rule of {name} not met: {why}", key=key)
            return tier.name
    return None


def evaluate(conn: sqlite3.Connection, policy: Policy, ts: int, now: datetime,
             key: str | None = None) -> list[dict[str, Any]]:
    """Re-evaluate every active member with an automatic tier: upgrades first, then keep
    rules. Returns one row per change. Running it twice changes nothing the second time."""
    changes = []
    for mid, old in conn.execute("SELECT id, tier FROM members WHERE status = 'active' AND "
                                 "tier_manual = 0 ORDER BY id").fetchall():
        new = maybe_upgrade(conn, policy, mid, ts, now=now, key=key)
        if new is None:
            new = maybe_downgrade(conn, policy, mid, ts, now, key=key)
        if new is not None:
            changes.append({"member_id": mid, "old_tier": old, "new_tier": new})
    return changes
