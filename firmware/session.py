# Runs on the ESP32 (and the unix port in tests): the session with the host — HELLO/WELCOME, heartbeat, control frames, host clock.
#
# HELLO on every (re)connect, with resend_floor = the oldest pending outbox seq; a WELCOME only
# for the HELLO just sent, a PONG only for our nonce, a CONFIG only with a higher cfg_version.
# Control frames (EVENT, PONG, ACK) wait in a short queue and are encoded when they are sent,
# with a fresh seq; a TAP keeps the seq it got when the card was read, so a control frame may
# overtake it (the host then refuses the TAP as a replay: uplink.py resyncs and resends it).
import asyncio

from protocol import packet as P
from protocol.compat import const, ticks_add, ticks_diff, ticks_ms

import config as C

# u32 wire fields; on a 32-bit port this is a big int: one object, not one per use.
_U32 = 0xFFFFFFFF

FW_VERSION = "tapkiosk-fw 0.1.0"  # device.py sets an updated app's version here
PROTO = const(1)

_PING_WAIT_MS = const(2000)
_PING_TRIES = const(2)     # PINGs unanswered in a row before the host counts as lost
_HELLO_MIN_MS = const(500)
_HELLO_MAX_MS = const(3000)
_TICK_MS = const(50)
_CTRL_MAX = const(12)      # control frames waiting to go out (PONG, ACK, EVENT)
_DAY_MS = const(86400000)  # clock anchors are kept within a day of now (ticks_diff wraps at ~6 days)

# Control queue item kinds.
_Q_EVENT = const(1)
_Q_PONG = const(2)
_Q_ACK = const(3)
_Q_PING = const(4)


class Session:
    def __init__(self, app, reset_cause=0):
        self.app = app
        self.link = app.link
        self.params = app.params
        self.reset_cause = reset_cause
        self.online = False
        self.welcomed = 0          # WELCOMEs accepted since boot
        self.hello_seq = 0
        self.hello_at = 0
        self.hello_wait = _HELLO_MIN_MS
        self.hello_miss = 0
        self.down_at = ticks_ms()  # host unreachable since (boot counts as unreachable)
        self.last_rx = self.down_at
        self.ping_nonce = 0
        self.ping_miss = 0
        self.ping_at = 0
        self.host_time = 0         # host clock at time_ticks
        self.time_ticks = 0
        self.ctrl = []
        self.alive = ticks_ms()
        self.on_config = None      # fn(params), after a CONFIG changed them
        self.on_welcome = None     # fn(first), after every WELCOME (first: the boot's first)

    # -- clock --------------------------------------------------------------------------
    def device_time(self):
        if not self.host_time:
            return 0
        return (self.host_time + ticks_diff(ticks_ms(), self.time_ticks) // 1000) & _U32

    def age_clocks(self, now):
        # ticks_ms wraps (2**30 ms on the ESP32: ticks_diff is only right within ~6.2 days).
        # A device offline that long would see the host clock jump back and offline_ms() go
        # negative (an offline gate refusing every card): both anchors move forward a day at a
        # time, the host clock with them (exact), and offline_ms() saturates between one and two
        # days. Called at least once a day (every _TICK_MS), so no anchor falls further behind.
        if self.host_time and ticks_diff(now, self.time_ticks) >= _DAY_MS:
            self.time_ticks = ticks_add(self.time_ticks, _DAY_MS)
            self.host_time = (self.host_time + _DAY_MS // 1000) & _U32
        if not self.reachable() and ticks_diff(now, self.down_at) >= 2 * _DAY_MS:
            self.down_at = ticks_add(self.down_at, _DAY_MS)

    def _set_time(self, host_time):
        if host_time:
            self.host_time = host_time
            self.time_ticks = ticks_ms()

    # -- reachability -------------------------------------------------------------------
    def reachable(self):
        return self.online and self.link.connected

    def offline_ms(self):
        # How long the host has been unreachable (0 while it is reachable).
        if self.reachable():
            return 0
        return ticks_diff(ticks_ms(), self.down_at)

    def received(self):
        self.last_rx = ticks_ms()

    def _lost(self, why):
        if self.online:
            print("tapkiosk:", "host lost:", why)
            self.online = False
            self.down_at = ticks_ms()
        self.hello_seq = 0
        self.hello_wait = _HELLO_MIN_MS
        self.ping_nonce = 0
        self.ping_miss = 0

    # -- control frames -----------------------------------------------------------------
    def event(self, code, value=0, text=""):
        # Queued; sent once the host has welcomed us (encoded then, with a fresh seq).
        self._queue(_Q_EVENT, code, value, text)

    def queue_ack(self, seq):
        self._queue(_Q_ACK, seq, 0, None)

    def queue_ping(self):
        # A PING sent by the uplink's task after the outbox frames (tapfault.no_answer).
        self._queue(_Q_PING, 0, 0, None)

    def _queue(self, kind, a, b, c):
        if len(self.ctrl) >= _CTRL_MAX:
            self.ctrl.pop(0)  # the oldest goes
        self.ctrl.append((kind, a, b, c))
        self.app.uplink.kick.set()

    async def flush_ctrl(self):
        # Called by uplink.run() (one task sends every frame: two would race for ctrl[0]).
        send = self.app.send
        while self.ctrl and self.online and self.link.connected:
            kind, a, b, c = self.ctrl[0]
            if kind == _Q_EVENT:
                ok = await send(P.EVENT, {"code": a, "value": b & _U32, "text": c[:64]})
            elif kind == _Q_PONG:
                ok = await send(P.PONG, {"nonce": a, "host_time": 0})
            elif kind == _Q_PING:
                ok = await self.ping()
            else:
                ok = await send(P.ACK, {"ref_seq": a, "code": b})
            if not ok:
                return
            self.ctrl.pop(0)

    # -- HELLO and the heartbeat ----------------------------------------------------------
    async def hello(self):
        app = self.app
        self.hello_seq = app.next_seq()
        fields = {
            "fw": FW_VERSION, "proto": PROTO, "kind": app.cfg.kind_code, "caps": 0,
            "boot": app.boot, "reset": self.reset_cause & 0xFF,
            "resend_floor": app.outbox.oldest_seq(),
        }
        pkt = P.encode(P.HELLO, self.hello_seq, app.cfg.device_id, fields, app.mac, P.UP)
        self.hello_at = ticks_ms()
        await app.send_raw(pkt)

    async def ping(self):
        # True once a PING is out (or one already waits for its PONG).
        if self.ping_nonce:
            return True
        self.ping_nonce = ((ticks_ms() * 40503) & 0x3FFFFFFF) | 1
        self.ping_at = ticks_ms()
        return await self.app.send(P.PING, {"nonce": self.ping_nonce})

    async def _online_step(self, now):
        # One pass of the loop while welcomed: resync HELLO, heartbeat (control frames go out
        # from uplink.run()).
        if self.hello_seq:
            # Resync after a TAP went unanswered: one more HELLO, then give up on the host.
            if ticks_diff(now, self.hello_at) >= _PING_WAIT_MS:
                self.hello_miss += 1
                if self.hello_miss >= _PING_TRIES:
                    self._lost("no WELCOME")
                    return
                await self.hello()
            return
        if self.ping_nonce and ticks_diff(now, self.ping_at) >= _PING_WAIT_MS:
            self.ping_nonce = 0
            if ticks_diff(now, self.last_rx) >= _PING_WAIT_MS:
                self.ping_miss += 1
                if self.ping_miss >= _PING_TRIES:
                    self._lost("no PONG")
                    return
            await self.ping()
        if not self.ping_nonce and ticks_diff(now, self.last_rx) >= self.params["heartbeat_s"] * 1000:
            await self.ping()

    async def run(self):
        was_connected = False
        while True:
            now = ticks_ms()
            self.alive = now
            self.age_clocks(now)
            if not self.link.connected:
                if was_connected:
                    self._lost("link down")
                was_connected = False
            else:
                if not was_connected:
                    # Fresh (re)connect: always start with HELLO.
                    self._lost("reconnect")
                    was_connected = True
                if not self.online:
                    if not self.hello_seq or ticks_diff(now, self.hello_at) >= self.hello_wait:
                        if self.hello_seq:
                            self.hello_wait = min(self.hello_wait * 2, _HELLO_MAX_MS)
                        await self.hello()
                else:
                    await self._online_step(now)
            # Also the uplink's tick (its retry check): no wait_for task per loop in either.
            self.app.uplink.kick.set()
            await asyncio.sleep_ms(_TICK_MS)

    # -- frames from the host -----------------------------------------------------------
    def on_frame(self, t, seq, f):
        if t == P.WELCOME:
            # Seldom (once per (re)connect): welcome.py, imported for this frame, dropped after.
            C.once("welcome", "on_welcome", self, f)
        elif t == P.PONG:
            if self.ping_nonce and f["nonce"] == self.ping_nonce:
                self.ping_nonce = 0
                self.ping_miss = 0
                self._set_time(f["host_time"])
        elif t == P.PING:
            if self.online:
                self._queue(_Q_PONG, f["nonce"], 0, None)
        elif t == P.CONFIG:
            C.once("config_apply", "apply", self, seq, f)
