# Runs on CPython (host): the id range that holds a period's taps or ledger rows (day marks).
"""Period reads by id range (issue 19): ``taps`` and ``ledger`` have no ``ts`` index (every
tap wrote two pages for them); ids grow with insertion, and ``day_marks`` (migration 23,
kept by triggers on both tables) holds, per UTC day, a lower bound of the day's ids. A
reader asks :func:`id_range` for ``[lo, hi)`` and filters ``ts`` inside it, so the result is
exactly a ``ts`` scan's:

- lo: every row with ``ts >= t0`` is in a day ``>= t0 // 86400`` and its id is at least that
  day's mark, so at least the smallest mark of those days (marks are taken as monotonic
  minimums: a host clock that went forward and came back leaves a later day with a smaller
  mark, and the minimum covers it).
- hi: a mark not ``stepped`` means no row of an earlier day was written after it, so every
  row with ``ts`` before that day has a smaller id; the smallest such mark of a day starting
  at or after ``t1`` bounds the period. After a clock step back (or a chain join copying old
  rows) the marks after it are stepped and a read runs to the end of the table: slower,
  never short.

Marks use UTC days (``ts // 86400``), not local ones: the bounds hold in any time zone,
and a policy's time zone change cannot invalidate them.
"""

from __future__ import annotations

from typing import Any

#: An id no row reaches: the open end of a range.
NO_END = 1 << 62
_DAY = 86400
_COLUMN = {"taps": "tap_id", "ledger": "ledger_id"}


def span(alias: str = "") -> str:
    """SQL condition of a row in an :func:`id_range` and ``t0 <= ts < t1``; its arguments
    are :func:`span_args`. ``alias``: the table's alias in the query (``"t."``)."""
    return f"{alias}id >= ? AND {alias}id < ? AND {alias}ts >= ? AND {alias}ts < ?"


def id_range(db: Any, table: str, t0: int, t1: int | None = None) -> tuple[int, int]:
    """``[lo, hi)``: the ids of ``table`` (taps or ledger) that can hold a row with
    ``t0 <= ts < t1`` (``t1`` None: no end); see the module doc."""
    col = _COLUMN[table]
    if t1 is None:
        lo = db.execute(f"SELECT min({col}) FROM day_marks WHERE day >= ?",
                        (t0 // _DAY,)).fetchone()[0]
        hi = None
    else:
        lo, hi = db.execute(
            f"SELECT (SELECT min({col}) FROM day_marks WHERE day >= ?), (SELECT min({col}) "
            f"FROM day_marks WHERE day >= ? AND stepped = 0)",
            (t0 // _DAY, -(-t1 // _DAY))).fetchone()
    if lo is None:
        return NO_END, NO_END
    return lo, NO_END if hi is None else hi


def span_args(db: Any, table: str, t0: int, t1: int | None = None) -> tuple[int, int, int, int]:
    """The four arguments of :func:`span` for ``t0 <= ts < t1`` (``t1`` None: no end)."""
    lo, hi = id_range(db, table, t0, t1)
    return lo, hi, t0, NO_END if t1 is None else t1
