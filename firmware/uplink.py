# Runs on the ESP32 (and the unix port in tests): the outbox window — TAPs and VOIDs to the host, their DECISIONs and ERRORs.
#
# A frame goes out once per session, oldest first, at most _WINDOW unanswered at a time. One
# still unanswered after _RETRY_MS means frames were lost: a new HELLO (resend_floor = oldest
# pending) opens a new session, and the WELCOME makes every pending frame go again, oldest
# first, as the same bytes. (A bare resend below the host's highest seq would be refused as a
# replay.)
#
# A DECISION settles the pending slot whose tap it names (a TAP, or the VOID that replaced it:
# then only the answer "voided" settles it). An ERROR counts only for a frame this session sent
# and is still waiting on: an ERROR naming any other seq (one of our seqs that a forger used,
# answered by the host) changes nothing, so it can never cost us a pending TAP or VOID.
import asyncio

from protocol.compat import const, ticks_diff, ticks_ms

import config as C

_WINDOW = const(4)         # frames in flight at once while the outbox drains
_RETRY_MS = const(2000)    # a frame with no answer after this long triggers a resync
# ERROR frames: host_error.py.


class Uplink:
    def __init__(self, app):
        self.app = app
        self.outbox = app.outbox
        self.kick = asyncio.Event()   # wakes run()
        self.resync = False           # a frame was refused as a replay: HELLO first
        self.alive = ticks_ms()
        self.decisions = 0
        self.given_up = 0          # frames cleared by a final ERROR

    def new_session(self):
        # A WELCOME: its HELLO's resend_floor covers every pending frame; all go again.
        self.outbox.new_session()
        self.resync = False
        self.kick.set()

    async def _drain(self):
        # Sends the next unsent frames; a resync HELLO if one in flight went unanswered.
        app = self.app
        ob = self.outbox
        now = ticks_ms()
        flying = 0
        for k in range(ob.n):
            i = ob.order(k)
            if not ob.is_pending(i):
                continue
            if ob.in_flight(i):
                if ticks_diff(now, ob.sent_at(i)) >= _RETRY_MS:
                    print("tapkiosk:", "no answer for", ob.seq_of(i), "- resync")
                    app.session.hello_miss = 0
                    await app.session.hello()
                    return
                flying += 1
                continue
            if flying >= _WINDOW or not app.session.reachable():
                return
            if not await self.send_slot(i):
                return
            if self.kick.is_set():
                return  # changed while sending (a new frame, a VOID behind us): walk again
            flying += 1

    async def send_slot(self, i):
        ob = self.outbox
        ob.mark_sent(i, ticks_ms())
        if await self.app.send_raw(ob.read(i)):
            return True
        ob.mark_unsent(i)
        return False

    async def run(self):
        session = self.app.session
        while True:
            self.alive = ticks_ms()
            self.kick.clear()
            if session.reachable() and not session.hello_seq:
                if self.resync:
                    # A HELLO with resend_floor = lowest pending seq first; its WELCOME makes
                    # every pending frame go again.
                    self.resync = False
                    session.hello_miss = 0
                    await session.hello()
                else:
                    # Outbox frames first (their seqs are older), then control frames: not
                    # while a frame stored or voided during the drain waits for the next.
                    await self._drain()
                    if not session.hello_seq and not self.kick.is_set():
                        await session.flush_ctrl()
            # Set by a new frame, an answer, a control frame, and by session.run() every
            # 50 ms (the retry check of frames in flight).
            await self.kick.wait()

    def on_decision(self, f):
        seq = f["tap_seq"]
        ob = self.outbox
        i = ob.find_tap(seq)
        if i < 0:
            return  # not pending: a duplicate or replayed DECISION changes nothing
        if ob.is_void(i):
            # The answer to a VOID (seldom): tapfault.py, imported for it, dropped after.
            C.once("tapfault", "void_answered", self, i, seq, f)
            return
        ob.done_slot(i)
        self.decisions += 1
        self.kick.set()
        if not self.app.tap_path.answer(seq, f):
            print("tapkiosk:", "late decision for", seq, "reason", f["reason"])
