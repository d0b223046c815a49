# Runs on the ESP32 (and the unix port in tests): the device's protocol state machine, tap path, outbox and offline mode.
#
# One App per device. The link (serial or MQTT) calls on_packet() with every packet it
# receives and exposes `connected` and `async send(packet)`. Tasks: session() (HELLO/WELCOME,
# heartbeat, control frames), sender() (TAPs from the outbox, oldest first, with retry),
# and whoever reads cards calls `await tap(uid, sak)`.
#
# Rules (protocol/README.md): seq = boot << 16 | counter; HELLO on every (re)connect with
# resend_floor = oldest pending seq; a DECISION only for a pending tap_seq, a WELCOME only for
# the HELLO just sent, a PONG only for our nonce, a CONFIG only with a higher cfg_version.
# Non-TAP frames are encoded when they are sent; a TAP keeps the seq it got when the card was
# read, so a control frame may overtake it. The host then refuses the TAP with ERROR `replay`;
# it stays in the outbox and goes again after a fresh HELLO (see _on_error).
#
# Giving up on a tap (VOID): a TAP with no DECISION within decision_ms starts nothing; its
# outbox slot is rewritten as a VOID for that tap_seq, which goes out (and after a reboot,
# again) like a TAP until the host answers with a DECISION reason "voided". The original
# DECISION arriving after that starts nothing and leaves the VOID in place: the host may have
# charged that tap, and only the VOID's answer says the charge was reversed.
import asyncio
import struct

from protocol import packet as P
from protocol.compat import const, ticks_add, ticks_diff, ticks_ms
from protocol.errors import ProtocolError
from protocol.mac import Mac

import config as C

FW_VERSION = "tapkiosk-fw 0.1.0"
PROTO = const(1)

_WINDOW = const(4)         # TAPs in flight at once while the outbox drains
_RETRY_MS = const(2000)    # a TAP with no DECISION after this long triggers a resync
_PING_WAIT_MS = const(2000)
_PING_TRIES = const(2)     # PINGs unanswered in a row before the host counts as lost
_HELLO_MIN_MS = const(500)
_HELLO_MAX_MS = const(3000)
_TICK_MS = const(50)
_CTRL_MAX = const(12)      # control frames waiting to go out (PONG, ACK, EVENT)
_VOIDED = const(20)        # protocol.codes reason "voided"
_REFUSED_MAX = const(3)    # ERROR `replay` answers (each after a resync) before a frame is final
_DAY_MS = const(86400000)  # clock anchors are kept within a day of now (ticks_diff wraps at ~6 days)

# protocol/codes.py values, as consts: importing that module (name tables for the host) would
# cost the board ~4 KB of heap. tests/test_firmware_codes.py checks they match.
_ERR_BAD_MAC = const(2)
_ERR_MALFORMED = const(1)
_ERR_REPLAY = const(4)
_ERR_UNKNOWN_DEVICE = const(3)
_ERR_UNSUPPORTED = const(5)
_EV_BOOT = const(1)
_EV_CONFIG_APPLIED = const(6)
_EV_LINK_DOWN = const(7)
_EV_OUTBOX_FULL = const(5)
_GRANT = const(1)
_PAT_DENY = const(2)
_PAT_FAULT = const(5)
_PAT_GRANT = const(1)
_PAT_OFFLINE_DENY = const(4)
_PAT_OFFLINE_GRANT = const(3)
_ERRORS = ("", "malformed", "bad_mac", "unknown_device", "replay", "unsupported", "internal")

# ERROR codes that settle an outbox frame: the host will never apply it (see _on_error).
_FINAL = (_ERR_MALFORMED, _ERR_BAD_MAC, _ERR_UNKNOWN_DEVICE, _ERR_UNSUPPORTED)

# Control queue item kinds.
_Q_EVENT = const(1)
_Q_PONG = const(2)
_Q_ACK = const(3)


def _log(*args):
    print("tapkiosk:", *args)


class App:
    def __init__(self, cfg, link, feedback, outbox, boot, params=None, allow=None, reset_cause=0,
                 save=True):
        self.cfg = cfg
        self.link = link
        self.fb = feedback
        self.outbox = outbox
        self.boot = boot
        self.ctr = 0
        self.reset_cause = reset_cause
        self.params = params if params is not None else dict(C.PARAM_DEFAULTS)
        self.allow = allow
        self._save = save
        self.mac = Mac(cfg.key)
        self.tw = P.TapWriter(cfg.device_id, self.mac)
        # VOID packets are built in a buffer allocated once: ver type seq dev_len dev len tap_seq mac
        dev = cfg.device_id.encode()
        self._vlen = 9 + len(dev) + 4
        self._vbuf = bytearray(self._vlen + 16)
        self._vmv = memoryview(self._vbuf)
        self._vbuf[0] = 1
        self._vbuf[1] = P.VOID
        self._vbuf[6] = len(dev)
        self._vbuf[7:7 + len(dev)] = dev
        self._vbuf[7 + len(dev)] = 0
        self._vbuf[8 + len(dev)] = 4
        link.on_packet = self.on_packet
        # Session state.
        self.online = False
        self.welcomed = 0          # WELCOMEs accepted since boot
        self.hello_seq = 0
        self.hello_at = 0
        self.hello_wait = _HELLO_MIN_MS
        self.hello_miss = 0
        self.down_at = ticks_ms()  # host unreachable since (boot counts as unreachable)
        self.last_rx = ticks_ms()
        self.last_tx = ticks_ms()
        self.ping_nonce = 0
        self.ping_miss = 0
        self.ping_at = 0
        self.host_time = 0         # host clock at time_ticks
        self.time_ticks = 0
        self.host_cfg_version = 0
        # Tap currently waiting for its answer (the member is standing there).
        self.live_seq = 0
        self.live = None
        self._live_ev = asyncio.Event()
        self._kick = asyncio.Event()   # wakes sender()
        self._resync = False           # an outbox frame was refused as a replay: HELLO now
        self._wake = asyncio.Event()   # wakes session()
        self._ctrl = []
        # Counters.
        self.taps = 0
        self.decisions = 0
        self.late = 0
        self.voids = 0             # taps given up on (VOID written)
        self.voided = 0            # VOIDs the host confirmed
        self.errors = 0
        self.given_up = 0          # outbox frames cleared by a final ERROR
        self.bad_frames = 0
        self.events_dropped = 0
        self.alive_session = ticks_ms()
        self.alive_sender = ticks_ms()
        if outbox.recovered:
            _log("outbox holds", outbox.recovered, "taps from before the reboot")

    # -- sequence numbers -------------------------------------------------------------
    def next_seq(self):
        self.ctr += 1
        if self.ctr > 0xFFFF:
            # 65535 frames in one boot: take a new boot number (one more flash write).
            self.boot = C.next_boot() if self._save else (self.boot % 0xFFFF) + 1
            self.ctr = 1
        return (self.boot << 16) | self.ctr

    def device_time(self):
        if not self.host_time:
            return 0
        return (self.host_time + ticks_diff(ticks_ms(), self.time_ticks) // 1000) & 0xFFFFFFFF

    def _age_clocks(self, now):
        # ticks_ms wraps (2**30 ms on the ESP32: ticks_diff is only right within ~6.2 days).
        # A device offline that long would see the host clock jump back and offline_ms() go
        # negative (an offline gate refusing every card): both anchors move forward a day at a
        # time, the host clock with them (exact), and offline_ms() saturates between one and two days.
        if self.host_time and ticks_diff(now, self.time_ticks) >= _DAY_MS:
            self.time_ticks = ticks_add(self.time_ticks, _DAY_MS)
            self.host_time = (self.host_time + _DAY_MS // 1000) & 0xFFFFFFFF
        if not self.reachable() and ticks_diff(now, self.down_at) >= 2 * _DAY_MS:
            self.down_at = ticks_add(self.down_at, _DAY_MS)

    def _set_time(self, host_time):
        if host_time:
            self.host_time = host_time
            self.time_ticks = ticks_ms()

    # -- sending ----------------------------------------------------------------------
    async def _send(self, ptype, fields):
        pkt = P.encode(ptype, self.next_seq(), self.cfg.device_id, fields, self.mac, P.UP)
        return await self._send_raw(pkt)

    async def _send_raw(self, pkt):
        try:
            ok = await self.link.send(pkt)
        except OSError as e:
            _log("send failed: OSError", e.args[0])
            ok = False
        if ok:
            self.last_tx = ticks_ms()
        return ok

    def event(self, code, value=0, text=""):
        # Queued; sent once the host has welcomed us (encoded then, with a fresh seq).
        self._queue(_Q_EVENT, code, value, text)

    def _queue(self, kind, a, b, c):
        if len(self._ctrl) >= _CTRL_MAX:
            self._ctrl.pop(0)
            self.events_dropped += 1
        self._ctrl.append((kind, a, b, c))
        self._wake.set()

    async def _flush_ctrl(self):
        while self._ctrl and self.online and self.link.connected:
            kind, a, b, c = self._ctrl[0]
            if kind == _Q_EVENT:
                ok = await self._send(P.EVENT, {"code": a, "value": b & 0xFFFFFFFF, "text": c[:64]})
            elif kind == _Q_PONG:
                ok = await self._send(P.PONG, {"nonce": a, "host_time": 0})
            else:
                ok = await self._send(P.ACK, {"ref_seq": a, "code": b})
            if not ok:
                return
            self._ctrl.pop(0)

    # -- session: HELLO / WELCOME / heartbeat -----------------------------------------
    def reachable(self):
        return self.online and self.link.connected

    def offline_ms(self):
        # How long the host has been unreachable (0 while it is reachable).
        if self.reachable():
            return 0
        return ticks_diff(ticks_ms(), self.down_at)

    def _lost(self, why):
        if self.online:
            _log("host lost:", why)
            self.online = False
            self.down_at = ticks_ms()
        self.hello_seq = 0
        self.hello_wait = _HELLO_MIN_MS
        self.ping_nonce = 0
        self.ping_miss = 0

    async def _hello(self):
        self.hello_seq = self.next_seq()
        fields = {
            "fw": FW_VERSION, "proto": PROTO, "kind": self.cfg.kind_code, "caps": 0,
            "boot": self.boot, "reset": self.reset_cause & 0xFF,
            "resend_floor": self.outbox.oldest_seq(),
        }
        pkt = P.encode(P.HELLO, self.hello_seq, self.cfg.device_id, fields, self.mac, P.UP)
        self.hello_at = ticks_ms()
        await self._send_raw(pkt)

    async def session(self):
        was_connected = False
        while True:
            self.alive_session = ticks_ms()
            now = ticks_ms()
            self._age_clocks(now)
            connected = self.link.connected
            if not connected:
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
                        await self._hello()
                elif self.hello_seq:
                    # Resync after a TAP went unanswered: one more HELLO, then give up on the host.
                    if ticks_diff(now, self.hello_at) >= _PING_WAIT_MS:
                        self.hello_miss += 1
                        if self.hello_miss >= _PING_TRIES:
                            self._lost("no WELCOME")
                            continue
                        await self._hello()
                else:
                    if self.ping_nonce and ticks_diff(now, self.ping_at) >= _PING_WAIT_MS:
                        self.ping_nonce = 0
                        if ticks_diff(now, self.last_rx) >= _PING_WAIT_MS:
                            self.ping_miss += 1
                            if self.ping_miss >= _PING_TRIES:
                                self._lost("no PONG")
                                continue
                        await self.ping()
                    if not self.ping_nonce and \
                            ticks_diff(now, self.last_rx) >= self.params["heartbeat_s"] * 1000:
                        await self.ping()
                    await self._flush_ctrl()
            self._wake.clear()
            try:
                await asyncio.wait_for_ms(self._wake.wait(), _TICK_MS)
            except asyncio.TimeoutError:
                pass

    async def ping(self):
        if self.ping_nonce:
            return
        self.ping_nonce = ((ticks_ms() * 2654435761) & 0x7FFFFFFF) | 1
        self.ping_at = ticks_ms()
        await self._send(P.PING, {"nonce": self.ping_nonce})

    # -- sender: TAPs from the outbox ---------------------------------------------------
    async def sender(self):
        # A TAP goes out once per session. One still unanswered after _RETRY_MS means frames
        # were lost: a new HELLO (resend_floor = oldest pending) opens a new session, and the
        # WELCOME makes every pending TAP go again, oldest first, as the same bytes. (A bare
        # resend below the host's highest seq would be refused as a replay.)
        ob = self.outbox
        while True:
            self.alive_sender = ticks_ms()
            if self._resync and self.reachable() and not self.hello_seq:
                # A frame was refused as a replay: a HELLO with resend_floor = lowest pending
                # seq first; its WELCOME makes every pending frame go again.
                self._resync = False
                self.hello_miss = 0
                await self._hello()
            elif self.reachable() and not self.hello_seq:
                now = ticks_ms()
                flying = 0
                for k in range(ob.n):
                    i = ob.order(k)
                    if ob.state[i] != 1:
                        continue
                    if ob.sent[i]:
                        if ticks_diff(now, ob.sent_at[i]) >= _RETRY_MS:
                            _log("no DECISION for", ob.seq[i], "- resync")
                            self.hello_miss = 0
                            await self._hello()
                            break
                        flying += 1
                        continue
                    if flying >= _WINDOW:
                        break
                    if not self.reachable():
                        break
                    if await self._send_raw(ob.read(i)):
                        ob.sent[i] = 1
                        ob.sent_at[i] = ticks_ms()
                        flying += 1
                    else:
                        break
            self._kick.clear()
            try:
                await asyncio.wait_for_ms(self._kick.wait(), _TICK_MS)
            except asyncio.TimeoutError:
                pass

    # -- the tap path -------------------------------------------------------------------
    async def tap(self, uid, sak, secure=b""):
        # Called once per card presentation (the reader debounces). Returns the pattern shown.
        self.taps += 1
        cfg = self.cfg
        if self.reachable():
            seq = self.next_seq()
            frame = self.tw.tap(seq, uid, sak, 0, cfg.direction, cfg.service, cfg.amount,
                                self.device_time(), secure)
            self._store(seq, frame)
            self.live = None
            self._live_ev.clear()
            self.live_seq = seq
            self._kick.set()
            try:
                await asyncio.wait_for_ms(self._live_ev.wait(), cfg.decision_ms)
            except asyncio.TimeoutError:
                pass
            d = self.live
            self.live_seq = 0
            self.live = None
            if d is None:
                # Nothing starts; the TAP becomes a VOID so the host never charges it. The VOID
                # goes out now, before the PING below takes a higher seq.
                i = self._give_up(seq)
                self.fb.show(_PAT_FAULT, 0, "No answer - please tap again")
                if i >= 0 and self.reachable():
                    self.outbox.sent[i] = 1
                    self.outbox.sent_at[i] = ticks_ms()
                    if not await self._send_raw(self._vmv):
                        self.outbox.sent[i] = 0
                self._kick.set()
                if self.reachable():
                    await self.ping()
                return _PAT_FAULT
            relay = 0
            if d["verdict"] == _GRANT and cfg.kind != "kiosk":
                relay = d["relay_ms"] or self.params["relay_ms"]
            pat = d["pattern"] or (_PAT_GRANT if d["verdict"] == _GRANT else _PAT_DENY)
            self.fb.show(pat, relay, d["text"])
            return pat
        offline_for = self.offline_ms()
        if cfg.kind == "gate" and self.allow is not None \
                and offline_for >= self.params["offline_after_s"] * 1000:
            if uid in self.allow:
                seq = self.next_seq()
                frame = self.tw.tap(seq, uid, sak, P.FLAG_OFFLINE, cfg.direction, cfg.service, 0,
                                    self.device_time(), secure)
                self._store(seq, frame)
                self.fb.show(_PAT_OFFLINE_GRANT, self.params["relay_ms"], "Welcome (offline)")
                return _PAT_OFFLINE_GRANT
            self.fb.show(_PAT_OFFLINE_DENY, 0, "Offline - not on the list")
            return _PAT_OFFLINE_DENY
        # Wash and kiosk never spend stored value offline; a gate waits offline_after_s first.
        self.fb.show(_PAT_OFFLINE_DENY, 0, "Offline - please try later")
        return _PAT_OFFLINE_DENY

    def _void_packet(self, seq, tap_seq):
        b = self._vbuf
        n = self._vlen
        struct.pack_into(">I", b, 2, seq)
        struct.pack_into(">I", b, n - 4, tap_seq)
        b[n:n + 16] = self.mac.tag(P.UP, self._vmv[:n])
        return self._vmv

    def _give_up(self, tap_seq):
        # Synchronous (no await): a DECISION cannot slip in between the check and the rewrite.
        ob = self.outbox
        i = ob.find_tap(tap_seq)
        if i < 0 or ob.void[i]:
            return -1
        vseq = self.next_seq()
        ob.replace_void(i, vseq, self._void_packet(vseq, tap_seq))
        self.voids += 1
        _log("no answer for tap", tap_seq, "- voided as", vseq)
        self._kick.set()
        return i

    def _store(self, seq, frame):
        lost = self.outbox.add(seq, frame)
        if lost:
            _log("outbox full: dropped tap", lost)
            self.event(_EV_OUTBOX_FULL, self.outbox.dropped, "dropped seq %d" % lost)

    # -- receiving ----------------------------------------------------------------------
    def on_packet(self, raw):
        try:
            p = P.decode(raw, self.mac, P.DOWN)
        except ProtocolError as e:
            self.bad_frames += 1
            _log("dropped frame:", e)
            return
        if p.device_id != self.cfg.device_id:
            self.bad_frames += 1
            return
        self.last_rx = ticks_ms()
        t = p.type
        f = p.fields
        if t == P.DECISION:
            self._on_decision(f)
        elif t == P.WELCOME:
            self._on_welcome(f)
        elif t == P.PONG:
            if self.ping_nonce and f["nonce"] == self.ping_nonce:
                self.ping_nonce = 0
                self.ping_miss = 0
                self._set_time(f["host_time"])
        elif t == P.PING:
            if self.online:
                self._queue(_Q_PONG, f["nonce"], 0, None)
        elif t == P.CONFIG:
            self._on_config(p.seq, f)
        elif t == P.ERROR:
            self._on_error(f)

    def _on_decision(self, f):
        seq = f["tap_seq"]
        ob = self.outbox
        i = ob.find_tap(seq)
        if i < 0:
            return  # not pending: a duplicate or replayed DECISION changes nothing
        if ob.void[i]:
            if f["reason"] != _VOIDED:
                # The original answer, after we gave up: start nothing, keep the VOID going.
                _log("decision for voided tap", seq, "ignored: reason", f["reason"])
                return
            ob.done_slot(i)
            self.voided += 1
            self._kick.set()
            _log("tap", seq, "voided by the host")
            return
        ob.done_slot(i)
        self.decisions += 1
        self._kick.set()
        if seq == self.live_seq:
            self.live = f
            self._live_ev.set()
        else:
            self.late += 1
            _log("late decision for", seq, "reason", f["reason"])

    def _on_welcome(self, f):
        if not self.hello_seq or f["hello_seq"] != self.hello_seq:
            return
        self.hello_seq = 0
        self._set_time(f["host_time"])
        p = self.params
        p["heartbeat_s"] = f["heartbeat_s"]
        p["offline_after_s"] = f["offline_after_s"]
        self.host_cfg_version = f["cfg_version"]
        down_s = ticks_diff(ticks_ms(), self.down_at) // 1000
        was_online = self.online
        self.online = True
        self.hello_miss = 0
        self.welcomed += 1
        self.ping_nonce = 0
        self.outbox.new_session()
        self._resync = False  # this HELLO's resend_floor already covers every pending frame
        if self.welcomed == 1:
            self.event(_EV_BOOT, self.reset_cause, FW_VERSION)
            if self.outbox.dropped:
                self.event(_EV_OUTBOX_FULL, self.outbox.dropped, "")
        elif not was_online:
            self.event(_EV_LINK_DOWN, down_s, "")
        self._kick.set()
        _log("online, boot", self.boot, "outbox", self.outbox.pending())

    def _on_config(self, seq, f):
        if not self._save:
            # This App keeps nothing (selfcheck): it must not acknowledge a CONFIG. An ACK makes
            # the host count the CONFIG applied, and it would never send it to the firmware
            # that boots next (an offline gate would keep its old allow-list).
            return
        p = self.params
        v = f["cfg_version"]
        if v < p["cfg_version"]:
            return
        if v > p["cfg_version"]:
            p["cfg_version"] = v
            p["relay_ms"] = f["relay_ms"]
            p["debounce_ms"] = f["debounce_ms"]
            p["offline_after_s"] = f["offline_after_s"]
            p["heartbeat_s"] = f["heartbeat_s"]
            if self.allow is not None and f["allow_op"]:
                self.allow.apply(f["allow_op"], f["allow"])
            if self._save:
                C.save_params(p)
            if self.on_config is not None:
                self.on_config(p)
            self.event(_EV_CONFIG_APPLIED, v, "")
        # Equal version: our ACK was probably lost; acknowledge again, change nothing.
        self._queue(_Q_ACK, seq, 0, None)

    on_config = None

    def _on_error(self, f):
        # What an ERROR does to the outbox frame it names (a TAP or a VOID):
        # - final (malformed, bad_mac, unknown_device, unsupported): the host will never apply
        #   these bytes, and they are all we have: the slot is cleared (logged);
        # - replay: the frame was overtaken by a newer seq (or came after a HELLO that did not
        #   cover it). It stays: a fresh HELLO (resend_floor = lowest pending seq) goes at once
        #   and the frame is resent, as a late outbox delivery. Refused again _REFUSED_MAX times
        #   (the host holds different bytes under this seq): final;
        # - internal or a code we do not know: it stays and goes again with the next resync.
        self.errors += 1
        ref = f["ref_seq"]
        code = f["code"]
        name = _ERRORS[code] if code < len(_ERRORS) else str(code)
        _log("host error", name, "for seq", ref, f["text"])
        if ref == self.hello_seq:
            # The host refused our HELLO (unknown device, bad key): retry slowly.
            self.hello_wait = _HELLO_MAX_MS
            return
        ob = self.outbox
        i = ob.find(ref)
        if i < 0:
            return
        if code == _ERR_REPLAY:
            ob.refused[i] += 1
            if ob.refused[i] <= _REFUSED_MAX:
                ob.sent[i] = 0
                self._resync = True
                self._kick.set()
                _log("outbox frame", ref, "overtaken; resent after resync")
                return
        elif code not in _FINAL:
            return
        ob.done_slot(i)
        self.given_up += 1
        self._kick.set()
        _log("outbox frame", ref, "given up after host error", name)
