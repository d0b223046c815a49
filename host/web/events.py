# Runs on CPython (host): the in-process event bus (taps, decisions, device state, sales) (forwarded to MQTT by host/site/links/mqtt_events.py).
"""In-process event bus.

``bus.publish(kind, data)`` is thread-safe and never blocks: the event is encoded to JSON once
and offered to every subscriber's bounded queue; a subscriber that does not keep up loses its
OLDEST events (counted in ``Subscription.dropped``), never the publisher's time. Event ids
are increasing integers, so a client sees a gap when it lost events.

Kinds (:data:`KINDS`): ``tap``, ``decision``, ``device_online``, ``device_offline``, ``sale``.
Consumers: ``GET /v1/events`` (server-sent events, ``host.web.routes.events``) and
:class:`host.site.links.mqtt_events.EventBatcher` (``tapkiosk/v1/events/<kind>``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from host.errors import InputError

log = logging.getLogger("tapkiosk.events")

#: Every event kind the bus carries.
KINDS = ("tap", "decision", "device_online", "device_offline", "sale")
#: Events kept per subscriber before the oldest are dropped.
QUEUE_SIZE = 256
#: MQTT topic prefix of the events forwarded to MQTT (host/site/links/mqtt_events.py).
TOPIC_PREFIX = "tapkiosk/v1/events"

#: One encoder for every event (``json.dumps`` with options builds a new one per call).
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def event_json(eid: int, kind: str, ts: float, data: dict[str, Any]) -> str:
    """The JSON of an event's envelope (the same text wherever it is encoded: the MQTT link
    process encodes the daemon's tap and decision events itself)."""
    return _ENCODE({"id": eid, "kind": kind, "ts": ts, "data": data})


class Event:
    """One published event: increasing ``id``, ``kind``, unix ``ts``, ``data`` and ``json``,
    the JSON of the envelope (of a ``lazy`` publish: encoded when first read, so an event no
    consumer in this process reads is never encoded here)."""

    __slots__ = ("id", "kind", "ts", "data", "_json")

    def __init__(self, eid: int, kind: str, ts: float, data: dict[str, Any],
                 text: str | None = None) -> None:
        self.id, self.kind, self.ts, self.data, self._json = eid, kind, ts, data, text

    @property
    def json(self) -> str:
        text = self._json
        if text is None:
            text = self._json = event_json(self.id, self.kind, self.ts, self.data)
        return text

    def sse(self) -> str:
        """The event as one server-sent-events message."""
        return f"id: {self.id}\nevent: {self.kind}\ndata: {self.json}\n\n"


def check_kinds(kinds: Iterable[str]) -> frozenset[str]:
    """The set of ``kinds``; InputError naming an unknown one."""
    out = frozenset(kinds)
    for k in sorted(out - set(KINDS)):
        raise InputError(f"unknown event kind {k!r} (kinds: {', '.join(KINDS)})")
    return out


class Subscription:
    """A subscriber's bounded queue (drop-oldest), read by a thread or by an asyncio task."""

    def __init__(self, bus: "EventBus", kinds: frozenset[str] | None, size: int) -> None:
        self._bus = bus
        self.kinds = kinds
        self._items: deque[Event] = deque(maxlen=max(1, size))
        self._cond = threading.Condition()
        self._waker: Callable[[], None] | None = None
        self.closed = False
        self.dropped = 0

    def offer(self, event: Event) -> None:
        """Queue ``event`` (called by the bus); drops the oldest when full."""
        if self.kinds is not None and event.kind not in self.kinds:
            return
        with self._cond:
            if self.closed:
                return
            if len(self._items) == self._items.maxlen:
                self.dropped += 1
            self._items.append(event)
            self._cond.notify_all()
            waker = self._waker
        if waker is not None:
            waker()

    def offer_many(self, events: list[Event]) -> None:
        """Queue ``events`` (all of one kind, called by the bus) with one wake-up."""
        if self.kinds is not None and events and events[0].kind not in self.kinds:
            return
        with self._cond:
            if self.closed:
                return
            self.dropped += max(0, len(self._items) + len(events) - self._items.maxlen)
            self._items.extend(events)
            self._cond.notify_all()
            waker = self._waker
        if waker is not None:
            waker()

    def _pop(self) -> Event | None:
        with self._cond:
            return self._items.popleft() if self._items else None

    def get(self, timeout: float | None = None) -> Event | None:
        """Next event, waiting up to ``timeout`` seconds (None: timed out or closed)."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self.closed, timeout)
            return self._items.popleft() if self._items else None

    async def next(self, timeout: float) -> Event | None:
        """Next event for an asyncio consumer, waiting up to ``timeout`` seconds without
        blocking the loop (None: timed out or closed)."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(ready.set)
            except RuntimeError:  # the loop has closed: nobody is waiting any more
                pass

        with self._cond:
            if self._items or self.closed:
                return self._items.popleft() if self._items else None
            self._waker = wake
        try:
            await asyncio.wait_for(ready.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._cond:
                self._waker = None
        return self._pop()

    def close(self) -> None:
        """Stop receiving; a waiting ``get``/``next`` returns None. Idempotent."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
            waker = self._waker
        if waker is not None:
            waker()
        self._bus.unsubscribe(self)


class EventBus:
    """Publish/subscribe between the daemon's threads and its event consumers."""

    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()
        self._last_id = 0
        #: The kinds some subscriber takes, kept when subscribers come and go (read unlocked).
        self._wanted: frozenset[str] = frozenset()

    def wanted(self, kind: str) -> bool:
        """Whether any subscriber takes events of ``kind``: a publisher with nobody to tell
        skips building the event (the daemon asks on every tap)."""
        return kind in self._wanted

    def _rewant(self) -> None:
        """Recompute ``_wanted`` (under ``_lock``)."""
        self._wanted = frozenset(k for k in KINDS
                                 if any(s.kinds is None or k in s.kinds for s in self._subs))

    def publish(self, kind: str, data: dict[str, Any], lazy: bool = False) -> Event:
        """Send ``data`` (a JSON-able dict) as an event of ``kind`` to every subscriber.
        InputError for an unknown kind or data that is not JSON-able; never blocks.
        ``lazy=True`` (the daemon's tap and decision events, plain JSON types by
        construction, ``host.web.event_payloads``): ``data`` is neither copied nor checked,
        and its JSON is made when a consumer first reads it."""
        if kind not in KINDS:
            check_kinds([kind])
        if not isinstance(data, dict):
            raise InputError(f"event data must be a dict, got {type(data).__name__}")
        with self._lock:  # ids and delivery in one order for every subscriber
            ts = time.time()
            eid = self._last_id + 1
            if lazy:
                event = Event(eid, kind, ts, data)
            else:
                try:
                    text = event_json(eid, kind, ts, data)
                except (TypeError, ValueError) as e:
                    raise InputError(f"event data is not JSON-able: {e}") from None
                event = Event(eid, kind, ts, dict(data), text)
            self._last_id = eid
            for sub in self._subs:
                sub.offer(event)
        return event

    def publish_many(self, kind: str, datas: list[dict[str, Any]]) -> list[Event]:
        """``publish(kind, data, lazy=True)`` for each of ``datas`` (in order, one ``ts``),
        under one lock and with one wake-up per subscriber."""
        if kind not in KINDS:
            check_kinds([kind])
        with self._lock:
            ts = time.time()
            first = self._last_id + 1
            events = [Event(first + i, kind, ts, data) for i, data in enumerate(datas)]
            self._last_id += len(events)
            for sub in self._subs:
                sub.offer_many(events)
        return events

    def subscribe(self, kinds: Iterable[str] | None = None,
                  queue_size: int | None = None) -> Subscription:
        """A new subscription to ``kinds`` (None: every kind)."""
        sub = Subscription(self, None if kinds is None else check_kinds(kinds),
                           queue_size or self.queue_size)
        with self._lock:
            self._subs.add(sub)
            self._rewant()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget ``sub`` (``Subscription.close`` calls this)."""
        with self._lock:
            self._subs.discard(sub)
            self._rewant()

    @property
    def subscribers(self) -> int:
        """How many subscriptions are open."""
        with self._lock:
            return len(self._subs)
