# Runs on the ESP32 (and the unix port in tests): one board's parts wired together (config, hardware, link, App), and its run loop.
#
# main.py (the boot stub, never updated over the air) imports this module from the app
# directory it chose and calls main(). A missing or bad config.json prints one line
# ("tapkiosk: FAULT: ...") and parks the board in a safe state (relay off, amber LED if the
# pins are known, REPL reachable): never a crash loop. The watchdog is fed by the main loop
# only while every task is running and recently alive.
import asyncio
import sys
import time

import machine

import config as C
from protocol.compat import const, ticks_diff, ticks_ms

_WDT_CHECK_MS = const(1000)
_STALL_MS = const(6000)  # a task silent this long counts as hung (the watchdog then resets us)
# protocol/codes.py values (tests/test_firmware_codes.py checks them): importing codes costs heap.
_EV_READER_FAULT = const(2)
_EV_READER_OK = const(3)
_PAT_FAULT = const(5)


def _say(*args):
    print("tapkiosk:", *args)


def fault(message, cfg=None):
    # Safe state: the relay released, the LEDs amber if we know them, nothing else running.
    _say("FAULT:", message)
    try:
        fb = cfg.feedback if cfg is not None else None
        if fb:
            if fb.get("relay") is not None:
                machine.Pin(fb["relay"], machine.Pin.OUT).value(1 - fb.get("relay_active", 1))
            for name in ("led_r", "led_g"):
                if fb.get(name) is not None:
                    machine.Pin(fb[name], machine.Pin.OUT).value(1)
    except (OSError, ValueError, TypeError):
        pass
    while True:
        time.sleep_ms(1000)


def build_chip(cfg):
    from pn532 import PN532, HSUBus, I2CBus, SPIBus
    r = cfg.reader
    Pin = machine.Pin
    bus = r["bus"]
    if bus == "hsu":
        kw = {"baudrate": 115200, "timeout": 0}
        if r.get("tx") is not None:
            kw["tx"] = r["tx"]
        if r.get("rx") is not None:
            kw["rx"] = r["rx"]
        b = HSUBus(machine.UART(r["uart"], **kw))
    elif bus == "i2c":
        kw = {"freq": 400000}
        if r.get("scl") is not None:
            kw["scl"] = Pin(r["scl"])
        if r.get("sda") is not None:
            kw["sda"] = Pin(r["sda"])
        b = I2CBus(machine.I2C(0, **kw))
    else:
        kw = {"baudrate": 1000000, "firstbit": machine.SPI.LSB}
        for name in ("sck", "mosi", "miso"):
            if r.get(name) is not None:
                kw[name] = Pin(r[name])
        b = SPIBus(machine.SPI(1, **kw), Pin(r["cs"], Pin.OUT, value=1), lsb_first=True)
    rst = Pin(r["reset"], Pin.OUT, value=1) if r.get("reset") is not None else None
    irq = Pin(r["irq"], Pin.IN) if r.get("irq") is not None else None
    return PN532(b, reset_pin=rst, irq_pin=irq)


def build_link(cfg):
    if cfg.link == "serial":
        from link_serial import SerialLink
        s = cfg.serial
        return SerialLink(machine, s["uart"], s["baud"], s.get("tx"), s.get("rx"))
    from link_mqtt import MqttLink
    try:
        import network
    except ImportError:
        network = None  # unix port without the stand-in: the host's network is up already
    return MqttLink(cfg.device_id, cfg.mqtt, cfg.wifi, network)


class Device:
    # Everything one board runs, wired together; main() and selfcheck use it.
    # ota: the boot stub's state (app version, trial flag, rollback report), or None.
    def __init__(self, cfg, ota=None):
        from app import App
        from feedback import Feedback
        from outbox import Outbox
        from reader import Reader

        self.cfg = cfg
        self.started = ticks_ms()
        cause = 0
        try:
            cause = machine.reset_cause()
        except (AttributeError, OSError):
            pass
        self.boot = C.next_boot(key=cfg.key)
        if not self.boot:
            raise C.ConfigError("boot counter used up: re-key the device (device replace) and provision it again")
        self.params = C.load_params()
        self.fb = Feedback(machine, cfg.feedback)
        self.outbox = Outbox("outbox.bin", cfg.outbox_slots)
        self.allow = None
        if cfg.kind == "gate":
            from allowlist import AllowList
            self.allow = AllowList()
        self.link = build_link(cfg)
        self.app = App(cfg, self.link, self.fb, self.outbox, self.boot, self.params, self.allow,
                       cause)
        self.app.session.on_config = self._on_config
        self.ota = ota
        self.app.session.on_welcome = self._on_welcome
        if ota is not None and ota.version:
            import session
            session.FW_VERSION = ota.version[:32]  # what HELLO and the boot EVENT name
        self.chip = build_chip(cfg)
        debounce = self.params.get("debounce_ms") if self.params.get("cfg_version") else cfg.debounce_ms
        hook = None
        if cfg.secure:
            from sun import read_sun
            hook = read_sun
        self.reader = Reader(self.chip, poll_ms=100, debounce_ms=debounce, secure_hook=hook,
                             on_fault=self._reader_fault, on_recovered=self._reader_ok)
        self.buttons = None
        if cfg.buttons:
            from buttons import Buttons, program_pressed
            app = self.app
            self.buttons = Buttons(machine, cfg.buttons, cfg.buttons_active,
                                   lambda code: program_pressed(app, code))
        self.tasks = []

    def _on_welcome(self, first):
        # After every WELCOME: the status row; after the first, the update's outcome.
        import status
        status.welcomed(self, first)
        del sys.modules["status"]

    def _on_config(self, p):
        self.reader.debounce_ms = p["debounce_ms"]

    def _reader_fault(self, kind, count, text):
        _say("reader fault:", kind, count, text)
        self.app.event(_EV_READER_FAULT, count, (kind + ": " + text)[:64])
        self.fb.show(_PAT_FAULT)

    def _reader_ok(self, resets):
        _say("reader ok after", resets, "resets")
        self.app.event(_EV_READER_OK, resets, "")

    async def _on_tap(self, uid, sak, atqa, secure):
        await self.app.tap_path.tap(uid, sak, secure or b"")

    def start(self):
        ct = asyncio.create_task
        self.tasks = [ct(self.link.run()), ct(self.app.session.run()), ct(self.app.uplink.run()),
                      ct(self.reader.run(self._on_tap))] + self.fb.tasks()
        if self.app.sale is not None:
            self.tasks.append(ct(self.app.sale.run()))
        if self.buttons is not None:
            self.tasks.append(ct(self.buttons.run()))

    def healthy(self):
        now = ticks_ms()
        for t in self.tasks:
            if t.done():
                return False
        for at in (self.app.session.alive, self.app.uplink.alive):
            if ticks_diff(now, at) > _STALL_MS:
                return False
        return True

    async def run(self):
        self.start()
        wdt = machine.WDT(timeout=self.cfg.wdt_ms) if self.cfg.wdt_ms else None
        _say(self.cfg.device_id, self.cfg.kind, "boot", self.boot, "link", self.cfg.link,
             "outbox", self.outbox.pending())
        while True:
            await asyncio.sleep_ms(_WDT_CHECK_MS)
            if self.healthy():
                if wdt is not None:
                    wdt.feed()
            else:
                _say("a task stopped or hung: the watchdog will reset the board")


def build(ota=None):
    # The boot stub's entry point: the Device for config.json (or a FAULT park).
    cfg = None
    try:
        cfg = C.load()
    except C.ConfigError as e:
        fault(str(e))
    try:
        return Device(cfg, ota)
    except C.ConfigError as e:
        fault(str(e), cfg)
    except (OSError, ValueError, ImportError) as e:
        fault("hardware setup failed: %r" % (e,), cfg)
