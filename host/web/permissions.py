# Runs on CPython (host): who may do what over the HTTP API — every permission decided here.
"""Actors and permissions.

Every request has one :class:`Actor` (the API token that authenticated it). Handlers never
look at scopes: they name an *action* and :func:`check` decides, from :data:`RULES` alone.

| scope     | may                                                                  |
|-----------|----------------------------------------------------------------------|
| `members` | read members and cards (look-ups by id, card UID, phone), a member's coupons, the campaigns |
| `sales`   | what `members` may, plus top-ups, pass sales, points redemptions, sales on readers (arm, read, cancel; the kiosk screen), and the event stream |
| `admin`   | everything, including refunds (cash paid out) and issuing coupons    |
"""

from __future__ import annotations

from dataclasses import dataclass

from host.errors import HostError
from host.store.tokens import SCOPES


class Unauthorized(HostError):
    """No API token, or one that is unknown or revoked (HTTP 401)."""

    exit_code = 2


class Forbidden(HostError):
    """A valid token whose scope does not allow the action (HTTP 403)."""

    exit_code = 2


@dataclass(frozen=True)
class Actor:
    """Who is making the request: the API token's id, name and scope."""

    token_id: int
    name: str
    scope: str


#: action -> the scopes allowed to do it. The only place scopes are compared.
RULES: dict[str, frozenset[str]] = {
    "members.read": frozenset({"members", "sales", "admin"}),
    "sales.write": frozenset({"sales", "admin"}),
    "sales.read": frozenset({"sales", "admin"}),
    "events.read": frozenset({"sales", "admin"}),
    "refunds.write": frozenset({"admin"}),
    # Coupons are issued by the policy's rules or by a manager (issue 16): admin tokens only.
    "coupons.issue": frozenset({"admin"}),
}

if not all(rule <= set(SCOPES) for rule in RULES.values()):
    raise HostError("host.web.permissions: a rule names a scope the token store does not know")


def allowed(actor: Actor, action: str) -> bool:
    """True when ``actor`` may do ``action`` (an unknown action is a programming error)."""
    try:
        return actor.scope in RULES[action]
    except KeyError:
        raise HostError(f"no permission rule for action {action!r}") from None


def check(actor: Actor, action: str) -> Actor:
    """Return ``actor`` if it may do ``action``; raise :class:`Forbidden` otherwise."""
    if not allowed(actor, action):
        raise Forbidden(f"token {actor.name!r} has scope {actor.scope!r}, "
                        f"which does not allow {action}")
    return actor
