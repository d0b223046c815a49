# Runs on CPython (host): the SQL that finds a member's taps without a by-member index of every tap.
"""A member's taps, found through what a tap writes anyway (issue 19, migration 24).

A tap that charged stored value wrote principal/bonus ledger rows of its member with its
``tap_id`` (``verify()`` checks that they sum to its ``charged_fen``), so ``ledger_member``
finds it; a tap on a pass is in ``taps_pass``, found through the member's passes
(``passes_member``; a pass never changes member); only the other taps (``charged_fen = 0 AND
pass_id IS NULL``) are in ``taps_member_free``. A kiosk or wash tap that pays, and a gate
tap on a pass, thus write one index page fewer.

``tap_ids(since)`` is the ``(...)`` set of one member's tap ids (with ``since``: of those
after a time), for ``id IN`` or a join: a superset (a tap's reversal rows name it too), so
every read that uses it also says ``member_id = ?``. Arguments: ``params(member_id, since)``.
"""

from __future__ import annotations

_FREE = "SELECT id FROM taps WHERE member_id = ? AND charged_fen = 0 AND pass_id IS NULL"
_PAID = ("SELECT tap_id FROM ledger WHERE member_id = ? AND currency IN ('principal', 'bonus')"
         " AND tap_id IS NOT NULL")
_PASS = "SELECT id FROM taps WHERE pass_id IN (SELECT id FROM passes WHERE member_id = ?)"


def tap_ids(since: bool = False) -> str:
    """``(SELECT ...)``: the ids of a member's taps (with ``since``: of ts > a time)."""
    after = " AND ts > ?" if since else ""
    return f"({_FREE}{after} UNION ALL {_PAID}{after} UNION ALL {_PASS}{after})"


def params(member_id: int, since: int | None = None) -> tuple[int, ...]:
    """The arguments of ``tap_ids(since is not None)``."""
    if since is None:
        return (member_id,) * 3
    return (member_id, since) * 3


def select(columns: str, tail: str = "ORDER BY id") -> str:
    """``SELECT columns FROM taps`` of one member (arguments: ``params(member_id)`` then the
    member id again), then ``tail``."""
    return f"SELECT {columns} FROM taps WHERE id IN {tap_ids()} AND member_id = ? {tail}"
