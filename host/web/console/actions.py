# Runs on CPython (host): console writes — the CLI's Admin methods on the daemon's writer thread, audited.
"""Every console write goes through :func:`run`: ``op(admin)`` runs on the daemon's single
writer thread with an :class:`host.admin.Admin` that carries the staff name and client
address, so its write plumbing appends the audit row (values before and after) inside the
write's own transaction. A replayed write (same idempotency key) writes nothing, not even an
audit row.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import sqlite_utils

from host.admin import Admin
from host.errors import InputError
from host.web.console.permissions import StaffActor
from host.web.context import WebContext, WriteTimeout


def new_form_key() -> str:
    """A key for one form as the page renders it: posting that form again is a replay."""
    return secrets.token_urlsafe(12)


def form_key(text: str) -> str:
    """The idempotency key of a posted form (its hidden ``key`` field)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{8,64}", text or ""):
        raise InputError("the form has no valid key: reload the page")
    return "console-" + text


def store_write(ctx: WebContext, fn: Callable[[sqlite_utils.Database], Any]) -> Any:
    """``fn(db)`` on the writer thread; WriteTimeout when the writer is slow (the form can be
    posted again: its idempotency key makes that safe)."""
    try:
        return ctx.writer.call(fn).result(ctx.write_timeout_s)
    except FutureTimeout:
        raise WriteTimeout("the database writer did not answer in time; post the form "
                           "again (it is applied once)") from None


def run(ctx: WebContext, actor: StaffActor, op: Callable[[Admin], dict[str, Any]],
        sale: str | None = None) -> dict[str, Any]:
    """``op(admin)`` on the writer thread as ``actor``; a first (not replayed) money write is
    published on the bus as a ``sale`` event of kind ``sale``."""
    result = store_write(ctx, lambda db: op(Admin(db, ctx.policy, actor=actor.name,
                                                  client=actor.client)))
    if sale and not result.get("replayed"):
        ctx.bus.publish("sale", {"kind": sale, "member_id": result.get("member_id"),
                                 "staff": actor.name,
                                 **{k: v for k, v in result.items() if k != "replayed"}})
    return result
