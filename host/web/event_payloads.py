# Runs on CPython (host): the data of tap, decision and device events, built the same way wherever they are published.
"""Payloads of the bus events the daemon's service publishes (``docs/integrators.md``, Events).

The service calls, with ``bus`` the daemon's :class:`host.web.events.EventBus`::

    bus.publish("tap", tap_payload(tap))                    # before writer.submit_tap(tap, ...)
    bus.publish("decision", decision_payload(tap, d))       # after the reply was sent
    bus.publish("device_online", device_payload(id, kind, link, fw))    # in set_online(True)
    bus.publish("device_offline", device_payload(id, kind, link, fw))   # in set_online(False)

Only plain JSON types; never the reply bytes, a key or a secure-card message.
"""

from __future__ import annotations

from typing import Any

from host.rules.engine import Decision, Tap


def tap_payload(tap: Tap) -> dict[str, Any]:
    """A reader's authenticated tap, not yet decided."""
    return {"device_id": tap.device_id, "seq": tap.seq, "uid": tap.uid,
            "service": tap.service, "amount_fen": tap.amount_fen,
            "direction": tap.direction, "offline": tap.offline}


def decision_payload(tap: Tap, d: Decision) -> dict[str, Any]:
    """The committed decision of ``tap`` (``replayed``: a retransmission answered again)."""
    return {"device_id": tap.device_id, "seq": tap.seq, "uid": tap.uid,
            "member_id": d.member_id, "verdict": d.verdict, "reason": d.reason,
            "text": d.text, "balance_fen": d.balance_fen, "points": d.points,
            "uses_left": d.uses_left, "replayed": d.replayed, "sale_id": d.sale_id or None}


def device_payload(device_id: str, kind: str, link: str = "", fw: str = "") -> dict[str, Any]:
    """A device that came online or went offline, and the link it spoke on."""
    return {"device_id": device_id, "kind": kind, "link": link or None, "fw": fw or None}
