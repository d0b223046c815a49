# Runs on CPython (pytest): an in-memory site with a settable clock, shared by the engine and void tests.
"""A seeded in-memory site for engine-level tests.

:func:`make_site` opens an in-memory store, registers a kiosk ``K1``, a wash bay ``W1`` and a
gate ``G1``, enrols one member (``Li``) with card :data:`UID`, and returns
``(db, admin, engine, clock, member_id)``; the clock starts on Tuesday 2026-03-10 12:00 in the
site time zone (not the 18th, not a birthday month).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from host.admin import Admin
from host.rules.engine import Engine
from host.rules.policy import load_policy
from host.store.db import open_db
from host.store.devices import register_device

TZ = ZoneInfo("Asia/Shanghai")
UID = "04A1B2C3D4E5F6"


class Clock:
    """A settable clock in the site time zone."""

    def __init__(self, *args):
        self.now = datetime(*args, tzinfo=TZ)

    def __call__(self):
        return self.now

    def set(self, *args):
        self.now = datetime(*args, tzinfo=TZ)


def make_site(*, birthday: str | None = None, gate_hours: str | None = None, topup_fen: int = 0,
              db: str | None = None):
    """The seeded site described in the module docstring.

    ``birthday`` ("MM-DD") is the member's, ``gate_hours`` ("HH:MM-HH:MM") the gate's opening
    hours (none: always open), ``topup_fen`` a first top-up of the member's balance, ``db``
    the store (None: SQLite in memory; a ``postgresql://`` URL: a new PostgreSQL database).
    """
    db = open_db(db)
    clock = Clock(2026, 3, 10, 12, 0)
    pol = load_policy()
    admin, engine = Admin(db, pol, clock), Engine(db, pol, clock)
    register_device(db, "K1", "kiosk")
    register_device(db, "W1", "wash")
    register_device(db, "G1", "gate", **({"hours": gate_hours} if gate_hours else {}))
    mid = admin.add_member("Li", birthday=birthday, consent_terms="t1")["member_id"]
    admin.enroll_card(mid, UID)
    if topup_fen:
        admin.topup(mid, topup_fen)
    return db, admin, engine, clock, mid
