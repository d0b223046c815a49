# Runs on CPython (host): what every `tapkiosk` command handler gets — the store, policy, admin and output.
"""``Ctx``: one command's run. Handlers take ``(ctx, args)`` and return an exit code or None."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple, TextIO

import sqlite_utils

from host.admin import Admin
from host.cli import render
from host.rules.policy import Policy


class Ctx(NamedTuple):
    """The open store, the policy, the admin writes over them, where output goes, and now."""

    db: sqlite_utils.Database
    policy: Policy
    admin: Admin
    path: str
    out: TextIO
    as_json: bool
    now: datetime

    def show(self, value: Any) -> None:
        """Print a result as JSON (``--json``) or for people, times in the site zone."""
        render.show(value, self.as_json, self.out, self.policy.tz)

    def ts(self) -> int:
        """Now in unix seconds."""
        return int(self.now.timestamp())


#: A command: parse results in, an exit code out (None = 0).
Handler = Callable[[Ctx, argparse.Namespace], "int | None"]
