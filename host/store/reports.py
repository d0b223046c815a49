# Runs on CPython (host): operator reports (daily, taps by hour, members, devices, dormant), read-only.
"""Reports over the store. Read-only; every function returns a list of flat dicts (one per
row) so the CLI can print them as a table, JSON or CSV.

Indicators (definitions used everywhere):

- revenue: cash in (top-ups + pass sales sold for cash) minus refunds (a reversed refund
  cancels its cash out; a cancelled cash-paid pass refunds as a refund); consumption is what
  taps charged to stored value (it is not new revenue, the top-up already was);
  points_paid_fen is the part of sales paid with points (``tap_points``, voided taps left out);
  pass_sales_from_balance is stored value spent on passes, net of pass refunds to balance.
- activity rate: members with at least one granted tap in the period / all members.
- repurchase rate: members with two or more paid purchases (balance taps, pass sales) in the
  period / members with at least one.
- points redemption rate: points redeemed or converted in the period / points issued in it.
"""

from __future__ import annotations

import statistics
from datetime import date, datetime, timedelta
from typing import Any

import sqlite_utils

from host.errors import NotFound
from host.rules.policy import Policy
from host.store.day_marks import span, span_args
from protocol import codes


def _rate(num: int, den: int) -> float:
    return round(num / den, 4) if den else 0.0


def _day_bounds(day: date, policy: Policy) -> tuple[int, int]:
    start = datetime(day.year, day.month, day.day, tzinfo=policy.tz)
    end = start + timedelta(days=1)
    return int(start.timestamp()), int(end.timestamp())


# Taps a device gave up on and the host reversed (host/rules/voids.py) were neither granted nor paid.
_NOT_VOIDED = "id NOT IN (SELECT tap_id FROM tap_voids)"


def _period(db: sqlite_utils.Database, t0: int, t1: int) -> dict[str, Any]:
    q = lambda sql, *a: db.execute(sql, (t0, t1, *a)).fetchone()[0] or 0  # noqa: E731
    tw, lw = span_args(db, "taps", t0, t1), span_args(db, "ledger", t0, t1)
    qt = lambda sql: db.execute(sql, tw).fetchone()[0] or 0  # noqa: E731
    ql = lambda sql: db.execute(sql, lw).fetchone()[0] or 0  # noqa: E731
    members = db.execute("SELECT count(*) FROM members WHERE created_at < ?", (t1,)).fetchone()[0]
    active = qt(f"SELECT count(DISTINCT member_id) FROM taps WHERE {span()} "
                f"AND verdict = 'grant' AND member_id IS NOT NULL AND {_NOT_VOIDED}")
    buyers = db.execute(
        "SELECT count(*), sum(n >= 2) FROM (SELECT member_id, sum(delta) AS n FROM ledger "
        f"WHERE currency = 'qualifying' AND {span()} GROUP BY member_id HAVING n > 0)",
        lw).fetchone()
    issued = ql("SELECT sum(delta) FROM ledger WHERE currency = 'points' AND delta > 0 AND "
                f"{span()} AND kind IN ('earn', 'referral')")
    redeemed = -ql(f"SELECT sum(delta) FROM ledger WHERE currency = 'points' AND {span()} "
                   "AND kind IN ('redeem', 'convert')")
    topups = q("SELECT sum(amount_fen) FROM payments WHERE ts >= ? AND ts < ? AND kind = 'topup'")
    sales = q("SELECT sum(amount_fen) FROM payments WHERE ts >= ? AND ts < ? "
              "AND kind = 'pass_sale'")
    refunds = -q("SELECT sum(amount_fen) FROM payments WHERE ts >= ? AND ts < ? "
                 "AND kind = 'refund'")
    balance_sales = -ql(f"SELECT sum(delta) FROM ledger WHERE {span()} AND currency IN "
                        "('principal', 'bonus') AND (kind IN ('pass_sale', 'pass_refund') OR "
                        "(kind = 'reversal' AND pass_id IS NOT NULL))")
    return {
        "topups_fen": topups, "pass_sales_fen": sales, "refunds_fen": refunds,
        "revenue_fen": topups + sales - refunds,
        "consumption_fen": qt(f"SELECT sum(charged_fen) FROM taps WHERE {span()} "
                              f"AND {_NOT_VOIDED}"),
        "pass_sales_from_balance_fen": balance_sales,
        "taps": qt(f"SELECT count(*) FROM taps WHERE {span()}"),
        "granted": qt(f"SELECT count(*) FROM taps WHERE {span()} AND verdict = 'grant' "
                      f"AND {_NOT_VOIDED}"),
        "members": members, "active_members": active,
        "new_members": q("SELECT count(*) FROM members WHERE created_at >= ? AND created_at < ?"),
        "activity_rate": _rate(active, members),
        "repurchase_rate": _rate(buyers[1] or 0, buyers[0] or 0),
        "points_issued": issued, "points_redeemed": redeemed,
        "points_redemption_rate": _rate(redeemed, issued),
        "points_paid_fen": q("SELECT sum(fen) FROM tap_points WHERE ts >= ? AND ts < ? AND "
                             "tap_id NOT IN (SELECT tap_id FROM tap_voids)"),
    }


def _store_period(db: sqlite_utils.Database, t0: int, t1: int, store_id: int | None
                  ) -> dict[str, Any]:
    """What belongs to one store of a chain in ``[t0, t1)``: its readers' taps and the cash
    its counter took (payments of the store: top-ups, pass sales, refunds; ``store_id``
    None: readers in no store and cash no store took)."""
    mine = "store_id IS NULL" if store_id is None else "store_id = ?"
    on = f"device_id IN (SELECT device_id FROM devices WHERE {mine})"
    sa = () if store_id is None else (store_id,)
    tw = span_args(db, "taps", t0, t1)
    q = lambda sql, *a: db.execute(sql, (*tw, *sa, *a)).fetchone()[0] or 0  # noqa: E731
    cash = {kind: db.execute(
        f"SELECT sum(amount_fen) FROM payments WHERE ts >= ? AND ts < ? AND {mine} AND kind = ?",
        (t0, t1, *sa, kind)).fetchone()[0] or 0 for kind in ("topup", "pass_sale", "refund")}
    members = db.execute("SELECT count(*) FROM members WHERE created_at < ?", (t1,)).fetchone()[0]
    active = q(f"SELECT count(DISTINCT member_id) FROM taps WHERE {span()} AND "
               f"{on} AND verdict = 'grant' AND member_id IS NOT NULL AND {_NOT_VOIDED}")
    issued = db.execute(
        f"SELECT sum(l.delta) FROM ledger l JOIN taps t ON t.id = l.tap_id WHERE {span('l.')} "
        f"AND t.{on} AND l.currency = 'points' AND l.delta > 0 AND l.kind = 'earn'",
        (*span_args(db, "ledger", t0, t1), *sa)).fetchone()[0] or 0
    return {
        "topups_fen": cash["topup"], "pass_sales_fen": cash["pass_sale"],
        "refunds_fen": -cash["refund"],
        "revenue_fen": cash["topup"] + cash["pass_sale"] + cash["refund"],
        "consumption_fen": q(f"SELECT sum(charged_fen) FROM taps WHERE {span()} "
                             f"AND {on} AND {_NOT_VOIDED}"),
        "pass_sales_from_balance_fen": None,
        "taps": q(f"SELECT count(*) FROM taps WHERE {span()} AND {on}"),
        "granted": q(f"SELECT count(*) FROM taps WHERE {span()} AND {on} AND "
                     f"verdict = 'grant' AND {_NOT_VOIDED}"),
        "members": members, "active_members": active, "new_members": None,
        "activity_rate": _rate(active, members), "repurchase_rate": None,
        "points_issued": issued, "points_redeemed": None, "points_redemption_rate": None,
    }


def _stores(db: sqlite_utils.Database, store: str | None, breakdown: bool
            ) -> list[tuple[str, int | None]] | None:
    """The (name, id) of the stores a report is split into: ``store`` alone, or with
    ``breakdown`` every store (and ``(none)`` for readers in none) when the chain has more than
    one; None: one chain-wide row."""
    named = [(r[0], r[1]) for r in db.execute("SELECT name, id FROM stores ORDER BY name")]
    if store is not None:
        ids = [sid for name, sid in named if name == store]
        if not ids:
            raise NotFound(f"unknown store {store!r} (tapkiosk store list)")
        return [(store, ids[0])]
    if not breakdown:
        return None
    loose = db.execute("SELECT count(*) FROM devices WHERE store_id IS NULL").fetchone()[0]
    split = named + ([("(none)", None)] if loose and named else [])
    return split if len(split) > 1 else None


def daily(db: sqlite_utils.Database, policy: Policy, last_day: date, days: int = 7, *,
          store: str | None = None, breakdown: bool = False) -> list[dict[str, Any]]:
    """One row per site-local day, ``days`` days ending with ``last_day``.

    ``store``: that store's rows only (``_store_period``); ``breakdown``: in a chain of
    more than one store, each day's chain-wide row (store ``*``) is followed by one row per
    store. Rows carry a ``store`` column only when split."""
    split = _stores(db, store, breakdown)
    rows = []
    for i in range(days - 1, -1, -1):
        day = last_day - timedelta(days=i)
        t0, t1 = _day_bounds(day, policy)
        if split is None:
            rows.append({"date": day.isoformat(), **_period(db, t0, t1)})
            continue
        if store is None:
            rows.append({"date": day.isoformat(), "store": "*", **_period(db, t0, t1)})
        for name, sid in split:
            rows.append({"date": day.isoformat(), "store": name,
                         **_store_period(db, t0, t1, sid)})
    return rows


#: Seconds per bucket of :func:`taps_by_hour`: every time zone's offset is a multiple of it.
_QUARTER_S = 900


def taps_by_hour(db: sqlite_utils.Database, policy: Policy, last_day: date, days: int = 7,
                 *, store: str | None = None) -> list[dict[str, Any]]:
    """24 rows, one per site-local hour of the day (0-23): the taps (all, as ``daily``
    counts them) and the granted ones (voided taps excluded) over the ``days`` site-local
    days ending with ``last_day``. The SQL groups by quarter-hour (integer division of the
    stored seconds, no date functions) and each quarter is placed in its local hour here, so
    a daylight-saving change or a half-hour offset lands every tap in the right hour.
    ``store``: the taps of that store's readers only."""
    t0 = _day_bounds(last_day - timedelta(days=days - 1), policy)[0]
    t1 = _day_bounds(last_day, policy)[1]
    on, sa = "", ()
    if store is not None:
        on, sa = ("AND device_id IN (SELECT device_id FROM devices WHERE store_id = ?) ",
                  (_stores(db, store, False)[0][1],))
    rows = [{"hour": h, "taps": 0, "granted": 0} for h in range(24)]
    for quarter, taps, granted in db.execute(
            f"SELECT ts / {_QUARTER_S}, count(*), coalesce(sum(CASE WHEN verdict = 'grant' AND "
            f"{_NOT_VOIDED} THEN 1 ELSE 0 END), 0) FROM taps WHERE {span()} {on}"
            f"GROUP BY ts / {_QUARTER_S}", (*span_args(db, "taps", t0, t1), *sa)):
        row = rows[datetime.fromtimestamp(quarter * _QUARTER_S, policy.tz).hour]
        row["taps"] += taps
        row["granted"] += granted
    return rows


def members(db: sqlite_utils.Database, policy: Policy, now: datetime, days: int = 30
            ) -> list[dict[str, Any]]:
    """One row per tier plus a ``total`` row: members, stored-value liability (principal,
    bonus), points outstanding, and the indicators over the last ``days`` days."""
    t1 = int(now.timestamp())
    t0 = t1 - days * 86400
    rows = []
    tw, lw = span_args(db, "taps", t0, t1), span_args(db, "ledger", t0, t1)
    tiers = [t.name for t in policy.tiers_by_rank()]
    extra = [r[0] for r in db.execute("SELECT DISTINCT tier FROM members") if r[0] not in tiers]
    for tier in tiers + extra + [None]:
        where, args = ("WHERE tier = ?", (tier,)) if tier else ("", ())
        n, p, b, pts = db.execute(
            f"SELECT count(*), coalesce(sum(principal_fen), 0), coalesce(sum(bonus_fen), 0), "
            f"coalesce(sum(points), 0) FROM members {where}", args).fetchone()
        active = db.execute(
            f"SELECT count(DISTINCT t.member_id) FROM taps t JOIN members m ON m.id = t.member_id"
            f" WHERE {span('t.')} AND t.verdict = 'grant' AND t.{_NOT_VOIDED} "
            f"{'AND m.tier = ?' if tier else ''}", (*tw, *args)).fetchone()[0]
        buyers = db.execute(
            f"SELECT count(*), sum(n >= 2) FROM (SELECT l.member_id, sum(l.delta) AS n FROM "
            f"ledger l JOIN members m ON m.id = l.member_id WHERE l.currency = 'qualifying' AND "
            f"{span('l.')} {'AND m.tier = ?' if tier else ''} GROUP BY l.member_id "
            f"HAVING n > 0)", (*lw, *args)).fetchone()
        rows.append({"tier": tier or "total", "members": n, "principal_fen": p, "bonus_fen": b,
                     "points_outstanding": pts, "active_members": active,
                     "activity_rate": _rate(active, n),
                     "repurchase_rate": _rate(buyers[1] or 0, buyers[0] or 0)})
    total = rows[-1]
    issued = db.execute("SELECT coalesce(sum(delta), 0) FROM ledger WHERE currency = 'points' "
                        "AND kind IN ('earn', 'referral')").fetchone()[0]
    redeemed = -db.execute("SELECT coalesce(sum(delta), 0) FROM ledger WHERE currency = 'points'"
                           " AND kind IN ('redeem', 'convert')").fetchone()[0]
    total["points_redemption_rate"] = _rate(redeemed, issued)
    return rows


def devices(db: sqlite_utils.Database, policy: Policy, now: datetime, days: int = 1, *,
            store: str | None = None) -> list[dict[str, Any]]:
    """One row per device: state, taps/grants/denies over the last ``days`` days, the most
    frequent deny reason, the engine latency (p50/p99 ms, commit excluded) and its health
    (``_health``: refusals by cause, last error, last boot, reader faults). ``store``: the
    devices of that store only (a ``store`` column is there whenever the chain has stores)."""
    t0 = int(now.timestamp()) - days * 86400
    tw = span_args(db, "taps", t0)
    rows = []
    named = db.execute("SELECT count(*) FROM stores").fetchone()[0]
    where, args = "", ()
    if store is not None:
        split = _stores(db, store, False)
        where, args = "WHERE d.store_id = ?", (split[0][1],)
    for dev in db.execute("SELECT d.device_id, d.kind, d.online, d.last_seen, d.fw, s.name "
                          "FROM devices d LEFT JOIN stores s ON s.id = d.store_id "
                          f"{where} ORDER BY d.device_id", args).fetchall():
        did = dev[0]
        taps, granted, charged = db.execute(
            f"SELECT count(*), coalesce(sum(verdict = 'grant' AND {_NOT_VOIDED}), 0), "
            f"coalesce(sum(CASE WHEN {_NOT_VOIDED} THEN charged_fen ELSE 0 END), 0)"
            f" FROM taps WHERE {span()} AND device_id = ?", (*tw, did)).fetchone()
        top = db.execute(f"SELECT reason, count(*) AS n FROM taps WHERE {span()} AND "
                         "device_id = ? AND verdict = 'deny' GROUP BY reason ORDER BY n DESC "
                         "LIMIT 1", (*tw, did)).fetchone()
        lat = [r[0] for r in db.execute(f"SELECT latency_ms FROM taps WHERE {span()} AND "
                                        "device_id = ? AND latency_ms IS NOT NULL", (*tw, did))]
        p50 = round(statistics.median(lat), 3) if lat else None
        p99 = round(sorted(lat)[min(len(lat) - 1, int(len(lat) * 0.99))], 3) if lat else None
        rows.append({"device_id": did, **({"store": dev[5] or "(none)"} if named else {}),
                     "kind": dev[1], "online": bool(dev[2]),
                     "last_seen": dev[3], "fw": dev[4], "taps": taps, "granted": granted,
                     "denied": taps - granted, "charged_fen": charged,
                     "top_deny_reason": top[0] if top else "", "latency_p50_ms": p50,
                     "latency_p99_ms": p99, **_health(db, did, t0)})
    return rows


def _health(db: sqlite_utils.Database, device_id: str, t0: int) -> dict[str, Any]:
    """A reader's health: frames the daemon refused by cause (all time, most first, e.g.
    ``bad_mac:3 replay:1``), its last error, when it last booted (``booted_at``) and the reader (PN532)
    faults it reported since ``t0``."""
    refused = db.execute("SELECT cause, count FROM device_refusals WHERE device_id = ? AND "
                         "count > 0 ORDER BY count DESC, cause", (device_id,)).fetchall()
    err = db.execute("SELECT last_error, last_error_at FROM devices WHERE device_id = ?",
                     (device_id,)).fetchone()
    boot = db.execute("SELECT max(ts) FROM device_events WHERE device_id = ? AND code = ?",
                      (device_id, codes.EV_BOOT)).fetchone()[0]
    faults = db.execute("SELECT count(*) FROM device_events WHERE device_id = ? AND code = ? "
                        "AND ts >= ?", (device_id, codes.EV_READER_FAULT, t0)).fetchone()[0]
    return {"refusals": " ".join(f"{c}:{n}" for c, n in refused),
            "last_error": err[0] or "", "last_error_at": err[1], "booted_at": boot,
            "reader_faults": faults}


def dormant(db: sqlite_utils.Database, policy: Policy, now: datetime, days: int | None = None
            ) -> list[dict[str, Any]]:
    """Active members with no tap, top-up or purchase for ``days`` days (default: the
    policy's ``dormant.days``), most valuable first (balance, then points)."""
    days = policy.dormant_days if days is None else days
    cutoff = int(now.timestamp()) - days * 86400
    rows = []
    for r in db.execute(
            "SELECT id, name, tier, principal_fen + bonus_fen, points, "
            "coalesce(last_active_at, created_at) AS last FROM members WHERE status = 'active' "
            "AND coalesce(last_active_at, created_at) < ? ORDER BY 4 DESC, 5 DESC, id",
            (cutoff,)):
        rows.append({"member_id": r[0], "name": r[1], "tier": r[2], "balance_fen": r[3],
                     "points": r[4], "last_active": datetime.fromtimestamp(r[5], policy.tz)
                     .date().isoformat(), "days_idle": (int(now.timestamp()) - r[5]) // 86400})
    return rows

