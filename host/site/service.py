# Runs on CPython (host): the daemon's frame handler — authentication, replay window, dispatch.
"""Frame handler shared by every link.

``Service.handle(raw, send, link=..., expect=...)`` takes one packet (no COBS, no CRC) from
any link and answers through ``send(packet_bytes)``:

1. structure (``protocol.packet.parse``), then the device id must equal ``expect`` (the MQTT
   topic's id, or the id a serial line is bound to);
2. known device, MAC with that device's key (the key is re-read once when it does not match,
   so a rotated key takes effect without a restart), direction and body;
3. replay window per device (``protocol.replay.ReplayWindow``, restored from the store at first
   contact): a retransmission gets the cached reply byte for byte and nothing is applied
   again; a tap already applied before a restart gets the stored reply from the engine;
4. dispatch: TAP -> writer (group commit) -> DECISION, HELLO -> WELCOME (+ CONFIG when the
   device's acknowledged config is behind), PING -> PONG, EVENT -> stored, ACK -> config
   acknowledged, VOID -> writer (``host.rules.voids.void_tap``) -> DECISION reason ``voided``.

A gate's CONFIG carries the offline allow-list, which changes while the gate stays connected
(a card blocked or enrolled, a pass sold or expired). Every ``config_check_s`` seconds
``check_configs()`` reads the allow-list on its own read-only connection (no load on the
writer) and, only when it changed, recomputes each connected gate's config on the writer
(a higher ``cfg_version``) and pushes it through the link the gate last spoke on.

A refused frame gets an ERROR (only when the device is known: MAC'd with its key), a log line
and a counter; never a decision. Every database access goes through the single writer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from host.rules.engine import Decision, Tap, clip_text
from host.errors import HostError
from host.site.metrics import Metrics
from host.rules.policy import Policy
from host.store.db import BUSY_TIMEOUT_MS
from host.store.devices import touch_device
from host.rules.voids import VoidRefused, stored_void_reply, void_tap
from host.site.writer import Writer, WriterClosed
from protocol import codes
from protocol import packet as pk
from protocol.errors import AuthError, ProtocolError, ReplayError
from protocol.mac import Mac
from protocol.replay import LATE, NEW, RETRANSMIT, ReplayWindow

log = logging.getLogger("tapkiosk.service")

Send = Callable[[bytes], None]

_DIRECTIONS = {pk.DIR_NONE: None, pk.DIR_IN: "in", pk.DIR_OUT: "out"}
_UNKNOWN_TTL_S = 2.0      # how long "no such device" is remembered before asking the store again
_KEY_RELOAD_S = 2.0       # at most one key re-read per device this often
_ALLOW_PER_FRAME = 24


@dataclass
class ServiceConfig:
    """Timing and feedback values the daemon announces to devices."""

    heartbeat_s: int = 30
    offline_after_s: int = 90
    debounce_ms: int = 1500
    cache_size: int = 32
    config_check_s: float = 5.0


@dataclass
class _Config:
    version: int
    acked: int
    frames: list[dict[str, Any]]


@dataclass
class DeviceState:
    """What the service keeps in RAM about one device."""

    device_id: str
    kind: str
    key: bytes
    mac: Mac
    window: ReplayWindow
    down_boot: int
    down_ctr: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    down_lock: threading.Lock = field(default_factory=threading.Lock)
    inflight: dict[int, tuple[bytes, list[Send]]] = field(default_factory=dict)
    online: bool = False
    last_seen: float = 0.0
    link: str = ""
    dirty: bool = False
    fw: str = ""
    key_checked: float = 0.0
    cfg_version: int = 0
    cfg_acked: int = 0
    cfg_pending: dict[int, int] = field(default_factory=dict)  # down seq -> cfg_version
    send: Send | None = None    # how to reach the device: the link it last spoke on


class Service:
    """Authenticates and dispatches frames from every link; see the module doc."""

    def __init__(self, writer: Writer, metrics: Metrics, policy: Policy,
                 config: ServiceConfig | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.writer = writer
        self.metrics = metrics
        self.policy = policy
        self.config = config or ServiceConfig()
        self.clock = clock
        self._devices: dict[str, DeviceState] = {}
        self._unknown: dict[str, float] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._inflight = 0
        self._accepting = True
        self._reader: sqlite_utils.Database | None = None
        self._allow_seen: bytes | None = None
        self._next_check = 0.0
        # Decisions are sent from this thread, not from the writer's: a link that blocks on
        # a write (a serial port whose peer stopped reading) must not hold up the database.
        self._replies: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._replier = threading.Thread(target=self._reply_loop, name="tapkiosk-reply",
                                         daemon=True)
        self._replier.start()

    # ----------------------------------------------------------------- device state
    def device(self, device_id: str) -> DeviceState | None:
        """The RAM state of ``device_id``, loaded from the store on first contact (None when
        the device is not registered)."""
        with self._lock:
            st = self._devices.get(device_id)
            if st is not None:
                return st
            t = self._unknown.get(device_id)
            if t is not None and time.monotonic() - t < _UNKNOWN_TTL_S:
                return None
        row = self.writer.call(lambda db: _load_device(db, device_id)).result(30)
        with self._lock:
            if row is None:
                self._unknown[device_id] = time.monotonic()
                return None
            st = self._devices.get(device_id)
            if st is None:
                st = DeviceState(
                    device_id=device_id, kind=row["kind"], key=row["key"], mac=Mac(row["key"]),
                    window=ReplayWindow(row["highest"], row["resend_floor"],
                                        self.config.cache_size),
                    down_boot=row["down_boot"], cfg_version=row["cfg_version"],
                    cfg_acked=row["cfg_acked"], key_checked=time.monotonic())
                self._devices[device_id] = st
                self._unknown.pop(device_id, None)
            return st

    def devices(self) -> list[DeviceState]:
        """Every device seen since start."""
        with self._lock:
            return list(self._devices.values())

    def next_down_seq(self, st: DeviceState) -> int:
        """Next host -> device seq: boot << 16 | counter; a new boot is persisted on wrap."""
        with st.down_lock:
            st.down_ctr += 1
            if st.down_ctr > 0xFFFF:
                boot = st.down_boot + 1
                self.writer.call(lambda db: touch_device(db, st.device_id, down_seq=boot << 16))
                st.down_boot, st.down_ctr = boot, 1
            return ((st.down_boot & 0xFFFF) << 16) | st.down_ctr

    def _encode(self, st: DeviceState, ptype: int, fields: dict[str, Any]) -> bytes:
        return pk.encode(ptype, self.next_down_seq(st), st.device_id, fields, st.mac, pk.DOWN)

    # ----------------------------------------------------------------- entry point
    def handle(self, raw: bytes, send: Send, *, link: str = "", expect: str | None = None
               ) -> str | None:
        """Handle one packet; returns the authenticated device id, or None if refused."""
        t0 = time.perf_counter()
        try:
            p = pk.parse(raw)
        except ProtocolError as e:
            self._reject("malformed", None, None, send, link, str(e))
            return None
        if expect is not None and p.device_id != expect:
            cause = "topic_mismatch" if link.startswith("mqtt") else "line_mismatch"
            self._reject(cause, None, p, send, link,
                         f"packet says {p.device_id} on a link of {expect}")
            return None
        try:
            st = self.device(p.device_id)
        except (HostError, TimeoutError) as e:
            self._reject("internal", None, p, send, link, f"store: {e}")
            return None
        if st is None:
            self._reject("unknown_device", None, p, send, link, f"unknown device {p.device_id}")
            return None
        try:
            self._verify(st, p)
            if pk.UP not in pk.DIRECTIONS[p.type]:
                raise ProtocolError(f"{p.name} may not be sent by a device")
            p.fields = pk.decode_body(p.type, p.body)
        except AuthError as e:
            self._reject("bad_mac", st, p, send, link, str(e), codes.ERR_BAD_MAC)
            return None
        except ProtocolError as e:
            self._reject("malformed", st, p, send, link, str(e), e.code)
            return None
        self.metrics.frames.labels(p.name).inc()
        self._seen(st, link)
        st.send = send
        if p.type == pk.TAP:
            self._tap(st, p, send, link, t0)
            return st.device_id
        if p.type == pk.VOID:
            self._void(st, p, send, link, t0)
            return st.device_id
        with st.lock:
            try:
                state, cached = st.window.check(p.seq, p.raw, False)
            except ReplayError as e:
                self._reject("replay", st, p, send, link, str(e), codes.ERR_REPLAY)
                return None
            if state == RETRANSMIT:
                self.metrics.retransmits.inc()
                if cached:
                    send(cached)
                return st.device_id
        if p.type == pk.HELLO:
            self._hello(st, p, send)
        elif p.type == pk.PING:
            reply = self._encode(st, pk.PONG, {"nonce": p.fields["nonce"],
                                               "host_time": int(self.clock()) & 0xFFFFFFFF})
            self._accept(st, p, reply)
            send(reply)
        elif p.type == pk.EVENT:
            self._event(st, p)
        elif p.type == pk.ACK:
            self._accept(st, p, None)
            self._config_acked(st, p.fields["ref_seq"], None)
        elif p.type == pk.PONG:
            self._accept(st, p, None)
        return st.device_id

    def _verify(self, st: DeviceState, p: pk.Packet) -> None:
        try:
            pk.verify(p, st.mac, pk.UP)
            return
        except AuthError:
            if time.monotonic() - st.key_checked < _KEY_RELOAD_S:
                raise
        st.key_checked = time.monotonic()
        key = self.writer.call(lambda db: _device_key(db, st.device_id)).result(30)
        if key is None or key == st.key:
            raise AuthError(f"bad MAC from {p.device_id}")
        st.key, st.mac = key, Mac(key)
        log.info("device=%s key changed in the store; using the new key", st.device_id)
        pk.verify(p, st.mac, pk.UP)

    def _accept(self, st: DeviceState, p: pk.Packet, reply: bytes | None) -> None:
        with st.lock:
            st.window.accept(p.seq, p.raw, reply)
            st.dirty = True

    def _seen(self, st: DeviceState, link: str) -> None:
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
        self.metrics.online.set(sum(1 for d in self.devices() if d.online))
        log.info("device=%s %s link=%s", st.device_id, "online" if online else "offline",
                 st.link or "-")

    def _reject(self, cause: str, st: DeviceState | None, p: pk.Packet | None, send: Send,
                link: str, why: str, err_code: int = 0) -> None:
        self.metrics.rejected.labels(cause).inc()
        log.warning("refused cause=%s device=%s seq=%s link=%s: %s", cause,
                    p.device_id if p is not None else "-", p.seq if p is not None else "-",
                    link or "-", why)
        if st is None or p is None or not err_code:
            return
        try:
            send(self._encode(st, pk.ERROR, {"ref_seq": p.seq, "code": err_code,
                                             "text": clip_text(why)}))
        except Exception as e:  # noqa: BLE001 - a broken link must not break the handler
            log.warning("device=%s cannot send ERROR: %s", st.device_id, e)

    # ----------------------------------------------------------------- taps
    def _tap(self, st: DeviceState, p: pk.Packet, send: Send, link: str, t0: float) -> None:
        f = p.fields
        with st.lock:
            inflight = st.inflight.get(p.seq)
            if inflight is not None:
                if inflight[0] == p.raw:
                    inflight[1].append(send)   # same frame again while deciding: one answer each
                    self.metrics.retransmits.inc()
                    return
                self._reject("replay", st, p, send, link, f"seq {p.seq} reused while deciding",
                             codes.ERR_REPLAY)
                return
            try:
                state, cached = st.window.check(p.seq, p.raw, True)
            except ReplayError as e:
                refused = e
            else:
                refused = None
            if refused is not None:
                pass
            elif state == RETRANSMIT:
                self.metrics.retransmits.inc()
                if cached:
                    send(cached)
                return
            elif not self._accepting:
                self._reject("internal", st, p, send, link, "host is shutting down",
                             codes.ERR_INTERNAL)
                return
            else:
                st.inflight[p.seq] = (p.raw, [send])
        if refused is not None:
            self._old_tap(st, p, send, link, refused)
            return
        tap = Tap(device_id=st.device_id, seq=p.seq, uid=f["uid"].hex().upper(), sak=f["sak"],
                  service=f["service"], amount_fen=f["amount"],
                  direction=_DIRECTIONS.get(f["direction"]), offline=bool(f["flags"] & 1),
                  device_time=f["device_time"], secure=f["secure"])
        with self._lock:
            self._inflight += 1
        try:
            fut = self.writer.submit_tap(tap, lambda t, d: self.encode_decision(st, t, d))
        except WriterClosed as e:
            self._tap_failed(st, p, link, e)
            return
        fut.add_done_callback(lambda fu: self._replies.put(
            lambda: self._tap_done(st, p, tap, fu, link, t0, state)))

    def _old_tap(self, st: DeviceState, p: pk.Packet, send: Send, link: str,
                 refused: ReplayError) -> None:
        """A TAP the window refuses: if the store already applied this very tap (the RAM cache
        was lost in a restart), answer with the stored reply; otherwise refuse it."""
        f = p.fields
        dev, seq = st.device_id, p.seq

        def lookup(db: sqlite_utils.Database) -> Any:
            return db.execute("SELECT uid, amount_fen, service, reply FROM taps "
                              "WHERE device_id = ? AND seq = ?", (dev, seq)).fetchone()

        try:
            row = self.writer.call(lookup).result(30)
        except Exception as e:  # noqa: BLE001 - refuse rather than guess
            row = None
            log.error("device=%s seq=%d stored-tap lookup failed: %s", dev, seq, e)
        if (row is not None and row[0] == f["uid"].hex().upper() and row[1] == f["amount"]
                and row[2] == f["service"] and row[3]):
            reply = bytes(row[3])
            with st.lock:
                st.window.accept(seq, p.raw, reply)
            self.metrics.retransmits.inc()
            log.info("tap device=%s seq=%d already applied: stored reply sent again", dev, seq)
            send(reply)
            return
        self._reject("replay", st, p, send, link, str(refused), codes.ERR_REPLAY)

    # ----------------------------------------------------------------- voids
    def _void(self, st: DeviceState, p: pk.Packet, send: Send, link: str, t0: float) -> None:
        """A VOID: the device gave up on tap ``tap_seq`` and started nothing. It passes the
        replay window like a TAP (it may come late from the outbox) and is settled on the
        writer by ``host.rules.voids.void_tap`` (reversed or tombstoned, one transaction). The
        answer is a DECISION for ``tap_seq``, reason ``voided``; a tap granted offline is
        not voided (ERROR ``unsupported``)."""
        tap_seq = p.fields["tap_seq"]
        if not 0 < tap_seq < p.seq:
            self._reject("malformed", st, p, send, link,
                         f"VOID of tap {tap_seq} sent as seq {p.seq}", codes.ERR_MALFORMED)
            return
        refused: ReplayError | None = None
        with st.lock:
            inflight = st.inflight.get(p.seq)
            if inflight is not None:
                if inflight[0] == p.raw:
                    inflight[1].append(send)
                    self.metrics.retransmits.inc()
                    return
                self._reject("replay", st, p, send, link, f"seq {p.seq} reused while voiding",
                             codes.ERR_REPLAY)
                return
            try:
                state, cached = st.window.check(p.seq, p.raw, True)
            except ReplayError as e:
                refused, state = e, 0
            else:
                if state == RETRANSMIT:
                    self.metrics.retransmits.inc()
                    if cached:
                        send(cached)
                    return
                if not self._accepting:
                    self._reject("internal", st, p, send, link, "host is shutting down",
                                 codes.ERR_INTERNAL)
                    return
                st.inflight[p.seq] = (p.raw, [send])
        dev = st.device_id
        if refused is not None:
            try:
                reply = self.writer.call(
                    lambda db: stored_void_reply(db, dev, p.seq, tap_seq)).result(30)
            except Exception as e:  # noqa: BLE001 - refuse rather than guess
                reply = None
                log.error("device=%s VOID seq=%d stored-reply lookup failed: %s", dev, p.seq, e)
            if reply is None:
                self._reject("replay", st, p, send, link, str(refused), codes.ERR_REPLAY)
                return
            with st.lock:
                st.window.accept(p.seq, p.raw, reply)
            self.metrics.retransmits.inc()
            send(reply)
            return
        engine = self.writer.engine

        def encode(d: Decision) -> bytes:
            return self._encode(st, pk.DECISION, decision_fields(tap_seq, d))

        with self._lock:
            self._inflight += 1
        try:
            fut = self.writer.call(
                lambda db: void_tap(engine, dev, tap_seq, encode, void_seq=p.seq))
        except WriterClosed as e:
            self._tap_failed(st, p, link, e)
            return
        fut.add_done_callback(lambda fu: self._replies.put(
            lambda: self._void_done(st, p, tap_seq, fu, link, t0, state)))

    def _void_done(self, st: DeviceState, p: pk.Packet, tap_seq: int, fut: Future, link: str,
                   t0: float, state: int) -> None:
        err = fut.exception()
        if err is not None:
            with st.lock:
                _raw, sends = st.inflight.pop(p.seq, (b"", []))
            if isinstance(err, VoidRefused):
                self.metrics.voids.labels("refused").inc()
                cause, code = "void_refused", codes.ERR_UNSUPPORTED
            else:
                cause, code = "internal", codes.ERR_INTERNAL
            for s in sends:
                self._reject(cause, st, p, s, link, str(err), code)
            self._done_one()
            return
        d = fut.result()
        with st.lock:
            st.window.accept(p.seq, p.raw, d.reply)
            st.dirty = True
            _raw, sends = st.inflight.pop(p.seq, (b"", []))
        for s in sends:
            try:
                s(d.reply)
            except Exception as e:  # noqa: BLE001 - the void is stored; the device resends
                log.warning("device=%s cannot send DECISION: %s", st.device_id, e)
        outcome = "repeat" if d.replayed else d.outcome
        self.metrics.voids.labels(outcome).inc()
        log.info("void device=%s seq=%d tap_seq=%d outcome=%s balance=%d latency_ms=%.2f "
                 "link=%s%s", st.device_id, p.seq, tap_seq, outcome, d.balance_fen,
                 (time.perf_counter() - t0) * 1000.0, link or "-", " late=1" if state == LATE else "")
        self._done_one()

    def encode_decision(self, st: DeviceState, tap: Tap, d: Decision) -> bytes:
        """The DECISION packet for ``tap`` (called by the writer inside the transaction)."""
        return self._encode(st, pk.DECISION, decision_fields(tap.seq, d))

    def _tap_failed(self, st: DeviceState, p: pk.Packet, link: str, err: BaseException) -> None:
        with st.lock:
            _raw, sends = st.inflight.pop(p.seq, (b"", []))
        for s in sends:
            self._reject("internal", st, p, s, link, f"not decided: {type(err).__name__}",
                         codes.ERR_INTERNAL)
        self._done_one()

    def _done_one(self) -> None:
        with self._lock:
            self._inflight -= 1
            if self._inflight <= 0:
                self._idle.notify_all()

    def _tap_done(self, st: DeviceState, p: pk.Packet, tap: Tap, fut: Future, link: str,
                  t0: float, state: int) -> None:
        err = fut.exception()
        if err is not None:
            self._tap_failed(st, p, link, err)
            return
        d: Decision = fut.result()
        reply = d.reply
        if not reply:   # a tap recorded before replies were stored: encode it now
            reply = self.encode_decision(st, tap, d)
        with st.lock:
            st.window.accept(p.seq, p.raw, reply)
            st.dirty = True
            _raw, sends = st.inflight.pop(p.seq, (b"", []))
        for s in sends:
            try:
                s(reply)
            except Exception as e:  # noqa: BLE001 - the decision is stored; the device resends
                log.warning("device=%s cannot send DECISION: %s", st.device_id, e)
        ms = (time.perf_counter() - t0) * 1000.0
        if d.replayed:
            self.metrics.retransmits.inc()
        else:
            self.metrics.taps.labels(d.verdict, d.reason).inc()
            self.metrics.latency.observe(ms / 1000.0)
        log.info("tap device=%s seq=%d card=%s verdict=%s reason=%s latency_ms=%.2f link=%s%s%s",
                 st.device_id, p.seq, tap.uid, d.verdict, d.reason, ms, link or "-",
                 " late=1" if state == LATE else "", " replayed=1" if d.replayed else "")
        self._done_one()

    def submit_local_tap(self, tap: Tap, link: str = "nfc") -> Decision:
        """Decide a tap made on the host itself (a USB reader): no frame, no MAC. Blocks."""
        t0 = time.perf_counter()
        st = self.device(tap.device_id)
        if st is None:
            raise HostError(f"unknown device {tap.device_id!r}: register it first")
        self._seen(st, link)
        d = self.writer.submit_tap(tap, lambda t, dd: self.encode_decision(st, t, dd)).result(30)
        ms = (time.perf_counter() - t0) * 1000.0
        self.metrics.taps.labels(d.verdict, d.reason).inc()
        self.metrics.latency.observe(ms / 1000.0)
        log.info("tap device=%s seq=%d card=%s verdict=%s reason=%s latency_ms=%.2f link=%s",
                 st.device_id, tap.seq, tap.uid, d.verdict, d.reason, ms, link)
        return d

    # ----------------------------------------------------------------- hello, config, events
    def _hello(self, st: DeviceState, p: pk.Packet, send: Send) -> None:
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
        cfg_args = (st.device_id, st.kind, self.policy, self.config, now)

        def persist(db: sqlite_utils.Database) -> _Config:
            touch_device(db, st.device_id, last_seq=p.seq, resend_floor=floor, fw=f["fw"],
                         online=1, last_seen=now)
            return _sync_config(db, *cfg_args)

        try:
            cfg = self.writer.call(persist).result(30)
        except Exception as e:  # noqa: BLE001 - answer nothing; the device says HELLO again
            log.error("device=%s HELLO not stored: %s", st.device_id, e)
            return
        st.cfg_version, st.cfg_acked = cfg.version, max(st.cfg_acked, cfg.acked)
        welcome = self._encode(st, pk.WELCOME, {
            "hello_seq": p.seq, "host_time": now & 0xFFFFFFFF,
            "heartbeat_s": self.config.heartbeat_s,
            "offline_after_s": self.config.offline_after_s, "cfg_version": cfg.version})
        self._accept(st, p, welcome)
        log.info("hello device=%s fw=%s boot=%d reset=%d resend_floor=%d cfg=%d acked=%d",
                 st.device_id, f["fw"], f["boot"], f["reset"], floor, cfg.version, st.cfg_acked)
        send(welcome)
        if st.cfg_acked < cfg.version:
            self.push_config(st, cfg, send)

    def push_config(self, st: DeviceState, cfg: _Config, send: Send) -> None:
        """Send the CONFIG frames of ``cfg`` (allow-list replace, then adds)."""
        for fields in cfg.frames:
            raw = self._encode(st, pk.CONFIG, fields)
            with st.lock:
                st.cfg_pending[int.from_bytes(raw[2:6], "big")] = fields["cfg_version"]
                while len(st.cfg_pending) > 64:
                    st.cfg_pending.pop(next(iter(st.cfg_pending)))
            send(raw)

    def _config_acked(self, st: DeviceState, ref_seq: int | None, version: int | None) -> None:
        if version is None:
            with st.lock:
                version = st.cfg_pending.pop(ref_seq, None)
            if version is None:
                return
        if version <= st.cfg_acked:
            return
        st.cfg_acked = version
        dev = st.device_id
        self.writer.call(lambda db: db.execute(
            "UPDATE device_config SET acked = max(acked, ?) WHERE device_id = ?",
            (version, dev)))
        log.info("device=%s config %d acknowledged", dev, version)

    def _event(self, st: DeviceState, p: pk.Packet) -> None:
        f = p.fields
        code = f["code"]
        name = codes.EVENTS[code] if code < len(codes.EVENTS) else f"code{code}"
        self._accept(st, p, None)
        row = (int(self.clock()), st.device_id, p.seq, code, name, f["value"], f["text"])
        self.writer.call(lambda db: db.execute(
            "INSERT OR IGNORE INTO device_events (ts, device_id, seq, code, name, value, text)"
            " VALUES (?,?,?,?,?,?,?)", row))
        level = logging.WARNING if code in (codes.EV_READER_FAULT, codes.EV_TAMPER,
                                            codes.EV_OUTBOX_FULL) else logging.INFO
        log.log(level, "event device=%s name=%s value=%d text=%r", st.device_id, name,
                f["value"], f["text"])
        if code == codes.EV_CONFIG_APPLIED:
            self._config_acked(st, None, f["value"])

    # ----------------------------------------------------------------- housekeeping
    def link_down(self, device_id: str | None) -> None:
        """A link serving ``device_id`` went away."""
        if device_id is None:
            return
        with self._lock:
            st = self._devices.get(device_id)
        if st is not None:
            self.set_online(st, False)

    def status(self, device_id: str, online: bool) -> None:
        """A retained MQTT status (the device's LWT) for a known device."""
        with self._lock:
            st = self._devices.get(device_id)
        if st is None:
            try:
                st = self.device(device_id)
            except (HostError, TimeoutError):
                return
            if st is None:
                return
        if online:
            st.last_seen = self.clock()
        self.set_online(st, online)

    def tick(self) -> None:
        """Once a second: mark silent devices offline, persist seq and liveness, and every
        ``config_check_s`` push changed configs to connected gates."""
        now = self.clock()
        for st in self.devices():
            if st.online and now - st.last_seen > self.config.offline_after_s:
                self.set_online(st, False)
        self.flush()
        if time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + self.config.config_check_s
            self.check_configs()

    def _read_db(self) -> sqlite_utils.Database | None:
        """A read-only connection to the site database (None for an in-memory store)."""
        if self._reader is None:
            path = getattr(self.writer, "db_path", None)
            if path is None or str(path) == ":memory:":
                return None
            uri = "file:" + urllib.request.pathname2url(os.path.abspath(path)) + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._reader = sqlite_utils.Database(conn)
        return self._reader

    def check_configs(self) -> int:
        """Push a new CONFIG to every connected gate whose allow-list changed; returns how
        many gates got one. The change check is one read query on a read-only connection;
        the writer is involved only when the allow-list differs from the last one seen."""
        gates = [st for st in self.devices()
                 if st.kind == "gate" and st.online and st.send is not None]
        if not gates:
            return 0
        now = int(self.clock())
        rdb = self._read_db()
        if rdb is not None:
            allow = gate_allow_list(rdb, now)
        else:
            allow = self.writer.call(lambda db: gate_allow_list(db, now)).result(30)
        seen = hashlib.sha256(b"".join(allow)).digest()
        if seen == self._allow_seen:
            return 0
        ids = [(st.device_id, st.kind) for st in gates]
        policy, config = self.policy, self.config

        def sync(db: sqlite_utils.Database) -> dict[str, _Config]:
            fresh = gate_allow_list(db, now)     # on the writer: the list as of now
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                out = {dev: _sync_config(db, dev, kind, policy, config, now, allow=fresh)
                       for dev, kind in ids}
                db.conn.execute("COMMIT")
            except BaseException:
                db.conn.execute("ROLLBACK")
                raise
            return out

        try:
            cfgs = self.writer.call(sync).result(30)
        except WriterClosed:
            return 0
        self._allow_seen = seen
        pushed = 0
        for st in gates:
            cfg = cfgs.get(st.device_id)
            send = st.send
            if cfg is None or send is None or cfg.version <= st.cfg_version:
                continue
            st.cfg_version = cfg.version
            log.info("device=%s allow-list changed: pushing config %d (%d cards)",
                     st.device_id, cfg.version, sum(len(f["allow"]) for f in cfg.frames))
            try:
                self.push_config(st, cfg, send)
                pushed += 1
            except Exception as e:  # noqa: BLE001 - the gate gets it at its next HELLO
                log.warning("device=%s cannot push config: %s", st.device_id, e)
        return pushed

    def _reply_loop(self) -> None:
        """Run the decided-tap and decided-void handlers (send the DECISION, log, count)."""
        while True:
            job = self._replies.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # noqa: BLE001 - one failed reply must not stop the others
                log.exception("sending a decision failed")

    def close(self) -> None:
        """Stop the reply thread once it has sent what is queued, and close the read-only
        connection (the writer is closed by its owner)."""
        self._replies.put(None)
        if self._replier.is_alive() and self._replier is not threading.current_thread():
            self._replier.join(10.0)
        if self._reader is not None:
            self._reader.conn.close()
            self._reader = None

    def flush(self, wait: bool = False) -> None:
        """Persist the highest seq, last-seen time and online flag of changed devices."""
        rows = []
        for st in self.devices():
            if st.dirty:
                st.dirty = False
                rows.append((st.device_id, st.window.highest, int(st.last_seen), st.online))
        if not rows:
            return

        def write(db: sqlite_utils.Database) -> None:
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                for dev, seq, seen, online in rows:
                    touch_device(db, dev, last_seq=seq, last_seen=seen, online=online)
                db.conn.execute("COMMIT")
            except BaseException:
                db.conn.execute("ROLLBACK")
                raise

        try:
            fut = self.writer.call(write)
        except WriterClosed:
            return
        if wait:
            fut.result(30)

    def stop_accepting(self) -> None:
        """Refuse new taps from now on (ERROR internal); in-flight ones still finish."""
        with self._lock:
            self._accepting = False

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until no tap is being decided; True when idle."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._inflight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True


def decision_fields(tap_seq: int, d: Decision) -> dict[str, Any]:
    """DECISION body fields for an engine Decision, clamped to the wire's ranges."""
    def clamp(v: int, lo: int, hi: int) -> int:
        return max(lo, min(hi, int(v)))

    return {
        "tap_seq": tap_seq, "verdict": codes.GRANT if d.verdict == "grant" else codes.DENY,
        "reason": codes.reason_code(d.reason), "relay_ms": clamp(d.relay_ms, 0, 60000),
        "pattern": clamp(d.pattern, 0, 255),
        "balance": clamp(d.balance_fen, -0x80000000, 0x7FFFFFFF),
        "points": clamp(d.points, -0x80000000, 0x7FFFFFFF),
        "uses": clamp(d.uses_left, -1, 0x7FFF), "text": clip_text(d.text or ""),
    }


# --------------------------------------------------------------------- writer-thread helpers
def _device_key(db: sqlite_utils.Database, device_id: str) -> bytes | None:
    row = db.execute("SELECT key FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    return bytes(row[0]) if row else None


def _load_device(db: sqlite_utils.Database, device_id: str) -> dict[str, Any] | None:
    """Device row plus the replay state to restore, and a fresh down-seq boot (persisted)."""
    row = db.execute("SELECT kind, key, last_seq, resend_floor, down_seq FROM devices "
                     "WHERE device_id = ?", (device_id,)).fetchone()
    if row is None:
        return None
    kind, key, last_seq, floor, down_seq = row
    top_tap = db.execute("SELECT coalesce(max(seq), 0) FROM taps WHERE device_id = ?",
                         (device_id,)).fetchone()[0]
    top_ev = db.execute("SELECT coalesce(max(seq), 0) FROM device_events WHERE device_id = ?",
                        (device_id,)).fetchone()[0]
    top_void = db.execute("SELECT coalesce(max(void_seq), 0) FROM tap_voids WHERE device_id = ?",
                          (device_id,)).fetchone()[0]
    boot = ((down_seq >> 16) + 1) & 0xFFFF
    touch_device(db, device_id, down_seq=boot << 16)
    cfg = db.execute("SELECT version, acked FROM device_config WHERE device_id = ?",
                     (device_id,)).fetchone() or (0, 0)
    return {"kind": kind, "key": bytes(key), "highest": max(last_seq, top_tap, top_ev, top_void),
            "resend_floor": floor, "down_boot": boot, "cfg_version": cfg[0], "cfg_acked": cfg[1]}


def gate_allow_list(db: sqlite_utils.Database, now: int) -> list[bytes]:
    """UIDs of active, unexpired cards of active members holding a valid gate pass."""
    rows = db.execute(
        "SELECT DISTINCT c.uid, p.covers, p.kind, p.uses_left FROM cards c "
        "JOIN members m ON m.id = c.member_id JOIN passes p ON p.member_id = m.id "
        "WHERE c.status = 'active' AND (c.expires_at = 0 OR c.expires_at > ?) "
        "AND m.status = 'active' AND p.starts_at <= ? AND (p.ends_at = 0 OR p.ends_at > ?) "
        "AND p.kind IN ('time', 'punch') ORDER BY c.uid", (now, now, now)).fetchall()
    out: list[bytes] = []
    for uid, covers, kind, left in rows:
        try:
            ok = "gate" in json.loads(covers)
        except ValueError:
            ok = False
        if ok and (kind == "time" or (left or 0) > 0) and len(uid) in (8, 14, 20):
            b = bytes.fromhex(uid)
            if not out or out[-1] != b:
                out.append(b)
    return out


def _relay_ms(kind: str, policy: Policy) -> int:
    return {"gate": policy.gate_relay_ms, "wash": policy.wash_relay_ms,
            "kiosk": policy.kiosk_relay_ms}.get(kind, 0)


def _sync_config(db: sqlite_utils.Database, device_id: str, kind: str, policy: Policy,
                 cfg: ServiceConfig, now: int, allow: list[bytes] | None = None) -> _Config:
    """Compute the device's config; bump its version when it changed. Runs on the writer.

    ``allow``: the gate allow-list when the caller already read it in this transaction."""
    if kind != "gate":
        allow = []
    elif allow is None:
        allow = gate_allow_list(db, now)
    base = {"relay_ms": max(0, min(60000, _relay_ms(kind, policy))),
            "debounce_ms": cfg.debounce_ms, "offline_after_s": cfg.offline_after_s,
            "heartbeat_s": cfg.heartbeat_s}
    digest = hashlib.sha256(json.dumps({**base, "allow": [u.hex() for u in allow]},
                                       sort_keys=True).encode()).hexdigest()
    chunks = [allow[i:i + _ALLOW_PER_FRAME] for i in range(0, len(allow), _ALLOW_PER_FRAME)]
    chunks = chunks or [[]]
    row = db.execute("SELECT version, digest, acked FROM device_config WHERE device_id = ?",
                     (device_id,)).fetchone()
    if row is None or row[1] != digest:
        version = (row[0] if row else 0) + len(chunks)
        acked = row[2] if row else 0
        db.execute("INSERT INTO device_config (device_id, version, digest, acked) "
                   "VALUES (?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
                   "version = excluded.version, digest = excluded.digest",
                   (device_id, version, digest, acked))
    else:
        version, acked = row[0], row[2]
    first = version - len(chunks) + 1
    frames = []
    for i, chunk in enumerate(chunks):
        frames.append({**base, "cfg_version": first + i,
                       "allow_op": pk.ALLOW_REPLACE if i == 0 else pk.ALLOW_ADD,
                       "allow": chunk})
    return _Config(version, acked, frames)
