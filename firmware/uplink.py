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

_WINDOW = const(4)         # frames in flight at once while the outbox drains
_RETRY_MS = const(2000)    # a frame with no answer after this long triggers a resync
_TICK_MS = const(50)
_REFUSED_MAX = const(3)    # ERROR `replay` answers (each after a resync) before a frame is final
_VOIDED = const(20)        # protocol.codes reason "voided"
# protocol/codes.py error codes (tests/test_firmware_codes.py checks them).
_ERR_MALFORMED = const(1)
_ERR_UNKNOWN_DEVICE = const(3)
_ERR_REPLAY = const(4)
_ERR_UNSUPPORTED = const(5)

# ERROR codes that settle a frame: the host will never apply these bytes. `bad_mac` is not one:
# our stored bytes carry a good MAC (the slot's CRC checks them), so that answer is about
# something else (a forged frame under our seq, a host mid key change); the frame stays.
_FINAL = (_ERR_MALFORMED, _ERR_UNKNOWN_DEVICE, _ERR_UNSUPPORTED)


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
            if session.reachable() and not session.hello_seq:
                if self.resync:
                    # A HELLO with resend_floor = lowest pending seq first; its WELCOME makes
                    # every pending frame go again.
                    self.resync = False
                    session.hello_miss = 0
                    await session.hello()
                else:
                    await self._drain()
            self.kick.clear()
            try:
                await asyncio.wait_for_ms(self.kick.wait(), _TICK_MS)
            except asyncio.TimeoutError:
                pass

    def on_decision(self, f):
        seq = f["tap_seq"]
        ob = self.outbox
        i = ob.find_tap(seq)
        if i < 0:
            return  # not pending: a duplicate or replayed DECISION changes nothing
        if ob.is_void(i):
            if f["reason"] != _VOIDED:
                # The original answer, after we gave up: start nothing, keep the VOID going.
                print("tapkiosk:", "decision for voided tap", seq, "ignored: reason", f["reason"])
                return
            ob.done_slot(i)
            self.kick.set()
            print("tapkiosk:", "tap", seq, "voided by the host")
            return
        ob.done_slot(i)
        self.decisions += 1
        self.kick.set()
        if not self.app.tap_path.answer(seq, f):
            print("tapkiosk:", "late decision for", seq, "reason", f["reason"])

    def on_error(self, f):
        # What an ERROR does to the frame it names:
        # - nothing unless that frame was sent in this session and is still waiting for its
        #   answer (in flight);
        # - final (malformed, unknown_device, unsupported): the host will never apply these
        #   bytes, and they are all we have: the slot is cleared (logged);
        # - replay: the frame was overtaken by a newer seq (or came after a HELLO that did not
        #   cover it). It stays: a fresh HELLO (resend_floor = lowest pending seq) goes at once
        #   and the frame is resent, as a late outbox delivery. Refused again _REFUSED_MAX
        #   times (the host holds different bytes under this seq): final;
        # - bad_mac, internal or a code we do not know: it stays and goes again with the next
        #   resync.
        ref = f["ref_seq"]
        code = f["code"]
        print("tapkiosk:", "host error", code, "for seq", ref, f["text"])
        ob = self.outbox
        i = ob.find(ref)
        if i < 0 or not ob.in_flight(i):
            return
        if code == _ERR_REPLAY:
            if ob.refuse(i) <= _REFUSED_MAX:
                ob.mark_unsent(i)
                self.resync = True
                self.kick.set()
                print("tapkiosk:", "outbox frame", ref, "overtaken; resent after resync")
                return
        elif code not in _FINAL:
            return
        ob.done_slot(i)
        self.given_up += 1
        self.kick.set()
        print("tapkiosk:", "outbox frame", ref, "given up after host error", code)
