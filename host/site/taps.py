# Runs on CPython (host): the daemon's TAP and VOID handlers — gate, writer, DECISION, log.
"""TAP and VOID frames.

Both pass the one :class:`host.site.inflight.InflightGate`, go to the single writer (a TAP
through ``submit_tap`` with its DECISION encoder, group-committed; a VOID through
``host.rules.voids.void_tap``), and are answered from the thread that decided them (the
writer's, or the link's own reader when the writer was idle) right after the COMMIT (a
link's send never blocks); counting and logging follow on the reply thread. A frame the
replay window refuses may still be one the store applied before a restart: then the stored
reply is sent again, and nothing is applied twice.

The tap latency metric runs from the moment the link received the frame (``received``,
``time.perf_counter()``), so time queued in the link counts. Log lines name the card by a
short hash (``host.secure.check.card_ref``), never by its UID, which is the credential.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial

from host.rules.engine import Decision, Tap
from host.rules.voids import VoidRefused, stored_void_reply, void_tap
from host.secure.check import card_ref
from host.site import inflight as gate_
from host.site.decision_frame import decision_fields, decision_of
from host.site.inflight import InflightGate
from host.site.metrics import Metrics
from host.site.publish import Publisher
from host.site.tally import Tally
from host.site.refusals import Refusals
from host.site.registry import DeviceState, Registry
from host.site.replies import ReplyThread
from host.site.sales import SaleDesk
from host.site.writer import Writer, WriterClosed
from host.store import site_state as store
from protocol import codes
from protocol import packet as pk

log = logging.getLogger("tapkiosk.service")

Send = Callable[[bytes], None]

__all__ = ["Taps", "decision_fields"]

_DIRECTIONS = {pk.DIR_NONE: None, pk.DIR_IN: "in", pk.DIR_OUT: "out"}


class Taps:
    """Handles TAP and VOID frames; see the module doc."""

    def __init__(self, writer: Writer, registry: Registry, gate: InflightGate,
                 replies: ReplyThread, refusals: Refusals, metrics: Metrics,
                 reader: store.Reader, publisher: Publisher | None = None,
                 sales: SaleDesk | None = None) -> None:
        self.writer = writer
        self.registry = registry
        self.publisher = publisher or Publisher()
        self.sales = sales
        self.gate = gate
        self.replies = replies
        self.refusals = refusals
        self.metrics = metrics
        self.reader = reader
        self._encoders: dict[str, tuple[DeviceState, Callable[[Tap, Decision], bytes]]] = {}
        self._tally = Tally(replies, self.publisher, metrics, gate)

    def encoder(self, st: DeviceState) -> Callable[[Tap, Decision], bytes]:
        """The DECISION encoder of the device's taps (run by the writer in the transaction),
        made once per device state."""
        cached = self._encoders.get(st.device_id)
        if cached is not None and cached[0] is st:
            return cached[1]

        def encode(tap: Tap, d: Decision) -> bytes:
            return decision_of(self.registry.next_down_seq(st), st.device_id,
                               st.wire(tap.seq), d, st.mac)

        self._encoders[st.device_id] = (st, encode)
        return encode

    def _enter(self, st: DeviceState, p: pk.Packet, send: Send, link: str
               ) -> gate_.Entry | None:
        """Pass the gate; None when the frame is answered or refused already."""
        e = self.gate.enter(st, p, send)
        if e.verdict in (gate_.JOINED, gate_.CACHED):
            self.metrics.retransmits.inc()
            if e.cached:
                send(e.cached)
            return None
        if e.verdict == gate_.REUSED:
            self.refusals.refuse("replay", st, p, send, link, f"seq {p.seq} reused while "
                                 "deciding", codes.ERR_REPLAY)
            return None
        if e.verdict == gate_.CLOSED:
            self.refusals.refuse("internal", st, p, send, link, "host is shutting down",
                                 codes.ERR_INTERNAL)
            return None
        return e

    def _resend_stored(self, st: DeviceState, p: pk.Packet, send: Send, reply: bytes) -> None:
        with st.lock:
            st.window.accept(p.seq, p.raw, reply)
        self.metrics.retransmits.inc()
        send(reply)

    def _answer(self, st: DeviceState, p: pk.Packet, reply: bytes,
                then: Callable[[float], None]) -> None:
        """The frame is decided: answer every copy received at once (on the thread that
        committed it: a link's send never blocks), then ``then(sent)`` (count and log;
        ``sent`` = ``time.perf_counter()`` once the answers went out) on the reply thread,
        which leaves the gate."""
        self._send_all(st, p, reply)
        self.replies.put(partial(self._then_done, then, time.perf_counter()))

    def _send_all(self, st: DeviceState, p: pk.Packet, reply: bytes) -> None:
        """Leave the gate's waiting list with ``reply`` and send it to every copy."""
        try:
            for s in self.gate.finish(st, p, reply):
                try:
                    s(reply)
                except Exception as e:  # noqa: BLE001 - it is stored; the device resends
                    log.warning("device=%s cannot send DECISION: %s", st.device_id, e)
        except BaseException:
            self.gate.done()
            raise

    def _then_done(self, then: Callable[[float], None], sent: float) -> None:
        try:
            then(sent)
        finally:
            self._tally.leave()

    def _failed(self, st: DeviceState, p: pk.Packet, link: str, cause: str, why: str,
                code: int) -> None:
        """The frame was not decided: refuse every copy received, then leave the gate."""
        try:
            for s in self.gate.fail(st, p):
                self.refusals.refuse(cause, st, p, s, link, why, code)
        finally:
            self.gate.done()

    # ----------------------------------------------------------------- TAP
    def tap(self, st: DeviceState, p: pk.Packet, send: Send, link: str, t0: float) -> None:
        """A TAP frame: decide it once, answer every copy received."""
        e = self._enter(st, p, send, link)
        if e is None:
            return
        if e.verdict == gate_.REFUSED:
            self._old_tap(st, p, send, link, str(e.error))
            return
        f = p.fields
        tap = Tap(device_id=st.device_id, seq=st.stored(p.seq), uid=f["uid"].hex().upper(),
                  sak=f["sak"], service=f["service"], amount_fen=f["amount"],
                  direction=_DIRECTIONS.get(f["direction"]), offline=bool(f["flags"] & 1),
                  device_time=f["device_time"], secure=f["secure"], sale_id=f["sale_id"])
        self.publisher.tap(tap)
        # The DECISION goes out from the deciding thread right after COMMIT (this one when
        # the writer is idle: no hand-off); counting and logging follow on the reply thread.
        late = e.late
        try:
            self.writer.submit_tap_then(tap, self.encoder(st), lambda d, err: self._tap_done(
                st, p, tap, d, err, link, t0, late))
        except WriterClosed as err:
            self._failed(st, p, link, "internal", f"not decided: {type(err).__name__}",
                         codes.ERR_INTERNAL)

    def _old_tap(self, st: DeviceState, p: pk.Packet, send: Send, link: str, why: str) -> None:
        """A TAP the window refuses: if the store already applied this very tap (the RAM cache
        was lost in a restart), answer with the stored reply; otherwise refuse it."""
        f = p.fields
        try:
            row = self.reader.run(lambda db: store.stored_tap(db, st.device_id,
                                                                 st.stored(p.seq)))
        except Exception as err:  # noqa: BLE001 - refuse rather than guess
            row = None
            log.error("device=%s seq=%d stored-tap lookup failed: %s", st.device_id, p.seq, err)
        if (row is not None and row[0] == f["uid"].hex().upper() and row[1] == f["amount"]
                and row[2] == f["service"] and row[3]):
            log.info("tap device=%s seq=%d already applied: stored reply sent again",
                     st.device_id, p.seq)
            self._resend_stored(st, p, send, bytes(row[3]))
            return
        self.refusals.refuse("replay", st, p, send, link, why, codes.ERR_REPLAY)

    def _tap_done(self, st: DeviceState, p: pk.Packet, tap: Tap, d: Decision | None,
                  err: BaseException | None, link: str, t0: float, late: bool) -> None:
        if d is None:   # not decided: refused as internal; the device resends
            why = f"not decided: {type(err).__name__}"
            self.replies.put(lambda: self._failed(st, p, link, "internal", why,
                                                  codes.ERR_INTERNAL))
            return
        reply = d.reply or self.encoder(st)(tap, d)   # a tap stored before replies were
        self._answer(st, p, reply, partial(self._count_and_log, st, tap, d, link, t0, late))

    def _count_and_log(self, st: DeviceState, tap: Tap, d: Decision, link: str, t0: float,
                       late: bool = False, sent: float | None = None) -> None:
        ms = ((time.perf_counter() if sent is None else sent) - t0) * 1000.0
        self._tally.decision(tap, d)
        if d.sale_id and not d.replayed and self.sales is not None:
            self.sales.settled(d.sale_id)
        if d.replayed:
            self.metrics.retransmits.inc()
        else:
            self.metrics.latency.observe(ms / 1000.0)
        if log.isEnabledFor(logging.INFO):
            log.info("tap device=%s seq=%d card=%s verdict=%s reason=%s latency_ms=%.2f "
                     "link=%s%s%s", st.device_id, tap.seq, card_ref(tap.uid), d.verdict,
                     d.reason, ms, link or "-", " late=1" if late else "",
                     " replayed=1" if d.replayed else "")

    def local_tap(self, st: DeviceState, tap: Tap, link: str) -> Decision:
        """Decide a tap made on the host itself (a USB reader): no frame, no MAC. Blocks."""
        t0 = time.perf_counter()
        self.publisher.tap(tap)
        d = self.writer.submit_tap(tap, self.encoder(st)).result(30)
        self._count_and_log(st, tap, d, link, t0)
        return d

    # ----------------------------------------------------------------- VOID
    def void(self, st: DeviceState, p: pk.Packet, send: Send, link: str, t0: float) -> None:
        """A VOID: the device gave up on tap ``tap_seq`` and started nothing. Settled on the
        writer by ``void_tap`` (reversed or tombstoned); answered with a DECISION for
        ``tap_seq``, reason ``voided``; a tap granted offline is not voided (ERROR
        ``unsupported``)."""
        tap_seq = p.fields["tap_seq"]
        if not 0 < tap_seq < p.seq:
            self.refusals.refuse("malformed", st, p, send, link,
                                 f"VOID of tap {tap_seq} sent as seq {p.seq}",
                                 codes.ERR_MALFORMED)
            return
        e = self._enter(st, p, send, link)
        if e is None:
            return
        dev = st.device_id
        if e.verdict == gate_.REFUSED:
            try:
                reply = self.reader.run(lambda db: stored_void_reply(
                    db, dev, st.stored(p.seq), st.stored(tap_seq)))
            except Exception as err:  # noqa: BLE001 - refuse rather than guess
                reply = None
                log.error("device=%s VOID seq=%d stored-reply lookup failed: %s", dev, p.seq, err)
            if reply is None:
                self.refusals.refuse("replay", st, p, send, link, str(e.error), codes.ERR_REPLAY)
            else:
                self._resend_stored(st, p, send, reply)
            return
        engine = self.writer.engine

        def encode(d: Decision) -> bytes:
            return self.registry.encode(st, pk.DECISION, decision_fields(tap_seq, d))

        try:
            fut = self.writer.call(lambda db: void_tap(engine, dev, st.stored(tap_seq), encode,
                                                       void_seq=st.stored(p.seq)))
        except WriterClosed as err:
            self._failed(st, p, link, "internal", f"not decided: {type(err).__name__}",
                         codes.ERR_INTERNAL)
            return
        fut.add_done_callback(lambda fu: self._void_done(st, p, tap_seq, fu, link, t0, e.late))

    def _void_failed(self, st: DeviceState, p: pk.Packet, link: str, err: BaseException) -> None:
        if isinstance(err, VoidRefused):
            self.metrics.voids.labels("refused").inc()
            self._failed(st, p, link, "void_refused", str(err), codes.ERR_UNSUPPORTED)
        else:
            self._failed(st, p, link, "internal", str(err), codes.ERR_INTERNAL)

    def _void_done(self, st: DeviceState, p: pk.Packet, tap_seq: int, fut: Future, link: str,
                   t0: float, late: bool) -> None:
        err = fut.exception()
        if err is not None:
            self.replies.put(lambda: self._void_failed(st, p, link, err))
            return
        d = fut.result()
        outcome = "repeat" if d.replayed else d.outcome

        def count_and_log(sent: float) -> None:
            self.metrics.voids.labels(outcome).inc()
            log.info("void device=%s seq=%d tap_seq=%d outcome=%s balance=%d latency_ms=%.2f "
                     "link=%s%s", st.device_id, p.seq, tap_seq, outcome, d.balance_fen,
                     (sent - t0) * 1000.0, link or "-", " late=1" if late else "")

        self._answer(st, p, d.reply, count_and_log)
