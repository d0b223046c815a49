# Runs on CPython (host): membership-programme reports — spend, top spenders, birthdays, referrals, coupons, campaigns.
"""Reports of the membership programme, read-only; each returns flat dicts (table, JSON or
CSV in the CLI).

Definitions:

- a purchase is a tap paid from stored value (what it took, less voids and reversals) or a
  pass sale (its price; cancelled passes left out); spend is their sum;
- average spend = spend / members who bought; average ticket = spend / purchases;
- repurchase cycle = the median of the days between a member's consecutive purchases, over
  every member with two or more in the period;
- referral rate = new members who came with a referrer / new members;
- member share of sales = purchases by members / all recorded sales (taps with no member
  count as non-member sales);
- campaign uplift = during / before - 1, over as many days just before the campaign.
"""

from __future__ import annotations

import statistics
from datetime import date, datetime, timedelta
from typing import Any

import sqlite_utils

from host.privacy.record import personal_fields
from host.privacy.vault import vault_for
from host.rules.policy import Policy
from host.store.day_marks import span, span_args
from host.store.reports import _NOT_VOIDED, _day_bounds, _rate


def referrals(db: sqlite_utils.Database, policy: Policy, now: datetime, days: int | None = None
              ) -> list[dict[str, Any]]:
    """One row per referrer (most referred first): members referred (in the last ``days``
    days when given), how many of them qualified (made the purchase that pays the reward),
    and the points and bonus the referrer got for it."""
    since = int(now.timestamp()) - days * 86400 if days else 0
    rows = []
    for r in db.execute(
            "SELECT m.referrer_id, (SELECT name FROM members WHERE id = m.referrer_id), "
            "count(*), coalesce(sum(m.referral_paid), 0) FROM members m WHERE m.referrer_id "
            "IS NOT NULL AND m.created_at >= ? GROUP BY m.referrer_id ORDER BY 3 DESC, 1",
            (since,)).fetchall():
        pts, bonus = db.execute(
            "SELECT coalesce(sum(CASE WHEN currency = 'points' THEN delta END), 0), "
            "coalesce(sum(CASE WHEN currency = 'bonus' THEN delta END), 0) FROM ledger "
            "WHERE member_id = ? AND kind = 'referral' AND ts >= ?", (r[0], since)).fetchone()
        rows.append({"referrer_id": r[0], "name": r[1], "referred": r[2], "qualified": r[3],
                     "qualified_rate": _rate(r[3], r[2]), "points_paid": pts,
                     "bonus_paid_fen": bonus})
    return rows


def coupons(db: sqlite_utils.Database, policy: Policy, now: datetime, days: int | None = None
            ) -> list[dict[str, Any]]:
    """One row per coupon template and source: issued (in the last ``days`` days when
    given), redeemed (net of voids), the saving given, and the redemption rate."""
    since = int(now.timestamp()) - days * 86400 if days else 0
    rows = []
    for tpl, source, issued, used, saved in db.execute(
            "SELECT template, source, count(*), coalesce(sum(n > 0), 0), coalesce(sum(saved), 0)"
            " FROM (SELECT c.template, c.source, (SELECT coalesce(sum(CASE event WHEN 'redeem' "
            "THEN 1 ELSE -1 END), 0) FROM coupon_events e WHERE e.coupon_id = c.id) AS n, "
            "(SELECT coalesce(sum(CASE event WHEN 'redeem' THEN saved_fen ELSE -saved_fen END), "
            "0) FROM coupon_events e WHERE e.coupon_id = c.id) AS saved FROM coupons c "
            "WHERE c.issued_at >= ?) GROUP BY template, source ORDER BY template, source",
            (since,)).fetchall():
        rows.append({"template": tpl, "source": source, "issued": issued, "redeemed": used,
                     "redemption_rate": _rate(used, issued), "saved_fen": saved})
    return rows


def _uplift(during: int, before: int) -> float | None:
    return round(during / before - 1, 4) if before else None


def campaigns(db: sqlite_utils.Database, policy: Policy, now: datetime
              ) -> list[dict[str, Any]]:
    """One row per campaign of the policy that has started: granted taps and their spend on
    the campaign's device kinds, and top-ups when it covers them, during the campaign (up
    to today) and in as many days just before it; uplift = during / before - 1 (None when
    nothing happened before)."""
    rows = []
    for name, c in sorted(policy.campaigns.items()):
        if c.starts > now.date():
            continue
        last = min(c.ends, now.date())
        t0, _ = _day_bounds(c.starts, policy)
        _, t1 = _day_bounds(last, policy)
        b0 = t0 - (t1 - t0)
        kinds = [k for k in c.kinds if k in ("gate", "wash", "kiosk")] or ["-"]
        marks = ",".join("?" * len(kinds))

        def taps(a: int, b: int) -> tuple[int, int]:
            return db.execute(
                f"SELECT count(*), coalesce(sum(charged_fen), 0) FROM taps WHERE {span()} AND "
                f"verdict = 'grant' AND kind IN ({marks}) AND {_NOT_VOIDED}",
                (*span_args(db, "taps", a, b), *kinds)).fetchone()

        def topups(a: int, b: int) -> int:
            if "topup" not in c.kinds:
                return 0
            return db.execute("SELECT coalesce(sum(amount_fen), 0) FROM payments WHERE ts >= ? "
                              "AND ts < ? AND kind = 'topup'", (a, b)).fetchone()[0]

        (n1, s1), (n0, s0) = taps(t0, t1), taps(b0, t0)
        u1, u0 = topups(t0, t1), topups(b0, t0)
        rows.append({"campaign": name, "starts": c.starts.isoformat(),
                     "ends": c.ends.isoformat(), "taps_before": n0, "taps_during": n1,
                     "taps_uplift": _uplift(n1, n0), "spend_before_fen": s0,
                     "spend_during_fen": s1, "spend_uplift": _uplift(s1, s0),
                     "topups_before_fen": u0, "topups_during_fen": u1,
                     "topups_uplift": _uplift(u1, u0)})
    return rows



def _purchases(db: sqlite_utils.Database, t0: int, t1: int) -> list[tuple[int, int, int]]:
    """(member_id, ts, fen) of every purchase in ``t0 <= ts < t1`` (module doc)."""
    taps = db.execute(
        "SELECT min(member_id), min(ts), -sum(delta) FROM ledger WHERE kind = 'spend' AND tap_id IS "
        f"NOT NULL AND currency IN ('principal', 'bonus') AND {span()} AND id NOT IN "
        "(SELECT reverses FROM ledger WHERE reverses IS NOT NULL) GROUP BY tap_id",
        span_args(db, "ledger", t0, t1)).fetchall()
    sales = db.execute("SELECT member_id, created_at, price_fen FROM passes WHERE created_at >= ?"
                       " AND created_at < ? AND cancelled_at IS NULL AND price_fen > 0",
                       (t0, t1)).fetchall()
    return sorted([r for r in taps + sales if r[2] > 0], key=lambda r: (r[0], r[1]))


def _window(now: datetime, days: int) -> tuple[int, int]:
    """The last ``days`` days up to and including ``now``'s second."""
    t1 = int(now.timestamp()) + 1
    return t1 - days * 86400, t1


def spend(db: sqlite_utils.Database, policy: Policy, now: datetime, days: int = 30
          ) -> list[dict[str, Any]]:
    """One row over the last ``days`` days: buyers, purchases, spend, average spend and
    ticket, repurchase cycle, referral rate and member share of sales (module doc)."""
    t0, t1 = _window(now, days)
    rows = _purchases(db, t0, t1)
    by_member: dict[int, list[int]] = {}
    for mid, ts, _ in rows:
        by_member.setdefault(mid, []).append(ts)
    gaps = [(b - a) / 86400 for tss in by_member.values() for a, b in zip(tss, tss[1:])]
    cycles = [statistics.median(g) for g in
              ([(b - a) / 86400 for a, b in zip(t, t[1:])] for t in by_member.values()) if g]
    total = sum(r[2] for r in rows)
    new, referred = db.execute("SELECT count(*), count(referrer_id) FROM members WHERE "
                               "created_at >= ? AND created_at < ?", (t0, t1)).fetchone()
    anonymous = db.execute(f"SELECT coalesce(sum(charged_fen), 0) FROM taps WHERE {span()} "
                           f"AND member_id IS NULL AND {_NOT_VOIDED}",
                           span_args(db, "taps", t0, t1)).fetchone()[0]
    return [{"days": days, "buyers": len(by_member), "purchases": len(rows), "spend_fen": total,
             "avg_spend_fen": total // len(by_member) if by_member else 0,
             "avg_ticket_fen": total // len(rows) if rows else 0,
             "repurchase_cycle_days": round(statistics.median(cycles), 1) if cycles else None,
             "repeat_gaps": len(gaps), "new_members": new, "referred_members": referred,
             "referral_rate": _rate(referred, new),
             "member_share_of_sales": _rate(total, total + anonymous)}]


def top_spenders(db: sqlite_utils.Database, policy: Policy, now: datetime, days: int = 30,
                 limit: int = 10) -> list[dict[str, Any]]:
    """The members who spent most in the last ``days`` days."""
    t0, t1 = _window(now, days)
    agg: dict[int, list[int]] = {}
    for mid, ts, fen in _purchases(db, t0, t1):
        a = agg.setdefault(mid, [0, 0, 0])
        a[0], a[1], a[2] = a[0] + 1, a[1] + fen, max(a[2], ts)
    out = []
    for mid, (n, fen, last) in sorted(agg.items(), key=lambda kv: (-kv[1][1], kv[0]))[:limit]:
        name, tier = db.execute("SELECT name, tier FROM members WHERE id = ?", (mid,)).fetchone()
        out.append({"member_id": mid, "name": name, "tier": tier, "purchases": n,
                    "spend_fen": fen, "avg_ticket_fen": fen // n, "last_purchase_at": last})
    return out


def _window_months(today: date, days: int) -> set[int]:
    return {(today + timedelta(days=i)).month for i in range(0, min(days, 366), 28)} | {
        (today + timedelta(days=max(days - 1, 0))).month}


def birthdays(db: sqlite_utils.Database, policy: Policy, now: datetime, days: int = 14
              ) -> list[dict[str, Any]]:
    """Active members whose birthday falls in the next ``days`` days (today included),
    soonest first, by masked name. The day is sealed: the records of the members born in the
    months of the window (``birth_month`` in clear) are opened through the vault, here in the
    report and nowhere else; names stay masked."""
    today = now.date()
    months = _window_months(today, days)
    rows = db.execute("SELECT id, name, tier, personal, birthday, birth_month FROM members "
                      "WHERE status = 'active' AND (birth_month IS NOT NULL OR birthday IS "
                      "NOT NULL)").fetchall()
    rows = [r for r in rows if r[5] is None or r[5] in months]
    vault = vault_for(db) if any(r[3] is not None for r in rows) else None
    out = []
    for mid, name, tier, blob, plain, _ in rows:
        bday = personal_fields(vault, mid, {"personal": blob, "birthday": plain})["birthday"]
        if not bday:
            continue
        for year in (today.year, today.year + 1):
            try:
                d = date(year, int(bday[:2]), int(bday[3:]))
            except ValueError:
                d = date(year, 2, 28)
            if d >= today:
                break
        if (d - today).days < days:
            out.append({"member_id": mid, "name": name, "tier": tier, "birthday": bday,
                        "date": d.isoformat(), "in_days": (d - today).days})
    return sorted(out, key=lambda r: (r["in_days"], r["member_id"]))
