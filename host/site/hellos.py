# Runs on CPython (host): storing a reader's HELLO, and the HELLOs a chain store answered in a WAN outage.
"""``Hellos.store(st, seq, floor, fw, now)`` stores an accepted HELLO on the writer and returns
the reader's config (:mod:`host.site.devconfig`). A chain store's daemon in a WAN outage
(host/site/outage.py) cannot store it: the Service welcomes the reader with the config it
has and hands the HELLO to ``answered_offline``; once the outage is over, ``after_outage``
(from the Service's tick) stores each and pushes the config the reader lacks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from host.site.devconfig import DeviceConfig, DeviceConfigs
from host.site.registry import DeviceState, Registry
from host.site.writer import Writer
from host.store import site_state as store
from host.store.outage import is_unavailable

log = logging.getLogger("tapkiosk.service")


class Hellos:
    """See the module doc."""

    def __init__(self, writer: Writer, registry: Registry, configs: DeviceConfigs,
                 clock: Callable[[], float]) -> None:
        self.writer = writer
        self.registry = registry
        self.configs = configs
        self.clock = clock
        #: HELLOs answered in an outage (nothing stored, no config pushed), by device:
        #: (seq, resend floor, firmware); stored and pushed once the database is back.
        self._offline: dict[str, tuple[int, int, str]] = {}

    def store(self, st: DeviceState, seq: int, floor: int, fw: str, now: int) -> DeviceConfig:
        """Store an accepted HELLO and compute the device's config (on the writer); a HELLO
        answered offline before is superseded."""
        self._offline.pop(st.device_id, None)

        def persist(db: Any) -> Any:
            store.save_hello(db, st.device_id, seq, floor, fw, now)
            return self.configs.sync(db, st.device_id, st.kind, now)

        return self.writer.call(persist).result(30)

    def in_outage(self, e: Exception) -> bool:
        """Whether ``e`` (from :meth:`store`) is a chain store's WAN outage."""
        return getattr(self.writer, "outage", None) is not None and is_unavailable(e)

    def answered_offline(self, st: DeviceState, seq: int, floor: int, fw: str) -> DeviceConfig:
        """Keep a HELLO answered in an outage; the config to welcome it with (what it has,
        nothing to push)."""
        self._offline[st.device_id] = (seq, floor, fw)
        return DeviceConfig(st.cfg_version, st.cfg_acked, [])

    def after_outage(self) -> int:
        """Once the chain's database is back: store the HELLOs answered offline and push
        each still connected reader the config it lacks; returns how many got one."""
        outage = getattr(self.writer, "outage", None)
        if not self._offline or outage is None or outage.offline:
            return 0
        pushed = 0
        for device_id, (seq, floor, fw) in list(self._offline.items()):
            st = self.registry.device(device_id)
            if st is None:
                self._offline.pop(device_id, None)
                continue
            try:
                cfg = self.store(st, seq, floor, fw, int(self.clock()))
            except Exception as e:  # noqa: BLE001 - tried again at the next tick
                if is_unavailable(e):                    # down again: kept for later
                    self._offline[device_id] = (seq, floor, fw)
                    return pushed
                log.error("device=%s HELLO answered offline not stored: %s", device_id, e)
                self._offline.pop(device_id, None)
                continue
            st.cfg_version = max(st.cfg_version, cfg.version)
            send = st.send
            if st.cfg_acked < cfg.version and cfg.frames and send is not None:
                log.info("device=%s HELLO answered offline stored: pushing config %d",
                         device_id, cfg.version)
                self.configs.push(st, cfg, send)
                pushed += 1
        return pushed
