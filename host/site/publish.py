# Runs on CPython (host): the service's side of the event bus — a publisher that can never break a tap.
"""``Publisher(bus)`` publishes the daemon's events (``host.web.event_payloads``) on the
:class:`host.web.events.EventBus`. Every method swallows and logs whatever goes wrong: an
event is a notification, and a tap is decided and answered whether it could be published or
not. ``Publisher(None)`` publishes nothing (a daemon without the HTTP API, tests)."""

from __future__ import annotations

import logging
from typing import Any

from host.rules.engine import Decision, Tap
from host.web.event_payloads import decision_payload, device_payload, tap_payload

log = logging.getLogger("tapkiosk.events")


class Publisher:
    """See the module doc."""

    def __init__(self, bus: Any = None) -> None:
        self.bus = bus
        self.failed = 0

    def publish(self, kind: str, build: Any, *args: Any, lazy: bool = False) -> None:
        """Publish ``build(*args)`` as an event of ``kind``; never raises (``lazy``: see
        ``EventBus.publish``)."""
        if self.bus is None:
            return
        try:
            if not self.bus.wanted(kind):
                return   # nobody listens: no payload, no JSON on the tap path
            self.bus.publish(kind, build(*args), lazy)
        except Exception:  # noqa: BLE001 - an event must never break a tap
            self.failed += 1
            log.exception("publishing a %s event failed", kind)

    def tap(self, tap: Tap) -> None:
        """A reader's tap, before it is decided."""
        self.publish("tap", tap_payload, tap, lazy=True)

    def decision(self, tap: Tap, d: Decision) -> None:
        """The decision of ``tap``, after its reply was sent."""
        self.publish("decision", decision_payload, tap, d, lazy=True)

    def decisions(self, decided: list[tuple[Tap, Decision]]) -> None:
        """``decision`` for each of ``decided``, published as one batch; never raises."""
        if self.bus is None or not decided:
            return
        try:
            if self.bus.wanted("decision"):
                self.bus.publish_many("decision", [decision_payload(t, d) for t, d in decided])
        except Exception:  # noqa: BLE001 - an event must never break a tap
            self.failed += 1
            log.exception("publishing %d decision events failed", len(decided))

    def device(self, device_id: str, kind: str, link: str, fw: str, online: bool) -> None:
        """A device came online or went offline."""
        self.publish("device_online" if online else "device_offline", device_payload,
                     device_id, kind, link, fw)

    def sale(self, sale: dict[str, Any]) -> None:
        """A sale was armed, paid, denied, cancelled or expired (the sale as the API shows it)."""
        self.publish("sale", lambda s: {"kind": "reader_sale", **s}, sale)
