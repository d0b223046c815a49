# Runs on CPython (host): campaigns — date-ranged overrides of points, prices, the top-up ladder and coupons.
"""What the campaigns of the policy (``[campaigns.<name>]``) change while they are on.

A campaign is on from ``starts`` to ``ends`` inclusive (site dates) for its ``kinds``
(``gate``, ``wash``, ``kiosk`` taps, ``topup``, ``pass`` sales). When several are on for the
same kind: the largest points multiplier and the largest extra discount apply; the top-up
ladder is the first (by name) campaign's that has one; each campaign with a ``coupon``
issues it once per member, at their first purchase of that kind while it is on. The points
multiplier multiplies the birthday / member-day one; the extra discount comes off the member
price (tier or discount card) before coupons.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from host.ledger import coupons
from host.rules.policy import Campaign, Policy


def active(policy: Policy, now: datetime, kind: str) -> list[Campaign]:
    """The campaigns on at ``now`` (site date) for ``kind``, by name."""
    today = now.date()
    return [c for _, c in sorted(policy.campaigns.items())
            if kind in c.kinds and c.starts <= today <= c.ends]


def points_multiplier(policy: Policy, now: datetime, kind: str | None) -> int:
    """The campaign points multiplier for ``kind`` (1 when none is on)."""
    if kind is None or not policy.campaigns:
        return 1
    return max((c.points_multiplier for c in active(policy, now, kind)), default=1)


def extra_discount_pct(policy: Policy, now: datetime, kind: str) -> int:
    """The campaign discount in percent for ``kind`` (0 when none is on)."""
    if not policy.campaigns:
        return 0
    return max((c.extra_discount_pct for c in active(policy, now, kind)), default=0)


def ladder(policy: Policy, now: datetime) -> tuple[tuple[int, int], ...]:
    """The top-up ladder in force: a top-up campaign's, else the site's."""
    for c in active(policy, now, "topup") if policy.campaigns else ():
        if c.ladder:
            return c.ladder
    return policy.ladder


def issue_coupons(conn: sqlite3.Connection, policy: Policy, member_id: int, now: datetime,
                  ts: int, kind: str, key: str | None = None) -> list[int]:
    """Issue each on campaign's coupon to the member once; the new coupon ids."""
    out = []
    for c in active(policy, now, kind) if policy.campaigns else ():
        if c.coupon:
            cid = coupons.issue(conn, member_id, policy.coupon_templates[c.coupon], ts,
                                "campaign", c.name, key)
            if cid is not None:
                out.append(cid)
    return out


def describe(policy: Policy, now: datetime) -> list[dict]:
    """Every campaign of the policy by name, with its window and whether it is on today
    (site date) — what the API's /v1/campaigns and the console's campaigns page show."""
    today = now.date()
    return [{"name": c.name, "starts": c.starts.isoformat(), "ends": c.ends.isoformat(),
             "kinds": list(c.kinds), "active": c.starts <= today <= c.ends,
             "points_multiplier": c.points_multiplier,
             "extra_discount_pct": c.extra_discount_pct,
             "ladder": [{"min_fen": m, "bonus_fen": b} for m, b in c.ladder],
             "coupon": c.coupon or None}
            for _, c in sorted(policy.campaigns.items())]
