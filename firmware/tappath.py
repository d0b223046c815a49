# Runs on the ESP32 (and the unix port in tests): one card presentation — online TAP and its answer, give-up (VOID), offline mode.
#
# Online: the TAP goes to the outbox (it keeps its seq until the host answers), the member
# waits up to decision_ms for the DECISION, and the feedback shows it. No answer in time: nothing
# starts and the outbox slot is rewritten as a VOID for that tap_seq (protocol/README.md,
# "Giving up on a tap"), which goes out like a TAP until the host answers "voided".
# Offline: a gate grants from its allow-list once the host has been unreachable for
# offline_after_s (the TAP is queued, flagged offline); wash and kiosk never spend offline.
# TAP and VOID packets are built in one buffer allocated once (protocol.packet TapWriter).
# The give-up and offline code is in tapfault.py, imported for such a tap and dropped after.
import asyncio
from asyncio import wait_for_ms  # at import: the first tap allocates no module

from protocol import packet as P
from protocol.compat import const

import config as C

_GRANT = const(1)
_PAT_DENY = const(2)
_PAT_GRANT = const(1)


class TapPath:
    def __init__(self, app, feedback):
        self.app = app
        self.cfg = app.cfg
        self.fb = feedback
        self.tw = P.TapWriter(app.cfg.device_id, app.mac)
        self.live_seq = 0          # the tap a member is standing at, waiting for its answer
        self.live = None
        self._ev = asyncio.Event()
        self.taps = 0
        self.voids = 0             # taps given up on (VOID written)
        self.program = 0           # wash program chosen with the bay's buttons (0: none)

    def answer(self, seq, f):
        # The DECISION for a settled TAP slot: True if a member is waiting for it.
        if not seq or seq != self.live_seq:
            return False
        self.live = f
        self._ev.set()
        return True

    async def tap(self, uid, sak, secure=b""):
        # Called once per card presentation (the reader debounces). Returns the pattern shown.
        self.taps += 1
        session = self.app.session
        if session.reachable():
            return await self._online(uid, sak, secure)
        return C.once("tapfault", "offline", self, uid, sak, secure)

    async def _online(self, uid, sak, secure):
        app = self.app
        cfg = self.cfg
        seq = app.next_seq()
        sale = app.sale
        sale_id = sale.id if sale is not None and sale.active() else 0
        amount = sale.amount if sale_id else cfg.amount
        service = (sale.service if sale_id else 0) or self.program or cfg.service
        frame = self.tw.tap(seq, uid, sak, 0, cfg.direction, service, amount,
                            app.session.device_time(), secure, sale_id)
        self.store(seq, frame)
        self.live = None
        self._ev.clear()
        self.live_seq = seq
        app.uplink.kick.set()
        # Its own timeout (not session.run()'s tick: a send can hold that task up, and a
        # member must never wait longer than decision_ms).
        try:
            await wait_for_ms(self._ev.wait(), cfg.decision_ms)
        except asyncio.TimeoutError:
            pass
        d = self.live
        self.live_seq = 0
        self.live = None
        if d is None:
            return C.once("tapfault", "no_answer", self, seq)
        if sale is not None:
            sale.settled(d["sale_id"])
        relay = 0
        if d["verdict"] == _GRANT and cfg.kind != "kiosk":
            relay = d["relay_ms"] or app.params["relay_ms"]
        pat = d["pattern"] or (_PAT_GRANT if d["verdict"] == _GRANT else _PAT_DENY)
        self.fb.show(pat, relay, d["text"])
        return pat

    def give_up(self, tap_seq):
        # The pending TAP tap_seq becomes a VOID (tapfault.py); its slot, or -1.
        return C.once("tapfault", "give_up", self, tap_seq)

    def store(self, seq, frame):
        lost = self.app.outbox.add(seq, frame)
        if lost:
            C.once("tapfault", "dropped", self, lost)
