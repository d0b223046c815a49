# Runs on CPython (host): the operator-writes facade that the CLI (and the HTTP API, the console) call.
"""``Admin``: every operator write against one store, under one policy and clock.

Each write runs in one ``BEGIN IMMEDIATE`` transaction and is idempotent by ``key`` (the
CLI's ``--idempotency-key``); see ``host.admin.core``. The writes live by responsibility:
``members``, ``cards``, ``wallet`` (top-up, refund, points, reversals, expiry), ``passes``,
``privacy`` (reveal, member data export, erasure, retention).
"""

from host.admin.cards import CardWrites
from host.admin.members import MemberWrites
from host.admin.passes import PassWrites
from host.admin.privacy import PrivacyWrites
from host.admin.wallet import WalletWrites


class Admin(MemberWrites, CardWrites, WalletWrites, PassWrites, PrivacyWrites):
    """Operator writes: ``Admin(db, policy=None, clock=None)``."""


__all__ = ["Admin"]
