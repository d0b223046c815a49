# Runs on CPython (host): the operator-writes facade that the CLI (and the HTTP API, the console) call.
"""``Admin``: every operator write against one store, under one policy and clock.

Each write runs in one ``BEGIN IMMEDIATE`` transaction and is idempotent by ``key`` (the
CLI's ``--idempotency-key``); see ``host.admin.core``. The writes live by responsibility:
``members``, ``cards``, ``wallet`` (top-up, refund, points, reversals, expiry), ``passes``,
``privacy`` (reveal, member data export, erasure, retention), ``tiers`` (periodic
re-evaluation), ``coupons``, ``messages`` (contacts, the daily queue), ``catalogue`` (what
points buy), ``devices`` (reader settings, key rotation, config pushes).
"""

from host.admin.cards import CardWrites
from host.admin.catalogue import CatalogueWrites
from host.admin.coupons import CouponWrites
from host.admin.devices import DeviceWrites
from host.admin.members import MemberWrites
from host.admin.messages import MessageWrites
from host.admin.passes import PassWrites
from host.admin.privacy import PrivacyWrites
from host.admin.tiers import TierWrites
from host.admin.wallet import WalletWrites


class Admin(MemberWrites, CardWrites, WalletWrites, PassWrites, PrivacyWrites, TierWrites,
            CouponWrites, MessageWrites, CatalogueWrites, DeviceWrites):
    """Operator writes: ``Admin(db, policy=None, clock=None)``."""


__all__ = ["Admin"]
