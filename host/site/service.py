# Runs on CPython (host): the daemon's frame handler — checks a frame, dispatches it by type.
"""Frame handler shared by every link.

``Service.handle(raw, send, link=..., expect=..., received=...)`` takes one packet (no COBS,
no CRC) from any link and answers through ``send(packet_bytes)`` (which must not block: a
link that can block gives a :class:`host.site.replies.SendQueue`'s ``put``):

1. structure (``protocol.packet.parse``'s, by :mod:`host.site.frame_parse`), then the device
   id must equal ``expect`` (the MQTT topic's id, or the id a serial line is bound to);
2. registered device (:mod:`host.site.registry`), MAC with its key, direction and body;
3. dispatch by type: TAP and VOID -> :mod:`host.site.taps` (replay and in-flight gate,
   writer, DECISION from the reply thread); every other type -> :mod:`host.site.control`
   (replay window, then HELLO -> WELCOME + CONFIG, PING -> PONG, EVENT stored, ...).

A refused frame is counted and logged (:mod:`host.site.refusals`); it gets an ERROR only
when it proved it came from the device. Liveness and the persisted device state are in
:mod:`host.site.liveness`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from host.errors import HostError
from host.rules.engine import Decision, Tap
from host.rules.policy import Policy
from host.site.control import Controls, Handler, Send
from host.site.devconfig import DeviceConfigs, ServiceConfig
from host.site.frame_parse import parse
from host.site.hellos import Hellos
from host.site.inflight import InflightGate
from host.site.liveness import Liveness
from host.site.metrics import Metrics
from host.site.refusals import Refusals
from host.site.registry import DeviceState, Registry
from host.site.publish import Publisher
from host.site.replies import ReplyThread
from host.site.sales import SaleDesk
from host.site.tap_fields import tap_fields
from host.site.taps import Taps
from host.site.update import Updates
from host.site.writer import Writer, WriterClosed
from host.store import site_state as store
from protocol import packet as pk
from protocol.errors import AuthError, ProtocolError


class Service:
    """Authenticates and dispatches frames from every link; see the module doc."""

    def __init__(self, writer: Writer, metrics: Metrics, policy: Policy,
                 config: ServiceConfig | None = None,
                 clock: Callable[[], float] = time.time, bus: Any = None) -> None:
        self.writer = writer
        self.metrics = metrics
        self.policy = policy
        self.config = config or ServiceConfig()
        self.clock = clock
        self.reader = store.Reader(getattr(writer, "db_path", None),
                                   lambda fn: writer.call(fn).result(30))
        self.registry = Registry(writer, self.reader, self.config.cache_size)
        self.refusals = Refusals(self.registry, metrics, clock)
        self.gate = InflightGate()
        self.replies = ReplyThread()
        #: Events for the HTTP API and MQTT (``host.web.events.EventBus``; None: none).
        self.publisher = Publisher(bus)
        self.sales = SaleDesk(writer, self.registry, self.reader, self.publisher)
        self.taps = Taps(writer, self.registry, self.gate, self.replies, self.refusals,
                         metrics, self.reader, self.publisher, self.sales)
        self.configs = DeviceConfigs(writer, self.registry, self.reader, policy, self.config,
                                     clock)
        self.liveness = Liveness(writer, self.registry, self.refusals, metrics,
                                 self.config.offline_after_s, clock, self.publisher,
                                 self.sales.offline)
        self.updates = Updates(writer, self.registry, self.gate, self.reader, clock)
        self.hellos = Hellos(writer, self.registry, self.configs, clock)
        self._next_check = 0.0
        self._frame_counters: dict[int, Any] = {}
        self.controls = Controls(writer, self.registry, self.refusals, metrics, self.configs,
                                 self.hellos, self.updates, self.sales, self.config, clock)
        self._handlers: dict[int, Handler] = {pk.TAP: self.taps.tap, pk.VOID: self.taps.void,
                                              **self.controls.handlers()}

    # ----------------------------------------------------------------- entry point
    def handle(self, raw: bytes, send: Send, *, link: str = "", expect: str | None = None,
               received: float | None = None) -> str | None:
        """Handle one packet; returns the authenticated device id, or None if refused.
        ``received``: ``time.perf_counter()`` when the link got it (default: now)."""
        t0 = time.perf_counter() if received is None else received
        refuse = self.refusals.refuse
        try:
            p = parse(raw)   # host/site/frame_parse.py: pk.parse's Packet and errors
        except ProtocolError as e:
            refuse("malformed", None, None, send, link, str(e))
            return None
        if expect is not None and p.device_id != expect:
            cause = "topic_mismatch" if link.startswith("mqtt") else "line_mismatch"
            refuse(cause, None, p, send, link, f"packet says {p.device_id} on a link of {expect}")
            return None
        try:
            st = self.registry.device(p.device_id)
        except (HostError, TimeoutError, sqlite3.Error) as e:
            refuse("internal", None, p, send, link, f"store: {e}")
            return None
        if st is None:
            refuse("unknown_device", None, p, send, link, f"unknown device {p.device_id}")
            return None
        try:
            self.registry.verify(st, p)
            if pk.UP not in pk.DIRECTIONS[p.type]:
                raise ProtocolError(f"{p.name} may not be sent by a device")
            p.fields = (tap_fields(p.body) if p.type == pk.TAP
                        else pk.decode_body(p.type, p.body))
        except AuthError as e:
            refuse("bad_mac", st, p, send, link, str(e))
            return None
        except (HostError, TimeoutError, sqlite3.Error) as e:   # re-reading the key failed
            refuse("internal", st, p, send, link, f"store: {e}")
            return None
        except ProtocolError as e:
            refuse("malformed", st, p, send, link, str(e), e.code)
            return None
        counter = self._frame_counters.get(p.type)
        if counter is None:   # labels() looks its child up under a lock: once per type
            counter = self._frame_counters[p.type] = self.metrics.frames.labels(p.name)
        counter.inc()
        self.liveness.seen(st, link)
        st.send = send
        self._handlers[p.type](st, p, send, link, t0)
        return st.device_id

    # ----------------------------------------------------------------- for links and daemon
    def device(self, device_id: str) -> DeviceState | None:
        """The RAM state of a registered device (None when it is not registered)."""
        return self.registry.device(device_id)

    def devices(self) -> list[DeviceState]:
        """Every device seen since start."""
        return self.registry.devices()

    def submit_local_tap(self, tap: Tap, link: str = "nfc") -> Decision:
        """Decide a tap made on the host itself (a USB reader): no frame, no MAC. Blocks."""
        st = self.registry.device(tap.device_id)
        if st is None:
            raise HostError(f"unknown device {tap.device_id!r}: register it first")
        self.liveness.seen(st, link)
        return self.taps.local_tap(st, tap, link)

    def set_online(self, st: DeviceState, online: bool) -> None:
        """Mark a device on/offline."""
        self.liveness.set_online(st, online)

    def link_down(self, device_id: str | None) -> None:
        """A link serving ``device_id`` went away."""
        self.liveness.link_down(device_id)

    def status(self, device_id: str, online: bool) -> None:
        """A retained MQTT status (the device's last will)."""
        self.liveness.status(device_id, online)

    def check_configs(self) -> int:
        """Push changed allow-lists to connected gates; returns how many got one."""
        return self.configs.check()

    def push_config(self, device_id: str) -> dict[str, Any]:
        """Send a connected device its config (a gate: its allow-list) now; see
        ``DeviceConfigs.push_now``."""
        return self.configs.push_now(device_id)

    def tick(self) -> None:
        """Once a second: mark silent devices offline, persist device state, store the
        HELLOs answered in an outage once it is over (and push their configs), and every
        ``config_check_s`` push changed configs to connected gates."""
        self.liveness.expire()
        self.liveness.flush()
        self.hellos.after_outage()
        self.updates.start()
        try:
            self.sales.tick()
        except WriterClosed:
            pass
        if time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + self.config.config_check_s
            self.configs.check()

    def flush(self, wait: bool = False) -> None:
        """Persist the device state that changed."""
        self.liveness.flush(wait)

    def stop_accepting(self) -> None:
        """Refuse new taps from now on (ERROR internal); in-flight ones still finish."""
        self.gate.stop_accepting()

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until no tap is being decided; True when idle."""
        return self.gate.drain(timeout)

    def close(self) -> None:
        """Stop the reply thread once it has run what is queued; close the read connection
        (the writer is closed by its owner)."""
        self.updates.close()
        self.replies.close()
        self.reader.close()
