# Runs on CPython (host): sales armed on a kiosk or wash reader — arm, cancel, expire, and the tap that pays one.
"""Sales (issue #13; ``docs/integrators.md``, "Build a kiosk").

A sale is a row of ``sales``: an amount in fen (a typed amount, or the sum of products of the
policy's catalogue, or a wash program's price), the reader it is armed on, an expiry. The
API arms it (:func:`arm`, idempotent with the request's key); the daemon shows it on the
reader (a SALE frame); the reader's next tap pays it in the SAME transaction as the tap:
the engine calls :func:`for_tap` before the rules and :func:`settle` after them, so a sale
is charged at most once and an expired or cancelled one never.

States: ``armed`` -> ``paid`` | ``denied`` (the tap was refused: its reason is kept) |
``cancelled`` (:func:`cancel`) | ``expired`` (:func:`expire`, or found past ``expires_at``
by a tap). At most one armed sale per reader (a unique index; a second arm is ``Conflict``).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from host.errors import Conflict, InputError, NotFound
from host.ledger import idempotent
from host.money import format_fen
from host.rules.policy import Policy
from host.store.stores import device_store

#: Seconds a sale stays armed when the request names no timeout.
DEFAULT_TIMEOUT_S = 60
MAX_TIMEOUT_S = 3600
#: Device kinds a sale can be armed on.
SALE_KINDS = ("kiosk", "wash")
STATES = ("armed", "paid", "cancelled", "expired", "denied")

_COLS = ("id", "device_id", "amount_fen", "service", "items", "text", "state", "created_at",
         "expires_at", "settled_at", "tap_id", "reason", "result", "actor", "points")


@dataclass(frozen=True)
class Sale:
    """An armed sale as the engine reads it."""

    id: int
    amount_fen: int
    service: int
    #: Points asked to pay part of it: 0 none, -1 as many as allowed, N (host/rules/pay_points.py).
    points: int = 0


def sale_text(amount_fen: int, label: str = "") -> str:
    """What the reader shows: ``Pay 24.00 请刷卡`` (with the program or product first)."""
    head = f"{label} " if label else ""
    return f"{head}Pay {format_fen(amount_fen)} 请刷卡"[:60]


def price(policy: Policy, kind: str, *, amount_fen: int | None, items: list[dict[str, Any]],
          service: int) -> tuple[int, list[dict[str, Any]], int, str]:
    """(amount_fen, priced items, service, label) of a sale request; InputError when the
    request is not exactly one of an amount, a product list or (wash) a program."""
    given = [x for x in (amount_fen is not None, bool(items), bool(service)) if x]
    if len(given) != 1:
        raise InputError("a sale needs exactly one of amount_fen, items or service")
    if service:
        if kind != "wash":
            raise InputError("service (a wash program) is for wash readers")
        prog = policy.programs.get(service)
        if prog is None:
            raise InputError(f"unknown wash program {service}")
        return prog.price_fen, [], service, prog.name
    if amount_fen is not None:
        if kind != "kiosk":
            raise InputError("a wash reader sells programs: give service")
        if not 0 < amount_fen <= policy.kiosk_max_fen:
            raise InputError(f"amount_fen must be 1..{policy.kiosk_max_fen}")
        return amount_fen, [], 0, ""
    priced, total = [], 0
    for it in items:
        prod = policy.products.get(str(it.get("product")))
        qty = it.get("qty", 1)
        if prod is None or kind not in prod.kinds:
            raise InputError(f"unknown product {it.get('product')!r} for a {kind} reader")
        if isinstance(qty, bool) or not isinstance(qty, int) or not 1 <= qty <= 99:
            raise InputError("qty must be 1..99")
        priced.append({"product": prod.id, "name": prod.name, "qty": qty,
                       "price_fen": prod.price_fen})
        total += prod.price_fen * qty
    if not 0 < total <= policy.kiosk_max_fen:
        raise InputError(f"sale total must be 1..{policy.kiosk_max_fen} fen")
    label = priced[0]["name"] if len(priced) == 1 and priced[0]["qty"] == 1 else ""
    return total, priced, 0, label


def points_request(policy: Policy, kind: str, points: str | int | None) -> int:
    """A sale's ``points`` field as stored: 0 (None: no points), -1 (``"max"``) or a number
    of points; InputError when paying with points is off for ``kind`` or the number is below
    the policy's ``min_points``."""
    if points is None:
        return 0
    pp = policy.points_payment
    if not pp.enabled or kind not in pp.kinds:
        raise InputError(f"paying with points is not on for {kind} readers (policy "
                         "points_payment)")
    if points == "max":
        return -1
    if isinstance(points, bool) or not isinstance(points, int) or not (
            pp.min_points <= points <= 100_000_000):
        raise InputError(f"points must be \"max\" or a number of points from "
                         f"{pp.min_points}, got {points!r}")
    return points


def arm(conn: sqlite3.Connection, policy: Policy, device_id: str, *, amount_fen: int | None,
        items: list[dict[str, Any]], service: int, timeout_s: int, key: str | None,
        actor: str, ts: int, points: str | int | None = None) -> dict[str, Any]:
    """Arm a sale on ``device_id`` (inside the caller's transaction); returns the sale with
    ``replayed``. ``points``: pay part of it with points (``"max"`` or a number; see
    :func:`points_request`). Conflict when the reader has an armed sale; NotFound for an
    unknown reader."""
    args = {"device_id": device_id, "amount_fen": amount_fen, "items": items,
            "service": service, "timeout_s": timeout_s}
    if points is not None:
        args["points"] = points
    canon = idempotent.canonical(args)
    first = idempotent.recall(conn, key, "sale", canon)
    if first is not None:
        return {**get(conn, first["sale_id"]), "replayed": True}
    row = conn.execute("SELECT kind FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    if row is None:
        raise NotFound(f"unknown device {device_id!r}")
    if row[0] not in SALE_KINDS:
        raise InputError(f"device {device_id} is a {row[0]}: sales are for kiosk and wash readers")
    if not 1 <= timeout_s <= MAX_TIMEOUT_S:
        raise InputError(f"timeout_s must be 1..{MAX_TIMEOUT_S}")
    policy = policy.for_store(device_store(conn, device_id))   # a chain store's prices
    amount, priced, service, label = price(policy, row[0], amount_fen=amount_fen, items=items,
                                           service=service)
    want = points_request(policy, row[0], points)
    expire(conn, ts, device_id)
    busy = conn.execute("SELECT id FROM sales WHERE device_id = ? AND state = 'armed'",
                        (device_id,)).fetchone()
    if busy is not None:
        raise Conflict(f"device {device_id} already has sale {busy[0]} armed: cancel it first")
    cur = conn.execute(
        "INSERT INTO sales (device_id, amount_fen, service, items, text, state, created_at,"
        " expires_at, actor, points) VALUES (?,?,?,?,?, 'armed', ?,?,?,?)",
        (device_id, amount, service, json.dumps(priced, ensure_ascii=False),
         sale_text(amount, label), ts, ts + timeout_s, actor, want))
    sale_id = int(cur.lastrowid)
    idempotent.remember(conn, key, "sale", canon, {"sale_id": sale_id}, ts)
    return {**get(conn, sale_id), "replayed": False}


#: ``actor`` of a sale armed by a wash bay's program button.
BUTTON = "button"


def arm_button(conn: sqlite3.Connection, policy: Policy, device_id: str, program: int,
               ts: int) -> tuple[dict[str, Any], list[int]]:
    """A program button was pressed on a wash bay: replace the sale an earlier press armed
    there with this program's (a sale armed through the API stays: Conflict). Returns the new
    sale and the ids of the sales it replaced."""
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM sales WHERE device_id = ? AND state = 'armed' AND actor = ?",
        (device_id, BUTTON)).fetchall()]
    for sid in ids:
        conn.execute("UPDATE sales SET state = 'cancelled', settled_at = ? WHERE id = ?",
                     (ts, sid))
    sale = arm(conn, policy, device_id, amount_fen=None, items=[], service=program,
               timeout_s=DEFAULT_TIMEOUT_S, key=None, actor=BUTTON, ts=ts)
    return sale, ids


def cancel(conn: sqlite3.Connection, sale_id: int, ts: int) -> dict[str, Any]:
    """Cancel an armed sale (idempotent: a cancelled one is returned as it is); Conflict for a
    sale that was paid or denied, NotFound for an unknown one."""
    sale = get(conn, sale_id)
    expire(conn, ts, sale["device_id"])
    conn.execute("UPDATE sales SET state = 'cancelled', settled_at = ? WHERE id = ? AND "
                 "state = 'armed'", (ts, sale_id))
    sale = get(conn, sale_id)
    if sale["state"] in ("paid", "denied"):
        raise Conflict(f"sale {sale_id} is already {sale['state']}")
    return sale


def expire(conn: sqlite3.Connection, ts: int, device_id: str | None = None) -> list[int]:
    """Mark armed sales past their expiry ``expired``; returns their ids."""
    sql = "SELECT id FROM sales WHERE state = 'armed' AND expires_at <= ?"
    args: tuple[Any, ...] = (ts,)
    if device_id is not None:
        sql, args = sql + " AND device_id = ?", (ts, device_id)
    ids = [r[0] for r in conn.execute(sql, args).fetchall()]
    for sid in ids:
        conn.execute("UPDATE sales SET state = 'expired', settled_at = ? WHERE id = ?", (ts, sid))
    return ids


def armed_until(db: Any, ts: int) -> bool:
    """*read* Whether an armed sale is past its expiry at ``ts`` (nothing to write if not)."""
    c = db.conn if hasattr(db, "conn") else db
    return c.execute("SELECT 1 FROM sales WHERE state = 'armed' AND expires_at <= ? LIMIT 1",
                     (ts,)).fetchone() is not None


def end_for_device(conn: sqlite3.Connection, device_id: str, ts: int, reason: str) -> list[int]:
    """Deny the reader's armed sale (e.g. ``offline``: the reader dropped off mid-sale)."""
    ids = [r[0] for r in conn.execute("SELECT id FROM sales WHERE device_id = ? AND "
                                      "state = 'armed'", (device_id,)).fetchall()]
    for sid in ids:
        conn.execute("UPDATE sales SET state = 'denied', reason = ?, settled_at = ? WHERE id = ?",
                     (reason, ts, sid))
    return ids


def settle(conn: sqlite3.Connection, sale_id: int, tap_id: int, ts: int,
           result: dict[str, Any]) -> None:
    """Record the tap that paid (or was refused for) the sale, in the tap's transaction."""
    state = "paid" if result["verdict"] == "grant" else "denied"
    conn.execute("UPDATE sales SET state = ?, tap_id = ?, reason = ?, settled_at = ?, result = ?"
                 " WHERE id = ? AND state = 'armed'",
                 (state, tap_id, result["reason"], ts, json.dumps(result, ensure_ascii=False),
                  sale_id))


def get(conn: sqlite3.Connection | Any, sale_id: int) -> dict[str, Any]:
    """One sale as the API shows it; NotFound when there is none."""
    c = conn.conn if hasattr(conn, "conn") else conn
    row = c.execute(f"SELECT {', '.join(_COLS)} FROM sales WHERE id = ?", (sale_id,)).fetchone()
    if row is None:
        raise NotFound(f"no sale {sale_id}")
    out = dict(zip(_COLS, row))
    out["items"] = json.loads(out["items"])
    out["result"] = json.loads(out["result"]) if out["result"] else None
    out["points"] = {0: None, -1: "max"}.get(out["points"], out["points"])
    return out
