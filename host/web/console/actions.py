# Runs on CPython (host): console writes — the CLI's Admin methods on the daemon's writer thread, audited.
"""Every console write goes through :func:`run`: ``op(admin)`` runs on the daemon's single
writer thread with an :class:`AuditedAdmin`, whose ``_write`` plumbing adds one audit row
(staff name, client address, values before and after) inside the admin write's own
transaction. A replayed write (same idempotency key) writes nothing, not even an audit row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from typing import Any

import sqlite_utils

from host.admin.core import Admin
from host.store import audit
from host.web.console.permissions import StaffActor
from host.web.context import WebContext, WriteTimeout

#: Admin commands that move money, published on the bus as ``sale`` events.
SALE_KINDS = {"topup": "topup", "refund": "refund", "pass.sell": "pass",
              "points.redeem": "redemption"}


class AuditedAdmin(Admin):
    """:class:`Admin` whose every write also records who did it, in the same transaction."""

    def __init__(self, db: sqlite_utils.Database, policy: Any, *, actor: str,
                 client: str | None = None, **kwargs: Any) -> None:
        super().__init__(db, policy, **kwargs)
        self.actor, self.client = actor, client
        self.last_command: str | None = None

    def _write(self, command: str, args: dict[str, Any], key: str | None,
               fn: Callable[[sqlite3.Connection, int, datetime], dict[str, Any]]
               ) -> dict[str, Any]:
        self.last_command = command

        def audited(conn: sqlite3.Connection, ts: int, now: datetime) -> dict[str, Any]:
            before = audit.snapshot(conn, args)
            result = fn(conn, ts, now)
            audit.record(conn, ts, self.actor, command, member_id=audit.member_of(args, result),
                         before=before, after=result, client=self.client, op_key=key)
            return result
        return super()._write(command, args, key, audited)


def run(ctx: WebContext, actor: StaffActor, op: Callable[[Admin], dict[str, Any]]
        ) -> dict[str, Any]:
    """``op(admin)`` on the writer thread as ``actor``; a first money write is published as a
    ``sale`` event. Raises what the admin method raises, WriteTimeout when the writer is slow
    (the form can be posted again: the idempotency key makes that safe)."""
    box: dict[str, str | None] = {}

    def job(db: sqlite_utils.Database) -> dict[str, Any]:
        admin = AuditedAdmin(db, ctx.policy, actor=actor.name, client=actor.client)
        try:
            return op(admin)
        finally:
            box["command"] = admin.last_command

    try:
        result = ctx.writer.call(job).result(ctx.write_timeout_s)
    except FutureTimeout:
        raise WriteTimeout("the database writer did not answer in time; post the form "
                           "again (it is applied once)") from None
    kind = SALE_KINDS.get(box.get("command") or "")
    if kind and not result.get("replayed"):
        ctx.bus.publish("sale", {"kind": kind, "member_id": result.get("member_id"),
                                 "staff": actor.name,
                                 **{k: v for k, v in result.items() if k != "replayed"}})
    return result


def store_write(ctx: WebContext, fn: Callable[[sqlite_utils.Database], Any]) -> Any:
    """A store write that is not an admin command (staff accounts) on the writer thread."""
    try:
        return ctx.writer.call(fn).result(ctx.write_timeout_s)
    except FutureTimeout:
        raise WriteTimeout("the database writer did not answer in time") from None
