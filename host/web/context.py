# Runs on CPython (host): what the web layer is given by the daemon — writer, readers, policy, event bus.
"""The web layer's context: one per application.

Writes run on the daemon's single writer thread (``writer.call``) through the same
:class:`host.admin.core.Admin` methods as the CLI; reads open their own read-only
connection (``read_db()``). Sales made through the API are published on the event bus.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlite_utils

from host.admin import Admin
from host.errors import HostError
from host.rules.policy import Policy
from host.web.events import EventBus, Subscription
from host.web.permissions import Actor

#: Seconds a request waits for its write; on a time-out the client retries with the same key.
WRITE_TIMEOUT_S = 30.0


class WriterLike(Protocol):
    """What the web layer needs of ``host.site.writer.Writer``."""

    def call(self, fn: Callable[[sqlite_utils.Database], Any]) -> Future: ...


class SalesLike(Protocol):
    """What the web layer needs of the daemon's ``host.site.sales.SaleDesk``."""

    def arm(self, device_id: str, **kw: Any) -> dict[str, Any]: ...
    def cancel(self, sale_id: int) -> dict[str, Any]: ...
    def get(self, sale_id: int) -> dict[str, Any]: ...
    def wait(self, sale_id: int, timeout: float) -> dict[str, Any]: ...


class ReadersLike(Protocol):
    """What the web layer needs of the daemon's ``host.site.service.Service``."""

    def device(self, device_id: str) -> Any: ...
    def push_config(self, device_id: str) -> dict[str, Any]: ...


class NoSales(HostError):
    """This server runs without the daemon's links: no sale can be armed (HTTP 503)."""


class NoReaders(NoSales):
    """This server runs without the daemon's links: nothing can be sent to a reader (503)."""


class WriteTimeout(HostError):
    """The writer did not answer in time (HTTP 503); the write may still commit, so the client
    retries with the same Idempotency-Key."""


@dataclass
class WebContext:
    """Everything a request handler may use."""

    writer: WriterLike
    read_db: Callable[[], sqlite_utils.Database]
    policy: Policy
    bus: EventBus
    #: The daemon's sales desk (None: an API server without readers; sales answer 503).
    sales: SalesLike | None = None
    #: The daemon's frame service, to reach connected readers (None: a server without links).
    readers: ReadersLike | None = None
    write_timeout_s: float = WRITE_TIMEOUT_S
    _streams: set[Subscription] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def write(self, actor: Actor, op: Callable[[Admin], dict[str, Any]]) -> dict[str, Any]:
        """Run ``op(Admin)`` on the writer thread, as ``actor``, and return its result."""
        future = self.writer.call(lambda db: op(Admin(db, self.policy,
                                                      actor=f"api:{actor.name}")))
        try:
            return future.result(self.write_timeout_s)
        except FutureTimeout:
            raise WriteTimeout("the database writer did not answer in time; retry with the "
                               "same Idempotency-Key") from None

    def sale(self, actor: Actor, kind: str, member_id: int,
             op: Callable[[Admin], dict[str, Any]]) -> dict[str, Any]:
        """Run ``op(Admin)`` on the writer thread and return its result; a first (not
        replayed) result is published as a ``sale`` event of ``kind``."""
        result = self.write(actor, op)
        if not result.get("replayed"):
            self.bus.publish("sale", {"kind": kind, "member_id": member_id,
                                      "token": actor.name,
                                      **{k: v for k, v in result.items() if k != "replayed"}})
        return result

    def desk(self) -> SalesLike:
        """The sales desk, or NoSales."""
        if self.sales is None:
            raise NoSales("this server has no readers: sales need the daemon")
        return self.sales

    def links(self) -> ReadersLike:
        """The daemon's readers, or NoReaders (this server runs without the daemon's links)."""
        if self.readers is None:
            raise NoReaders("this server has no readers: pushing to a reader needs the daemon")
        return self.readers

    def open_stream(self, kinds: frozenset[str] | None) -> Subscription:
        """A bus subscription for an event stream; closed by :meth:`close_streams`."""
        sub = self.bus.subscribe(kinds)
        with self._lock:
            self._streams.add(sub)
        return sub

    def end_stream(self, sub: Subscription) -> None:
        """Close one stream's subscription."""
        sub.close()
        with self._lock:
            self._streams.discard(sub)

    def close_streams(self) -> None:
        """Close every open event stream (the server is stopping)."""
        with self._lock:
            subs, self._streams = list(self._streams), set()
        for sub in subs:
            sub.close()
