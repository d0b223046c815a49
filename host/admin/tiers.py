# Runs on CPython (host): operator writes on tiers — the periodic re-evaluation (upgrades, keep rules).
"""``evaluate_tiers``: run the tier rules over every member now (``host.ledger.tiers``); the
daily job (``tapkiosk tiers evaluate`` from a timer) calls it."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from host.admin.core import AdminCore
from host.ledger import tiers


class TierWrites(AdminCore):
    """Re-evaluate tiers."""

    def evaluate_tiers(self, *, key: str | None = None) -> dict[str, Any]:
        """Upgrades and keep-rule downgrades of every active member with an automatic tier;
        ``changes`` lists them (empty on a second run)."""
        def fn(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            return {"changes": tiers.evaluate(conn, self.policy, ts, now, key=key)}
        return self.write("tiers.evaluate", {}, key, fn)
