# Runs on CPython (host): device liveness — online/offline, last seen, persisted device state.
"""Which devices are online, and the device state the daemon persists.

A device goes online with its first authenticated frame (a frame whose MAC fails never
makes it online) and offline when its link goes away, when its MQTT last will says so, or
after ``offline_after_s`` of silence. ``flush()`` persists, through the writer, the highest
seq, last-seen time and online flag of changed devices, and the refusal counts and last
error gathered since the previous flush.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from host.site.metrics import Metrics
from host.site.publish import Publisher
from host.site.refusals import Refusals
from host.site.registry import DeviceState, Registry
from host.site.writer import Writer, WriterClosed
from host.store import site_state as store

log = logging.getLogger("tapkiosk.service")


class Liveness:
    """See the module doc."""

    def __init__(self, writer: Writer, registry: Registry, refusals: Refusals,
                 metrics: Metrics, offline_after_s: float, clock: Callable[[], float],
                 publisher: Publisher | None = None,
                 on_offline: Callable[[str], None] | None = None) -> None:
        self.writer = writer
        self.publisher = publisher or Publisher()
        #: Called with the device id when a device goes offline (its armed sale is denied).
        self.on_offline = on_offline
        self.registry = registry
        self.refusals = refusals
        self.metrics = metrics
        self.offline_after_s = offline_after_s
        self.clock = clock

    def seen(self, st: DeviceState, link: str) -> None:
        """An authenticated frame of the device arrived on ``link``."""
        st.last_seen = self.clock()
        st.link = link
        if not st.online:
            self.set_online(st, True)

    def set_online(self, st: DeviceState, online: bool) -> None:
        """Mark a device on/offline (gauge, log line, persisted at the next flush)."""
        if st.online == online:
            return
        st.online = online
        st.dirty = True
        self.metrics.online.set(sum(1 for d in self.registry.devices() if d.online))
        log.info("device=%s %s link=%s", st.device_id, "online" if online else "offline",
                 st.link or "-")
        self.publisher.device(st.device_id, st.kind, st.link, st.fw, online)
        if not online and self.on_offline is not None:
            try:
                self.on_offline(st.device_id)
            except Exception:  # noqa: BLE001 - going offline must not fail on a sale
                log.exception("device=%s ending its sale failed", st.device_id)

    def link_down(self, device_id: str | None) -> None:
        """A link serving ``device_id`` went away."""
        st = self.registry.known(device_id) if device_id is not None else None
        if st is not None:
            self.set_online(st, False)

    def status(self, device_id: str, online: bool) -> None:
        """A retained MQTT status for a device. Anyone who may publish can claim ``online``,
        so only ``offline`` (the device's last will) changes anything."""
        st = self.registry.known(device_id)
        if st is not None and not online:
            self.set_online(st, False)

    def expire(self) -> None:
        """Mark devices silent for ``offline_after_s`` offline."""
        now = self.clock()
        for st in self.registry.devices():
            if st.online and now - st.last_seen > self.offline_after_s:
                self.set_online(st, False)

    def flush(self, wait: bool = False) -> None:
        """Persist the state of changed devices and the refusals counted since last time."""
        rows = []
        for st in self.registry.devices():
            if st.dirty:
                st.dirty = False
                rows.append((st.device_id, st.window.highest, int(st.last_seen), st.online,
                             st.seq_base))
        refused = self.refusals.take()
        if not rows and not refused:
            return

        def write(db) -> None:  # noqa: ANN001 - a sqlite_utils.Database on the writer
            if rows:
                store.save_states(db, rows)
            if refused:
                store.save_refusals(db, refused)

        try:
            fut = self.writer.call(write)
        except WriterClosed:
            return
        if wait:
            fut.result(30)
