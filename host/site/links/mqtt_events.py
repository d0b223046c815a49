# Runs on CPython (host): forwards the daemon's bus events to MQTT in batches (one write per batch).
"""``EventBatcher(bus, publish_many)`` forwards every bus event to MQTT as
``tapkiosk/v1/events/<kind>`` with the event's JSON, handing the link every event queued when
its thread wakes up (it lets ``LINGER_S`` pass first, so that a busy daemon's events come in
batches) in one ``publish_many`` call: with the MQTT link in its own process
(:mod:`host.site.links.mqtt_pipe`) that is one write to the link process for many events,
instead of one per event (two events per tap: the ``tap`` and its ``decision``); the
in-process link (:mod:`host.site.links.mqtt`) publishes them one by one. Its own thread, so a
slow link never delays a publisher; events are QoS 0 and never block a tap.

Given ``publish_events`` (the link process's ``MqttPipeLink.publish_events``), the batch goes
as the events' plain fields (``(id, kind, ts, data)``, marshalled in one call) and the link
process encodes each event's JSON (``host.web.events.event_json``, the same text): that work
leaves the daemon's interpreter lock for the other core. A batch marshal refuses goes as JSON.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from host.web.events import TOPIC_PREFIX, Event, EventBus, Subscription

log = logging.getLogger("tapkiosk.events")

#: Most events in one write.
BATCH_MAX = 256
#: How long the first event of a batch waits for others (QoS-0 notifications: a few ms later
#: is nothing to their readers, and saves a wake-up per event under load).
LINGER_S = 0.005


class EventBatcher:
    """See the module doc."""

    def __init__(self, bus: EventBus, publish_many: Callable[[list[tuple[str, bytes]]], Any],
                 prefix: str = TOPIC_PREFIX,
                 publish_events: Callable[[str, list[tuple[int, str, float, dict[str, Any]]]],
                                          bool] | None = None) -> None:
        self._bus = bus
        self._publish_many = publish_many
        self._publish_events = publish_events
        self.prefix = prefix.rstrip("/")
        self._sub: Subscription | None = None
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.batches = 0

    def start(self) -> "EventBatcher":
        """Subscribe to the bus and start forwarding; returns self."""
        self._sub = self._bus.subscribe()
        self._thread = threading.Thread(target=self._run, args=(self._sub,),
                                        name="tapkiosk-events-mqtt", daemon=True)
        self._thread.start()
        return self

    def _run(self, sub: Subscription) -> None:
        while not sub.closed:
            event = sub.get(timeout=1.0)
            if event is None:
                continue
            # Let more come before taking them: while this thread sleeps, a publisher's
            # offer wakes nobody (no system call, no switch of the interpreter lock per
            # event); under load one wake-up then carries a batch instead of one or two.
            time.sleep(LINGER_S)
            batch = [event]
            while len(batch) < BATCH_MAX:
                more = sub.get(timeout=0)
                if more is None:
                    break
                batch.append(more)
            try:
                self._send(batch)
                self.sent += len(batch)
                self.batches += 1
            except Exception:  # noqa: BLE001 - a link hiccup must not stop the forwarding
                log.exception("publishing %d events to MQTT failed", len(batch))

    def _send(self, batch: list[Event]) -> None:
        """One batch to the link: as fields for the link process to encode when it can."""
        if self._publish_events is not None and self._publish_events(
                self.prefix, [(e.id, e.kind, e.ts, e.data) for e in batch]):
            return
        self._publish_many([(f"{self.prefix}/{e.kind}", e.json.encode("utf-8")) for e in batch])

    def stop(self, timeout: float = 5.0) -> None:
        """Stop forwarding (events still queued are dropped). Idempotent."""
        if self._sub is not None:
            self._sub.close()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)
