# Runs on the ESP32 (and the unix port in tests): one device's protocol state — seqs, frames in and out — wired to its three parts.
#
# One App per device. The link (serial or MQTT) calls on_packet() with every packet it
# receives and exposes `connected` and `async send(packet)`. The parts, one module each:
#   session.py  HELLO/WELCOME, heartbeat (PING/PONG), control frames (EVENT, ACK, CONFIG), clock;
#               its run() is also the uplink's 50 ms tick
#   uplink.py   the outbox window: TAPs and VOIDs out, oldest first, then control frames;
#               DECISION matching; resync after a refused or unanswered frame
#   host_error.py, config_apply.py, welcome.py  an ERROR, a CONFIG, a WELCOME: imported for one
#               frame, dropped after
#   sale.py     the sale armed on this reader by the host (SALE): display, blink, timeout
#   tappath.py  one card presentation: online (TAP, wait, feedback, or give up with a VOID)
#               or offline (allow-list at a gate, refusal elsewhere)
# Tasks: app.session.run(), app.uplink.run(); whoever reads cards calls `await app.tap_path.tap(...)`.
#
# Sequence numbers (protocol/seq.py, protocol/README.md "Sequence numbers"): boot << 16 |
# counter. After CTR_MAX frames in one boot the next boot number is taken (one flash write).
# The boot counter never wraps: config.next_boot() returns 0 once BOOT_MAX is used up, and
# next_seq() then raises OSError (the task ends, the watchdog resets the board, and the
# next boot parks in a FAULT until the device is re-keyed, which starts a new epoch).
from protocol import packet as P
from protocol.errors import ProtocolError
from protocol.compat import const
from protocol.mac import Mac

import config as C
from session import Session
from tappath import TapPath
from uplink import Uplink


# protocol/seq.py, as consts and arithmetic (that module is not loaded on the board: heap);
# tests/test_firmware_codes.py checks they match.
_CTR_MAX = const(0xFFFF)
_BOOT_MAX = const(0xFFFF)
_UPDATE_BEGIN = const(0x11)  # protocol/ota.py: UPDATE_BEGIN, then UPDATE_CHUNK (the last down type)


class App:
    def __init__(self, cfg, link, feedback, outbox, boot, params=None, allow=None, reset_cause=0,
                 save=True):
        self.cfg = cfg
        self.link = link
        self.outbox = outbox
        self.boot = boot
        self.ctr = 0
        self.params = params if params is not None else dict(C.PARAM_DEFAULTS)
        self.allow = allow
        self.save = save       # False (selfcheck): keeps nothing, acknowledges no CONFIG
        self.mac = Mac(cfg.key)
        self.bad_frames = 0
        self.errors = 0        # ERROR frames from the host
        self.updater = None    # update.Updater, imported when the first UPDATE_BEGIN arrives
        self.session = Session(self, reset_cause)
        self.uplink = Uplink(self)
        self.sale = None       # kiosk and wash readers: the sale armed by the host (sale.py)
        if cfg.kind != "gate":
            from sale import Sale
            self.sale = Sale(feedback)
        self.tap_path = TapPath(self, feedback)
        link.on_packet = self.on_packet
        if outbox.recovered:
            print("tapkiosk:", "outbox holds", outbox.recovered, "taps from before the reboot")

    def next_seq(self):
        if self.ctr >= _CTR_MAX:
            # CTR_MAX frames in one boot: take a new boot number (one more flash write).
            b = C.next_boot(key=self.cfg.key) if self.save else self.boot % _BOOT_MAX + 1
            if not b:
                raise OSError("boot counter used up: re-key the device (device replace) and provision it again")
            self.boot = b
            self.ctr = 0
        self.ctr += 1
        return ((self.boot & 0xFFFF) << 16) | self.ctr  # seq.make(boot, ctr)

    def event(self, code, value=0, text=""):
        self.session.event(code, value, text)

    async def send(self, ptype, fields):
        pkt = P.encode(ptype, self.next_seq(), self.cfg.device_id, fields, self.mac, P.UP)
        return await self.send_raw(pkt)

    async def send_raw(self, pkt):
        try:
            return await self.link.send(pkt)
        except OSError as e:
            print("tapkiosk:", "send failed: OSError", e.args[0])
            return False

    def on_packet(self, raw):
        try:
            p = P.decode(raw, self.mac, P.DOWN)
        except ProtocolError as e:
            self.bad_frames += 1
            print("tapkiosk:", "dropped frame:", e)
            return
        if p.device_id != self.cfg.device_id:
            self.bad_frames += 1
            return
        self.session.received()
        t = p.type
        if t == P.DECISION:
            self.uplink.on_decision(p.fields)
        elif t == P.SALE:
            if self.sale is not None:
                self.sale.on_sale(p.fields)
        elif t == P.ERROR:
            C.once("host_error", "on_error", self, p.fields)
        elif t >= _UPDATE_BEGIN:
            self._update(t, p.fields)
        else:
            self.session.on_frame(t, p.seq, p.fields)

    def _update(self, t, f):
        # The update code costs heap: loaded only once an update starts.
        if self.updater is None and self.save:
            from update import Updater
            self.updater = Updater(self)
        if self.updater:
            self.updater.on_frame(t, f)
