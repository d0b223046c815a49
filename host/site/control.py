# Runs on CPython (host): a device's frames other than TAP and VOID, once authenticated.
"""``Controls`` answers the control frames the Service has authenticated (``handlers()``: by
type, as the Service dispatches them): each passes the device's replay window first, where a
retransmission gets the cached reply and a replay is refused (ERROR replay). HELLO -> stored
(:mod:`host.site.hellos`, or answered offline in a chain store's WAN outage), WELCOME, then
the CONFIG the device lacks (:mod:`host.site.devconfig`); PING -> PONG; PONG -> accepted;
EVENT -> stored on the writer, logged (a fault or tamper at WARNING), a wash bay's button to
the sale desk, a config applied to the configs, an update's progress to the updates; ACK ->
config acknowledged; STATUS and UPDATE_STATUS -> the updates (:mod:`host.site.update`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from host.site.devconfig import DeviceConfigs, ServiceConfig
from host.site.hellos import Hellos
from host.site.metrics import Metrics
from host.site.refusals import Refusals
from host.site.registry import DeviceState, Registry
from host.site.sales import SaleDesk
from host.site.update import Updates
from host.site.writer import Writer
from host.store import site_state as store
from protocol import codes
from protocol import ota
from protocol import packet as pk
from protocol.errors import ReplayError
from protocol.replay import RETRANSMIT

log = logging.getLogger("tapkiosk.service")

Send = Callable[[bytes], None]
Handler = Callable[[DeviceState, pk.Packet, Send, str, float], None]

_WARN_EVENTS = (codes.EV_READER_FAULT, codes.EV_TAMPER, codes.EV_OUTBOX_FULL)


class Controls:
    """See the module doc. Every handler takes ``(st, packet, send, link, received)``."""

    def __init__(self, writer: Writer, registry: Registry, refusals: Refusals,
                 metrics: Metrics, configs: DeviceConfigs, hellos: Hellos, updates: Updates,
                 sales: SaleDesk, config: ServiceConfig,
                 clock: Callable[[], float] = time.time) -> None:
        self.writer = writer
        self.registry = registry
        self.refusals = refusals
        self.metrics = metrics
        self.configs = configs
        self.hellos = hellos
        self.updates = updates
        self.sales = sales
        self.config = config
        self.clock = clock

    def handlers(self) -> dict[int, Handler]:
        """The handler of each frame type this class answers."""
        return {pk.HELLO: self.hello, pk.PING: self.ping, pk.EVENT: self.event,
                pk.ACK: self.ack, pk.PONG: self.pong, ota.STATUS: self.status,
                ota.UPDATE_STATUS: self.update_status}

    def _window(self, st: DeviceState, p: pk.Packet, send: Send, link: str) -> bool:
        """Replay window for frames other than TAP and VOID: True when new."""
        with st.lock:
            try:
                state, cached = st.window.check(p.seq, p.raw, False)
            except ReplayError as e:
                self.refusals.refuse("replay", st, p, send, link, str(e), codes.ERR_REPLAY)
                return False
        if state == RETRANSMIT:
            self.metrics.retransmits.inc()
            if cached:
                send(cached)
            return False
        return True

    def _accept(self, st: DeviceState, p: pk.Packet, reply: bytes | None) -> None:
        with st.lock:
            st.window.accept(p.seq, p.raw, reply)
            st.dirty = True

    def ping(self, st: DeviceState, p: pk.Packet, send: Send, link: str, t0: float) -> None:
        if self._window(st, p, send, link):
            reply = self.registry.encode(st, pk.PONG, {
                "nonce": p.fields["nonce"], "host_time": int(self.clock()) & 0xFFFFFFFF})
            self._accept(st, p, reply)
            send(reply)

    def pong(self, st: DeviceState, p: pk.Packet, send: Send, link: str, t0: float) -> None:
        if self._window(st, p, send, link):
            self._accept(st, p, None)

    def ack(self, st: DeviceState, p: pk.Packet, send: Send, link: str, t0: float) -> None:
        if self._window(st, p, send, link):
            self._accept(st, p, None)
            self.configs.acked(st, p.fields["ref_seq"], None)

    def event(self, st: DeviceState, p: pk.Packet, send: Send, link: str, t0: float) -> None:
        if not self._window(st, p, send, link):
            return
        f = p.fields
        code = f["code"]
        name = codes.EVENTS[code] if code < len(codes.EVENTS) else f"code{code}"
        self._accept(st, p, None)
        row = (int(self.clock()), st.device_id, st.stored(p.seq), code, name, f["value"], f["text"])
        self.writer.call(lambda db: store.save_event(db, row))
        log.log(logging.WARNING if code in _WARN_EVENTS else logging.INFO,
                "event device=%s name=%s value=%d text=%r", st.device_id, name, f["value"],
                f["text"])
        if code == codes.EV_BUTTON and st.kind == "wash":
            self.sales.button(st.device_id, f["value"])
        if code == codes.EV_CONFIG_APPLIED:
            self.configs.acked(st, None, f["value"])
        self.updates.on_event(st, code, f["text"])

    def status(self, st: DeviceState, p: pk.Packet, send: Send, link: str, t0: float) -> None:
        if self._window(st, p, send, link):
            self._accept(st, p, None)
            self.updates.on_status(st, p.fields)

    def update_status(self, st: DeviceState, p: pk.Packet, send: Send, link: str,
                       t0: float) -> None:
        if self._window(st, p, send, link):
            self._accept(st, p, None)
            self.updates.on_update_status(st, p.fields)

    def hello(self, st: DeviceState, p: pk.Packet, send: Send, link: str, t0: float) -> None:
        if not self._window(st, p, send, link):
            return
        f = p.fields
        kind = codes.KINDS[f["kind"]]
        if kind != st.kind:
            log.warning("device=%s says it is a %s but is registered as a %s", st.device_id,
                        kind, st.kind)
        with st.lock:
            st.window.hello(p.seq, f["resend_floor"])
            floor = st.window.floor
        st.fw = f["fw"]
        now = int(self.clock())
        try:
            cfg = self.hellos.store(st, p.seq, floor, f["fw"], now)
        except Exception as e:  # noqa: BLE001 - answer nothing; the device says HELLO again
            if not self.hellos.in_outage(e):
                log.error("device=%s HELLO not stored: %s", st.device_id, e)
                return
            # A chain store in a WAN outage: welcome it with the config it has (the seqs
            # are kept by the replay window; the journal's taps carry them to the database).
            log.warning("device=%s HELLO answered offline, not stored: %s", st.device_id, e)
            cfg = self.hellos.answered_offline(st, p.seq, floor, f["fw"])
        st.cfg_version, st.cfg_acked = cfg.version, max(st.cfg_acked, cfg.acked)
        welcome = self.registry.encode(st, pk.WELCOME, {
            "hello_seq": p.seq, "host_time": now & 0xFFFFFFFF,
            "heartbeat_s": self.config.heartbeat_s,
            "offline_after_s": self.config.offline_after_s, "cfg_version": cfg.version})
        self._accept(st, p, welcome)
        log.info("hello device=%s fw=%s boot=%d reset=%d resend_floor=%d cfg=%d acked=%d",
                 st.device_id, f["fw"], f["boot"], f["reset"], floor, cfg.version, st.cfg_acked)
        send(welcome)
        if st.cfg_acked < cfg.version and cfg.frames:
            self.configs.push(st, cfg, send)
