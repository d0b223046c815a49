# Runs on CPython (host): who may do what in the staff console — every role decision made here.
"""Staff actors and role permissions of the console.

Every console request has at most one :class:`StaffActor` (from its session). Handlers name
an *action*; :func:`check` decides from :data:`RULES` alone. Templates never decide: they get
:func:`allowed` results to hide what would be refused anyway.

| role       | may                                                                       |
|------------|---------------------------------------------------------------------------|
| cashier    | dashboard; find members; enrol, replace, block cards; top-ups, passes, points; campaigns |
| manager    | what a cashier may, plus refunds, reversals, tier and status edits, issuing coupons, reports, staff, audit log |
| technician | dashboard; devices and their health; device settings, config pushes, key rotation |
"""

from __future__ import annotations

from dataclasses import dataclass

from host.errors import HostError
from host.store.staff import ROLES
from host.web.permissions import Forbidden


class LoginRequired(HostError):
    """No session, an expired one, or one whose account is gone (login page)."""

    exit_code = 2


@dataclass(frozen=True)
class StaffActor:
    """The staff member making the request, and the address they make it from."""

    name: str
    role: str
    client: str | None = None
    #: The one store of the chain the account sees and acts on (None: every store):
    #: devices, the dashboard and reports are that store's (members are chain-wide).
    store: str | None = None


_FRONT = frozenset({"cashier", "manager"})
_ALL = frozenset(ROLES)

#: action -> the roles allowed to do it. The only place roles are compared.
RULES: dict[str, frozenset[str]] = {
    "dashboard.read": _ALL,
    "events.read": _ALL,
    "members.read": _FRONT,
    "sales.write": _FRONT,
    "cards.write": _FRONT,
    "refunds.write": frozenset({"manager"}),
    "reversals.write": frozenset({"manager"}),
    "members.edit": frozenset({"manager"}),
    "reports.read": frozenset({"manager"}),
    "staff.manage": frozenset({"manager"}),
    "audit.read": frozenset({"manager"}),
    "coupons.issue": frozenset({"manager"}),
    "campaigns.read": _FRONT,
    "devices.read": frozenset({"technician"}),
    "devices.write": frozenset({"technician"}),
}

if not all(rule <= _ALL for rule in RULES.values()):
    raise HostError("host.web.console.permissions: a rule names an unknown role")


def allowed(actor: StaffActor | None, action: str) -> bool:
    """True when ``actor`` may do ``action`` (an unknown action is a programming error)."""
    try:
        roles = RULES[action]
    except KeyError:
        raise HostError(f"no console permission rule for action {action!r}") from None
    return actor is not None and actor.role in roles


def check(actor: StaffActor | None, action: str) -> StaffActor:
    """Return ``actor`` if it may do ``action``; LoginRequired or Forbidden otherwise."""
    if actor is None:
        raise LoginRequired("log in first")
    if not allowed(actor, action):
        raise Forbidden(f"{actor.name} ({actor.role}) may not do {action}")
    return actor
